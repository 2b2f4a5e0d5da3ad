"""Refactoring leaves results alone: a tiny run trained, pruned (magnitude, DepGraph, sparse engine) and forecast
gives the numbers recorded in ``golden/outputs.json`` before the restructuring of issue 17.

Regenerate only for an intended change of results: ``python tests/test_outputs_unchanged.py`` (then say why in
the commit).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

GOLDEN = Path(__file__).parent / "golden" / "outputs.json"
TINY = {"d_model": 16, "d_ff": 32, "n_heads": 2, "e_layers": 1, "d_layers": 1, "modes": 8, "n_routers": 2}


def write_csv(path: Path) -> str:
    t = np.arange(300)
    frame = pd.DataFrame({"date": pd.date_range("2021-01-01", periods=300, freq="h").astype(str),
                          "a": np.sin(t / 7.0), "b": np.cos(t / 11.0), "OT": np.sin(t / 5.0) + 0.1 * np.cos(t / 3)})
    frame.to_csv(path, index=False)
    return str(path)


def outputs(folder: Path) -> dict[str, float]:
    from tsprune import api
    from tsprune.forecast import predict, read_history

    torch.set_num_threads(1)
    csv = write_csv(folder / "data.csv")
    found: dict[str, float] = {}
    for name in ("Transformer", "Informer", "Autoformer", "FEDformer", "Crossformer"):
        config = api.make_config(name, data={"data_path": csv, "seq_len": 24, "label_len": 12, "pred_len": 12},
                                 train={"epochs": 1, "max_steps": 3, "seed": 7, "device": "cpu"},
                                 **({**TINY, "seg_len": 6} if name == "Crossformer" else TINY))
        run = api.train(config, out=folder / name, progress=False)
        found[f"{name}/dense/mse"] = run.metrics["mse"]
        for method, density, engine in (("magnitude", 0.3, "dense"), ("depgraph", 0.5, "dense"),
                                        ("magnitude", 0.3, "sparse")):
            pruned = api.prune(folder / name, method, density, out=folder / f"{name}-{method}-{engine}",
                               engine=engine, finetune_epochs=1, finetune_max_steps=2, batch_sizes=(2,),
                               latency_repeats=1, threads=1, device="cpu")
            found[f"{name}/{method}-{engine}/mse"] = pruned.metrics["mse"]
            found[f"{name}/{method}-{engine}/flops"] = float(pruned.metrics["flops"])
            reloaded = api.load(folder / f"{name}-{method}-{engine}")
            forecast = predict(reloaded, read_history(reloaded), device="cpu")
            found[f"{name}/{method}-{engine}/forecast"] = float(forecast.iloc[:, 1:].to_numpy().sum())
    return found


@pytest.mark.usefixtures("one_thread")
def test_trained_pruned_and_forecast_numbers_are_unchanged(tmp_path):
    expected = json.loads(GOLDEN.read_text())
    got = outputs(tmp_path)
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-3, abs=1e-4), key  # other CPUs round differently


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        GOLDEN.write_text(json.dumps(outputs(Path(folder)), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}", file=sys.stderr)
