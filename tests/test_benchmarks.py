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


def test_reproduce_compares_finished_runs_with_the_published_values(tmp_path):
    from conftest import TINY
    from tsprune import api

    reproduce = load("reproduce")
    assert reproduce.published("ETTh1", 96)["Autoformer"] == {"mse": 0.449, "mae": 0.459}
    assert set(reproduce.published("weather", 720)) == {"Autoformer", "Informer", "FEDformer", "Crossformer"}

    config = api.make_config("Autoformer", data={"dataset": "ETTh1", "pred_len": 96},
                             train={"epochs": 1, "max_steps": 2, "device": "cpu"}, **TINY)
    metrics = api.train(config, out=tmp_path / "Autoformer", progress=False).metrics

    # checked against its own settings (threads and device aside), the run is compared with the published value
    expected = api.make_config("Autoformer", data={"dataset": "ETTh1", "pred_len": 96},
                               train={"epochs": 1, "max_steps": 2, "threads": 2}, **TINY).to_dict()
    compared = reproduce.row("Autoformer", tmp_path / "Autoformer", {"mse": 0.449, "mae": 0.459}, expected)
    assert compared["mse"] == metrics["mse"] and compared["epochs_run"] == 1
    assert compared["status"] == "all epochs" and compared["mse_ratio"] == metrics["mse"] / 0.449
    assert compared["within"] == ("yes" if abs(metrics["mse"] / 0.449 - 1) <= 0.15 else "no")

    # against the full protocol, this quick tiny run is flagged, never compared; a missing run says so
    out = tmp_path / "table.json"
    result = CliRunner().invoke(reproduce.cli, ["--models", "Autoformer,Informer", "--runs", str(tmp_path),
                                                "--no-train", "--json", str(out)])
    assert result.exit_code == 0, result.output
    flagged, missing = json.loads(out.read_text())
    assert flagged["status"].startswith("not the protocol: model.d_model, model.n_heads")
    assert "train.epochs" in flagged["status"] and "train.device" not in flagged["status"]
    assert flagged["mse"] == metrics["mse"] and "mse_ratio" not in flagged
    assert missing == {"model": "Informer", "status": "not run", "published_mse": 0.865, "published_mae": 0.713}
    assert "| Autoformer | not the protocol:" in result.output
