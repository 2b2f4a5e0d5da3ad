"""`tsprune prune` / `tsprune measure` and the API behind them: every method writes a complete run directory with
the promised metrics, reloads exactly, and bad input fails cleanly without leaving half a run."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from conftest import DEVICE
from tsprune import api
from tsprune.cli import app
from tsprune.errors import TsPruneError
from tsprune.prune.unstructured import masks_from_zeros, prunable_parameters

runner = CliRunner()
SMALL = {"d_model": 16, "d_ff": 32, "n_heads": 2, "e_layers": 1, "d_layers": 1, "modes": 8, "n_routers": 2}
FAST = ["--batch-sizes", "1,4", "--repeats", "2", "--threads", "1", "--device", DEVICE]
PRUNE_KEYS = {"method", "target_density", "density_prunable", "density_total", "flops", "flops_ratio", "latency_ms",
              "speedup", "finetuned", "mse", "mae", "flops_effective", "environment"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, str]:
    """One briefly trained tiny run per model family used below."""
    root = tmp_path_factory.mktemp("dense")
    runs = {}
    for name in ("Transformer", "FEDformer", "Crossformer"):
        config = api.make_config(name, data={"dataset": "ETTh1"}, train={"epochs": 1, "max_steps": 2, "threads": 1,
                                                                          "device": DEVICE}, **SMALL)
        api.train(config, out=root / name, progress=False)
        runs[name] = str(root / name)
    return runs


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_magnitude_prune_with_finetuning_writes_a_run_that_reloads(trained, tmp_path):
    out = tmp_path / "t-0.262"
    result = invoke("prune", trained["Transformer"], "--method", "magnitude", "--density", "0.262",
                    "--finetune-epochs", "1", "--finetune-max-steps", "2", "--out", str(out), "--json", *FAST)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert PRUNE_KEYS <= set(metrics)
    assert metrics["density_prunable"] == pytest.approx(0.262, abs=0.005)
    assert metrics["density_total"] > metrics["density_prunable"]  # biases, norms and output layers stay
    assert metrics["flops_ratio"] == 1.0 and metrics["flops_effective"] < metrics["flops"]
    assert metrics["finetuned"] and len(metrics["finetune_history"]) == 1
    run = api.load(out)
    weights = prunable_parameters(run.model)
    mask = masks_from_zeros(weights)
    kept = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
    assert kept == pytest.approx(metrics["density_prunable"])  # fine-tuning kept the pruned weights at zero
    assert api.evaluate(out, device=DEVICE)["mse"] == pytest.approx(metrics["mse"], rel=1e-6)
    assert json.loads((out / "config.json").read_text())["prune"]["method"] == "magnitude"


@pytest.mark.parametrize("name", ["FEDformer", "Crossformer"])
def test_depgraph_prune_saves_the_reduced_architecture(name, trained, tmp_path):
    out = tmp_path / "dg"
    result = invoke("prune", trained[name], "--method", "depgraph", "--density", "0.5", "--out", str(out),
                    "--json", *FAST)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["params"] < metrics["params_dense"] and metrics["flops_ratio"] < 1.0
    assert metrics["density_total"] == pytest.approx(metrics["params"] / metrics["params_dense"])
    assert "architecture" in json.loads((out / "config.json").read_text())
    evaluated = invoke("evaluate", str(out), "--json", "--device", DEVICE)
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["mse"] == pytest.approx(metrics["mse"], rel=1e-6)


def test_layerwise_and_iterative_magnitude(trained):
    layerwise = api.prune(trained["Transformer"], "magnitude-layerwise", 0.5, batch_sizes=(2,), latency_repeats=1,
                          threads=1, device=DEVICE)
    for weight in prunable_parameters(layerwise.model).values():
        assert int(torch.count_nonzero(weight)) == round(0.5 * weight.numel())
    iterative = api.prune(trained["Transformer"], "magnitude", 0.512, iterative=True, finetune_epochs=1,
                          finetune_max_steps=1, batch_sizes=(2,), latency_repeats=1, threads=1, device=DEVICE)
    assert iterative.metrics["iterative_steps"] == 3  # 0.8, 0.64, 0.512
    assert iterative.metrics["density_prunable"] == pytest.approx(0.512, abs=0.005)


def test_measure_command(trained):
    result = invoke("measure", trained["FEDformer"], "--json", *FAST)
    assert result.exit_code == 0, result.output
    measured = json.loads(result.output)
    assert measured["flops"] > 0 and measured["flops_by_operator"].get("aten._fft_r2c", 0) > 0
    assert set(measured["latency"]) == {"1", "4"} and measured["environment"]["threads"] == 1


@pytest.mark.parametrize("args, message", [
    (["--density", "0"], "density must be in (0, 1]"),
    (["--density", "1.5"], "density must be in (0, 1]"),
    (["--method", "random"], "unknown pruning method"),
    (["--method", "depgraph", "--density", "0.001"], "out of reach"),
    (["--batch-sizes", "1,x"], "--batch-sizes"),
    (["--method", "depgraph", "--engine", "sparse"], "removes channels and leaves none"),
    (["--engine", "fast"], "unknown engine 'fast'"),
])
def test_bad_prune_input_fails_cleanly(args, message, trained, tmp_path):
    out = tmp_path / "pruned"
    result = invoke("prune", trained["Transformer"], "--out", str(out), *FAST, *args)  # later options win
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing half-written


def test_not_a_run_and_existing_output(trained, tmp_path):
    result = invoke("prune", str(tmp_path), "--out", str(tmp_path / "x"), *FAST)
    assert result.exit_code == 2 and "not found" in result.output
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "keep.txt").write_text("results")
    result = invoke("prune", trained["Transformer"], "--out", str(existing), *FAST)
    assert result.exit_code == 2 and "already exists" in result.output
    assert (existing / "keep.txt").read_text() == "results"


def test_prune_with_the_sparse_engine(trained, tmp_path):
    """Prune and compile in one step: same accuracy as the masked model, three latencies from one paired timing."""
    out = tmp_path / "sparse"
    result = invoke("prune", trained["Transformer"], "--method", "magnitude", "--density", "0.107", "--engine",
                    "sparse", "--out", str(out), *FAST)
    assert result.exit_code == 0 and "layers on sparse kernels" in result.output, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["engine"] == "sparse" and metrics["compiled_batch_size"] == 4 and metrics["candidate_layers"] > 0
    assert metrics["speedup"] == pytest.approx(metrics["latency_dense_ms"] / metrics["latency_ms"])
    assert metrics["speedup_masked"] == pytest.approx(metrics["latency_dense_ms"] / metrics["latency_masked_ms"])
    masked = api.prune(trained["Transformer"], "magnitude", 0.107, batch_sizes=(1,), latency_repeats=1, threads=1,
                       device=DEVICE)
    assert metrics["mse"] == pytest.approx(masked.metrics["mse"], rel=1e-6)
    reloaded = api.load(out)
    assert reloaded.sparse_plan is not None and reloaded.metrics["engine"] == "sparse"
    assert api.evaluate(out, device=DEVICE)["mse"] == pytest.approx(metrics["mse"], rel=1e-5)


def test_engine_twins_share_one_pruning_and_finetuning(trained):
    """prune_model once, prune_run per engine: the twins' accuracy is what a fresh prune gives (fine-tuned), only
    the timing differs; a pruned model from other settings is refused."""
    from tsprune.config import PruneConfig
    from tsprune.prune.pipeline import prune_model, prune_run

    source = api.load(trained["Transformer"])
    config = PruneConfig(density=0.3, finetune_epochs=1, finetune_max_steps=2, batch_sizes=(2,), latency_repeats=1,
                         threads=1, device=DEVICE)
    shared = prune_model(source, config)
    before = {name: value.clone() for name, value in shared.model.state_dict().items()}
    masked = prune_run(source, config, pruned=shared)
    sparse = prune_run(source, dataclasses.replace(config, engine="sparse"), pruned=shared)  # same pruning key
    fresh = prune_run(source, config)
    for twin in (masked, sparse):
        assert twin.metrics["mse"] == fresh.metrics["mse"] and twin.metrics["flops_effective"] == fresh.metrics[
            "flops_effective"]
        assert len(twin.metrics["finetune_history"]) == 1
    assert sparse.sparse_plan is not None and masked.sparse_plan is None
    assert all(torch.equal(value, before[name]) for name, value in shared.model.state_dict().items())  # untouched
    with pytest.raises(TsPruneError, match="other settings"):
        prune_run(source, dataclasses.replace(config, density=0.5), pruned=shared)


@pytest.mark.parametrize("finetune_epochs", [0, 1])
def test_density_one_is_the_dense_model_measured_once(trained, finetune_epochs):
    """Magnitude at density 1 removes nothing: without fine-tuning the run reuses the dense baseline's metrics and
    FLOPs (and says so), and they equal what evaluating it again gives; fine-tuning changes weights, so it
    evaluates."""
    from tsprune.config import PruneConfig
    from tsprune.prune.pipeline import dense_baseline, prune_model

    source = api.load(trained["FEDformer"])
    config = PruneConfig(density=1.0, finetune_epochs=finetune_epochs, finetune_max_steps=2, batch_sizes=(2,),
                         latency_repeats=1, threads=1, device=DEVICE)
    baseline = dense_baseline(source, config)
    reused, measured = prune_model(source, config, baseline=baseline), prune_model(source, config)
    assert reused.facts.get("measured_as_dense", False) is (finetune_epochs == 0)
    assert "measured_as_dense" not in measured.facts
    if finetune_epochs == 0:
        assert reused.metrics == measured.metrics == baseline["metrics"]
        assert {k: reused.cost[k] for k in ("params", "nonzero_params", "flops", "flops_effective")} == {
            k: measured.cost[k] for k in ("params", "nonzero_params", "flops", "flops_effective")}
    else:
        assert reused.metrics == measured.metrics != baseline["metrics"]


def test_in_memory_runs_are_told_apart_by_their_weights(trained):
    from tsprune.config import PruneConfig
    from tsprune.prune.pipeline import pruning_key

    loaded = api.load(trained["Transformer"])
    config = PruneConfig(density=0.3)
    in_memory = dataclasses.replace(loaded, path=None)
    twin = dataclasses.replace(loaded, path=None, model=copy.deepcopy(loaded.model))
    assert pruning_key(in_memory, config) == pruning_key(twin, config)
    with torch.no_grad():
        next(twin.model.parameters()).view(-1)[0] += 1e-3
    assert pruning_key(in_memory, config) != pruning_key(twin, config)
    assert pruning_key(loaded, config) != pruning_key(in_memory, config)  # a saved run is known by its directory


def test_compiled_sparse_run_saves_reloads_and_matches_masked(trained, tmp_path):
    masked = tmp_path / "masked"
    api.prune(trained["Transformer"], "magnitude", 0.107, out=masked, batch_sizes=(2,), latency_repeats=1, threads=1,
              device=DEVICE)
    compiled = api.compile_run(masked, batch_size=4, out=tmp_path / "sparse", threads=1, repeats=1, force="csr",
                               device=DEVICE)
    assert compiled.metrics["sparse_layers"] == compiled.metrics["candidate_layers"] > 0
    reloaded = api.load(tmp_path / "sparse")
    assert reloaded.sparse_plan["layers"] == compiled.sparse_plan["layers"]
    assert api.evaluate(tmp_path / "sparse", device=DEVICE)["mse"] == pytest.approx(
        api.evaluate(masked, device=DEVICE)["mse"], abs=1e-6)
    measured = api.measure(tmp_path / "sparse", batch_sizes=(2,), repeats=1, threads=1, device=DEVICE)
    assert measured["params"] == api.measure(masked, batch_sizes=(2,), repeats=1, latency=False)["params"]
    assert measured["engine"] == "sparse" and measured["flops_effective"] < measured["flops"]
    assert measured["speedup_over_masked"]["2"] == pytest.approx(
        measured["latency_masked"]["2"]["median_ms"] / measured["latency"]["2"]["median_ms"])
    result = invoke("measure", str(tmp_path / "sparse"), "--batch-sizes", "2", "--repeats", "1", "--threads", "1",
                    "--device", DEVICE)
    assert result.exit_code == 0 and "sparse engine speedup, batch 2" in result.output, result.output
    assert len(api.predict(reloaded, device=DEVICE)) == reloaded.config.model.pred_len
    for engine in ("dense", "sparse"):  # a compiled run forecasts on either engine with the same numbers
        result = invoke("predict", str(tmp_path / "sparse"), "--engine", engine,
                        "--out", str(tmp_path / f"{engine}.csv"), "--device", DEVICE)
        assert result.exit_code == 0, result.output
    dense_csv, sparse_csv = (pd.read_csv(tmp_path / f"{engine}.csv") for engine in ("dense", "sparse"))
    np.testing.assert_allclose(dense_csv.iloc[:, 1:].to_numpy(), sparse_csv.iloc[:, 1:].to_numpy(),
                               rtol=1e-4, atol=1e-4)
    result = invoke("compile", str(tmp_path / "sparse"), "--out", str(tmp_path / "again"))
    assert result.exit_code == 2 and "already compiled" in result.output
