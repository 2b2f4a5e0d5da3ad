"""The benchmark scripts run end to end (they measure only; these check they work and report what they say)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from typer.testing import CliRunner

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_speed_reports_both_layouts_and_the_gemm_floor(tmp_path):
    out = tmp_path / "speed.json"
    result = CliRunner().invoke(load("train_speed").cli, [
        "--models", "Crossformer", "--steps", "1", "--warmup", "0", "--batch-size", "2", "--threads", "1",
        "--device", "cpu", "--layouts", "ours,reference", "--gemm", "--json", str(out)])
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    assert [r["layout"] for r in records] == ["ours", "reference"]
    for record in records:
        assert 0 < record["gemm_s_per_step"] < record["train_step_s"] * 5  # profiled: overhead, but same order
        assert record["reference_over_gemm"] > 0 and record["inference_ms"] > 0
    assert records[1]["train_speedup_vs_reference"] == 1.0
