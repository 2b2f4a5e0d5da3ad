"""The command line: train -> evaluate round trip, listings, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import DEVICE
from tsprune.cli import app
from tsprune.runtime import device_name
from tsprune.models.registry import model_names

runner = CliRunner()
TINY_ARGS = ["--d-model", "16", "--d-ff", "32", "--n-heads", "2", "--epochs", "1", "--max-steps", "3",
             "--no-progress", "--device", DEVICE]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_listings():
    result = invoke("datasets")
    assert result.exit_code == 0 and "ETTh1" in result.output and "electricity" in result.output
    result = invoke("models")
    assert result.exit_code == 0
    for name in model_names():
        assert name in result.output


# The CLI path is the same for every model; two models (Informer: seeded ProbSparse sampling) on the full ETTh1 test
# split. Every model's saved run re-evaluates to its recorded metrics in tests/test_methods.py.
@pytest.mark.parametrize("name", ["Transformer", "Informer"])
def test_train_then_evaluate_reproduces_metrics(name, tmp_path):
    out = tmp_path / name
    result = invoke("train", "--model", name, "--dataset", "ETTh1", "--pred-len", "96", "--out", str(out), *TINY_ARGS)
    assert result.exit_code == 0, result.output
    assert "epoch 1: train loss" in result.output  # --no-progress still logs each epoch, in one line
    for file in ("model.safetensors", "config.json", "metrics.json"):
        assert (out / file).is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("mse", "mae", "mse_raw", "mae_raw", "train_seconds"):
        assert math.isfinite(metrics[key]), key
    assert metrics["params"] > 0 and metrics["epochs_run"] == 1
    # the hardware its train_seconds were measured on
    assert (metrics["environment"]["device_name"], metrics["environment"]["cpu_count"]) == (
        device_name(DEVICE), os.cpu_count())
    result = invoke("evaluate", str(out), "--json", "--device", DEVICE)
    assert result.exit_code == 0, result.output
    again = json.loads(result.output)
    for key in ("mse", "mae", "mse_raw", "mae_raw"):
        assert again[key] == pytest.approx(metrics[key], rel=1e-6), key


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """A real process, to see the real exit code and everything printed."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    return subprocess.run([sys.executable, "-m", "tsprune.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


def bad_csvs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    rng = np.random.default_rng(0)
    good = pd.DataFrame({"date": pd.date_range("2021-01-01", periods=400, freq="h"), "a": rng.normal(size=400),
                         "OT": rng.normal(size=400)})
    cases = {
        "no_date": (good.drop(columns=["date"]), "no date column"),
        "text": (good.assign(a=["oops"] * 400), "not numeric"),
        "nan": (good.assign(a=good["a"].where(good.index != 9)), "NaN at row 9"),
        "short": (good.head(50), "too few rows"),
    }
    paths = {}
    for key, (frame, message) in cases.items():
        path = tmp_path / f"{key}.csv"
        frame.to_csv(path, index=False)
        paths[key] = (path, message)
    return paths


def test_bad_inputs_exit_2_with_one_line_and_no_traceback(tmp_path):
    calls = [(["--data-path", str(path)], message) for path, message in bad_csvs(tmp_path).values()]
    calls += [
        (["--data-path", str(tmp_path / "missing.csv")], "not found"),
        (["--dataset", "ETTh7"], "unknown dataset"),
        (["--dataset", "electricity"], "--data-path"),
        (["--dataset", "ETTh1", "--model", "Nopeformer"], "unknown model"),
    ]
    real = {0, len(calls) - 2}  # a bad CSV and the unshipped dataset as a shell sees them; the rest in-process
    for index, (extra, message) in enumerate(calls):
        args = ("train", "--seq-len", "24", "--label-len", "12", "--pred-len", "24", "--out", str(tmp_path / "never"),
                "--no-progress", *extra)
        if index in real:
            proc = run_cli(*args)
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        else:
            result = runner.invoke(app, list(args))
            assert result.exception is None or isinstance(result.exception, SystemExit), (extra, result.exception)
            code, out, err = result.exit_code, result.stdout, result.stderr
        assert code == 2, (extra, out, err)
        assert "Traceback" not in err + out
        assert message in err, (extra, err)
        assert len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "never").exists()


def test_corrupt_and_foreign_checkpoints(tmp_path):
    out = tmp_path / "run"
    assert invoke("train", "--model", "Transformer", "--out", str(out), *TINY_ARGS).exit_code == 0
    config = json.loads((out / "config.json").read_text())

    (out / "model.safetensors").write_bytes(b"\x80\x04definitely not safetensors")
    proc = run_cli("evaluate", str(out))
    assert proc.returncode == 2 and "corrupt" in proc.stderr and "Traceback" not in proc.stderr

    # the other cases in process (the subprocess above shows the real exit code and stderr)
    foreign = tmp_path / "foreign"
    assert invoke("train", "--model", "Informer", "--out", str(foreign), *TINY_ARGS).exit_code == 0
    (foreign / "config.json").write_text(json.dumps(config))  # a Transformer config over Informer weights
    result = invoke("evaluate", str(foreign))
    assert result.exit_code == 2 and "does not match" in result.output and "Traceback" not in result.output

    result = invoke("evaluate", str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and "not found" in result.output


def test_train_sets_every_model_hyper_parameter(monkeypatch):
    """Each ModelConfig field the data does not fix is a `tsprune train` option that reaches the model config."""
    import dataclasses

    from tsprune import api
    from tsprune.config import DATA_BOUND_FIELDS, ModelConfig

    captured = []

    def capture(config, **_):
        captured.append(config)
        raise KeyboardInterrupt  # stop before any data is read (the CLI turns it into exit code 130)

    monkeypatch.setattr(api, "train", capture)
    other = {"activation": "relu", "mode_select": "low", "prob_layout": "paper"}
    args, expected = [], {}
    for field in dataclasses.fields(ModelConfig):
        if field.name == "name" or field.name in DATA_BOUND_FIELDS:
            continue
        option = "--" + field.name.replace("_", "-")
        if isinstance(field.default, bool):
            value = not field.default
            args.append(option if value else "--no-" + field.name.replace("_", "-"))
        else:
            if field.name in other:
                value = other[field.name]
            else:
                value = field.default / 2 if isinstance(field.default, float) else field.default + 1
            args += [option, str(value)]
        expected[field.name] = value
    result = CliRunner().invoke(app, ["train", "--model", "Informer", *args])
    assert result.exit_code == 130, result.output
    (config,) = captured
    assert {name: getattr(config.model, name) for name in expected} == expected
