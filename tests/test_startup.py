"""Commands that read no model start without importing torch (it is 2.7 s of every start)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tsprune.sweep.store import RECORD_FORMAT

PROBE = """
import json, sys
from typer.testing import CliRunner
from tsprune.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
print(json.dumps({"exit": result.exit_code, "torch": "torch" in sys.modules, "output": result.output[-400:]}))
"""


def run_command(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    (root / "records").mkdir()
    record = {"format": RECORD_FORMAT, "run_id": "0123456789ab", "parent_id": None, "kind": "dense",
              "status": "done", "labels": {"model": "Autoformer", "dataset": "ETTh1", "pred_len": 96, "seed": 0,
                                           "size": "default", "train_fraction": 1.0, "method": "dense"},
              "metrics": {"mse": 0.45, "mae": 0.46, "params": 10}, "config": {}}
    (root / "records" / "0123456789ab.json").write_text(json.dumps(record))
    return root


@pytest.mark.parametrize("args", [["--help"], ["datasets"], ["models"], ["sweep", "plan", "study-etth1"],
                                  ["sweep", "--help"], ["train", "--help"]])
def test_commands_that_need_no_model_do_not_import_torch(args):
    outcome = run_command(*args)
    assert outcome["exit"] == 0, outcome["output"]
    assert not outcome["torch"], f"`tsprune {' '.join(args)}` imported torch"


def test_results_do_not_import_torch(sweep_dir):
    outcome = run_command("results", str(sweep_dir))
    assert outcome["exit"] == 0 and "Autoformer" in outcome["output"], outcome["output"]
    assert not outcome["torch"]


def test_the_guard_has_teeth():
    outcome = run_command("evaluate", "/nonexistent/run")  # loading a run needs the model code
    assert outcome["exit"] == 2 and outcome["torch"]
