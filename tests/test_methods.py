"""One contract over every pruning method x every model (tiny sizes): it prunes and reaches its target (or says
why not), the run saves and reloads to the same outputs and metrics, and the density it reports is the one
measured on the saved weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tsprune import api
from tsprune.errors import TsPruneError
from tsprune.measure import count_params
from tsprune.models.registry import get_spec, model_names
from tsprune.prune import methods, unstructured

TINY = {"d_model": 16, "d_ff": 32, "n_heads": 2, "e_layers": 1, "d_layers": 1, "modes": 8, "n_routers": 2}
DENSITY = 0.5

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dense_runs(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("dense")
    t = np.arange(240)
    frame = pd.DataFrame({"date": pd.date_range("2022-01-01", periods=240, freq="h").astype(str),
                          "a": np.sin(t / 6.0), "b": np.cos(t / 9.0), "OT": np.sin(t / 4.0)})
    csv = folder / "data.csv"
    frame.to_csv(csv, index=False)
    runs = {}
    for name in model_names():
        config = api.make_config(name, data={"data_path": str(csv), "seq_len": 24, "label_len": 12, "pred_len": 12},
                                 train={"epochs": 1, "max_steps": 2, "device": "cpu"},
                                 **({**TINY, "seg_len": 6} if name == "Crossformer" else TINY))
        api.train(config, out=folder / name, progress=False)
        runs[name] = folder / name
    return runs


def outputs(run) -> torch.Tensor:
    from tsprune.measure import example_inputs

    torch.manual_seed(0)
    with torch.no_grad():
        return run.model.eval()(*example_inputs(run.data(), 3))


@pytest.mark.parametrize("method", methods.method_names())
@pytest.mark.parametrize("model", model_names())
def test_every_method_prunes_every_model_saves_and_reloads(dense_runs, tmp_path, model, method):
    record = methods.get_method(method)
    if record.structured and not get_spec(model).channels:  # DLinear: nothing to remove, said in one line
        with pytest.raises(TsPruneError, match=f"{model} has no channels for {method} to remove"):
            api.prune(dense_runs[model], method, DENSITY, out=tmp_path / "pruned", threads=1, device="cpu")
        assert not (tmp_path / "pruned").exists()
        return
    try:
        pruned = api.prune(dense_runs[model], method, DENSITY, out=tmp_path / "pruned", batch_sizes=(2,),
                           latency_repeats=1, threads=1, device="cpu")
    except methods.TargetUnreachable as exc:  # allowed, with a reason
        assert str(exc).strip()
        pytest.skip(f"{method} cannot reach {DENSITY} on {model}: {exc}")
    metrics = pruned.metrics
    assert metrics["method"] == method and metrics["target_density"] == DENSITY
    reloaded = api.load(tmp_path / "pruned")
    torch.testing.assert_close(outputs(reloaded), outputs(pruned), rtol=0, atol=0)
    assert api.evaluate(reloaded, device="cpu")["mse"] == pytest.approx(metrics["mse"], rel=1e-6)
    dense = api.load(dense_runs[model])
    if record.structured:  # the density counts parameters: what the reloaded model has
        measured = count_params(reloaded.model)["params"] / count_params(dense.model)["params"]
        assert metrics["density_total"] == pytest.approx(measured)
        assert measured <= DENSITY and measured == pytest.approx(DENSITY, abs=0.06)
    else:  # the density counts prunable weights: the nonzeros left in them
        params = unstructured.prunable_parameters(reloaded.model)
        kept = sum(int(p.count_nonzero()) for p in params.values()) / sum(p.numel() for p in params.values())
        assert metrics["density_prunable"] == pytest.approx(kept)
        assert kept == pytest.approx(DENSITY, abs=0.01)
        assert metrics["emptied_layers"] == sum(1 for p in params.values() if not p.any())
        if "comparison" in record.options:  # compared per output row by default: each row keeps its share
            for name, weight in params.items():
                rows = weight.detach().reshape(weight.shape[0], -1)
                assert set(rows.count_nonzero(dim=1).tolist()) == {round(DENSITY * rows.shape[1])}, name


def test_every_method_record_is_complete():
    for record in methods.METHODS:
        assert record.summary and record.density_of in ("prunable weights", "parameters")
        assert callable(record.run())
        assert record.sparse_engine is (not record.structured)
    # The CLI's prune help is derived from the records: every method's name and summary reach it.
    from typer.testing import CliRunner

    from tsprune.cli import app

    shown = CliRunner().invoke(app, ["prune", "--help"], env={"COLUMNS": "2000", "TERM": "dumb"}).output
    shown = " ".join(shown.replace("│", " ").split())  # undo rich's panel borders and wrapping
    for record in methods.METHODS:
        assert f"{record.name}: {record.summary}" in shown, record.name
    with pytest.raises(TsPruneError, match="unknown pruning method 'wand'"):
        methods.get_method("wand")
