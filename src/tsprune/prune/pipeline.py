"""Prune a trained run end to end: apply a named method, optionally fine-tune, evaluate, measure against the dense
model in the same process, and write a new run directory atomically.

Methods are records in ``prune.methods``: each names an implementation that takes the model, the run's data and
the config and returns the pruned model plus what it achieved; everything around it (fine-tuning, evaluation,
measurement, saving) is shared and lives here.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from tsprune.config import PruneConfig, TrainConfig
from tsprune.data.dataset import ForecastData
from tsprune.errors import TsPruneError
from tsprune.measure import compare_latency, example_inputs, measure
from tsprune.models.registry import get_spec
from tsprune.models.base import Forecaster
from tsprune.prune import methods, recipes, unstructured
from tsprune.prune.finetune import finetune_pruned
from tsprune.prune.methods import TargetUnreachable  # noqa: F401 - raised through here
from tsprune.sparse.engine import compile_sparse, plan_summary
from tsprune.run import Run, environment, load_run, save_run
from tsprune.train import evaluate
from tsprune.runtime import atomic_dir, configure_threads, resolve_device, seed_everything


def _finetune_config(run: Run, config: PruneConfig) -> TrainConfig:
    train = run.config.train
    return dataclasses.replace(train, epochs=max(config.finetune_epochs, 1),
                               lr=config.finetune_lr if config.finetune_lr is not None else train.lr,
                               max_steps=config.finetune_max_steps if config.finetune_max_steps else train.max_steps)


def _cost(model: nn.Module, data: ForecastData, config: PruneConfig, device: torch.device) -> dict[str, Any]:
    """Parameters and FLOPs; latency is measured later, dense and pruned in alternation."""
    return measure(model, data, config.batch_sizes, device, threads=config.threads, latency=False)


def dense_baseline(run: Run, config: PruneConfig, data: ForecastData | None = None) -> dict[str, Any]:
    """The dense model's cost and test metrics, measured as :func:`prune_run` measures a pruned one.

    Pass the result to several :func:`prune_run` calls (same process, same settings) to measure the dense model
    once; speedups stay same-process comparisons.
    """
    configure_threads(config.threads)
    device = resolve_device(config.device)
    data = data if data is not None else run.data()
    dense = run.model.to(device).eval()
    try:
        cost = _cost(dense, data, config, device)
        metrics = evaluate(dense, data, "test", run.config.train.batch_size, device)
    finally:
        dense.cpu()
    return {"cost": cost, "metrics": metrics, "batch_sizes": list(config.batch_sizes), "device": str(device)}


@dataclass
class PrunedModel:
    """A pruned (and fine-tuned) model with everything measured on it that does not depend on the engine that runs
    it: test metrics, parameters and FLOPs. :func:`prune_run` with ``pruned=`` reuses one, so a masked run and its
    sparse-engine twin prune, fine-tune and evaluate once (a sweep's twins share it)."""

    source_id: str  # what it was pruned from and how (see :func:`pruning_key`)
    model: nn.Module
    metrics: dict[str, Any]
    cost: dict[str, Any]
    fit_history: list[dict[str, Any]]
    facts: dict[str, Any]
    architecture: dict[str, Any] | None
    seconds: float


def pruning_key(run: Run, config: PruneConfig) -> str:
    """Identifies a pruning outcome: the source run and every setting that changes the pruned weights or what is
    measured on them (timing settings excluded)."""
    settings = config.settings()  # engine twins share one pruning
    return repr((str(run.path) if run.path is not None else weights_fingerprint(run.model),
                 sorted(settings.items())))


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 of a model's parameters and buffers: identifies an in-memory run that has no directory."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Whether two models hold exactly the same tensors under the same names (so every measurement agrees)."""
    left, right = a.state_dict(), b.state_dict()
    return left.keys() == right.keys() and all(
        left[k].shape == right[k].shape and torch.equal(left[k].cpu(), right[k].cpu()) for k in left)


def prune_model(run: Run, config: PruneConfig, data: ForecastData | None = None, progress: bool = False,
                baseline: dict[str, Any] | None = None) -> PrunedModel:
    """Apply ``config``'s method to ``run``'s model, fine-tune it if asked, and evaluate and count it (no timing).

    When pruning removed nothing (density 1 keeps every weight) and there is no fine-tuning, the model *is* the
    dense one: its test metrics, parameters and FLOPs are ``baseline``'s (from :func:`dense_baseline`), which
    evaluation is seeded and deterministic, so measuring again could only repeat them."""
    configure_threads(config.threads)
    device = resolve_device(config.device)
    data = data if data is not None else run.data()
    started = time.perf_counter()
    pruned, train = _apply_method(run, config, data, device)
    pruned.facts = {**pruned.facts, "method_seconds": time.perf_counter() - started}  # the method alone
    model = pruned.model
    fit_result = None
    if config.finetune_epochs:
        teacher = run.model if config.distill > 0 else None
        try:
            fit_result, pruned.masks, facts = finetune_pruned(model, pruned.masks, data, train, config, device,
                                                              teacher, progress=progress)
        finally:
            run.model.cpu()  # the teacher, where it was
        pruned.facts = {**pruned.facts, **facts}
    if (baseline is not None and baseline.get("batch_sizes") == list(config.batch_sizes)
            and not config.finetune_epochs and same_weights(model, run.model)):
        metrics, cost = dict(baseline["metrics"]), dict(baseline["cost"])
        pruned.facts = {**pruned.facts, "measured_as_dense": True}  # unchanged weights: the dense run's numbers
    else:
        metrics = evaluate(model, data, "test", train.batch_size, device)
        cost = _cost(model, data, config, device)
    return PrunedModel(pruning_key(run, config), model, metrics, cost,
                       fit_result.history if fit_result is not None else [], pruned.facts, pruned.architecture,
                       time.perf_counter() - started)


def prune_again(run: Run, config: PruneConfig, data: ForecastData | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """``config``'s method applied to ``run`` once more, on the CPU and without fine-tuning, and the result's
    parameters, nonzeros and FLOPs.

    The methods are deterministic for a seed, so this is the recorded run's structure and mask, and a fine-tuning
    with masks kept changes neither. The measuring pass times it when the run's own weights are gone
    (:mod:`tsprune.sweep.remeasure`): latency depends on the structure and the mask, not on the values. The caller
    compares the counts with the record's, which is what shows that the model is the recorded one."""
    if config.schedule == recipes.GRADUAL:
        raise TsPruneError("a gradual schedule's mask comes out of its fine-tuning, which pruning again cannot "
                           "repeat: keep the run directory (keep_pruned) to time it")
    config = dataclasses.replace(config, device="cpu")  # the pass times on the CPU
    configure_threads(config.threads)
    data = data if data is not None else run.data()
    pruned, _ = _apply_method(run, config, data, torch.device("cpu"))
    return pruned.model.eval(), _cost(pruned.model, data, config, torch.device("cpu"))


def _apply_method(run: Run, config: PruneConfig, data: ForecastData, device: torch.device
                  ) -> tuple[methods.Pruned, TrainConfig]:
    """``config``'s method on a copy of ``run``'s model, seeded as every pruning is (calibration windows are drawn
    from the seed), and the training settings a fine-tuning would use."""
    train = _finetune_config(run, config)
    method = methods.check(config)
    recipes.check(config)
    if method.structured and not get_spec(run.config.model.name).channels:
        raise TsPruneError(f"{run.config.model.name} has no channels for {config.method} to remove (its weights map "
                           "time steps to forecast steps): use an unstructured method such as magnitude")
    seed_everything(train.seed)
    if config.schedule == recipes.GRADUAL:  # the masks come about while fine-tuning, from the dense parent
        return methods.Pruned(copy.deepcopy(run.model).to(device), None, {"schedule": config.schedule}), train
    return method.run()(copy.deepcopy(run.model).to(device), data, config, train, device), train


def prune_run(source: Run | str | Path, config: PruneConfig, out: str | Path | None = None,
              overwrite: bool = False, progress: bool = False, baseline: dict[str, Any] | None = None,
              pruned: PrunedModel | None = None, timed: bool = True) -> Run:
    """Prune ``source`` (a run or run directory) as ``config`` says and return the pruned run.

    With ``out`` the run directory is written to a temporary sibling and renamed when complete, so an
    interruption or error never leaves half a run behind; an existing ``out`` is refused unless ``overwrite``.
    ``baseline`` (from :func:`dense_baseline` on the same run and settings) skips re-measuring the dense model.
    ``pruned`` (from :func:`prune_model` on the same run and config) skips pruning, fine-tuning and evaluation;
    only the timing is redone. ``config.engine == "sparse"`` (unstructured methods) compiles the pruned model for
    sparse kernels at the largest batch size (:func:`tsprune.sparse.engine.compile_sparse`); its latency and speedup are
    then the compiled model's, and the masked dense model's are kept beside them (``latency_masked``,
    ``speedup_masked``). ``config.timed`` False takes no timings and leaves none to a pass (an accuracy-only grid).
    ``timed=False`` leaves the timing out (no latency fields; ``latency_deferred`` is set): for a
    sweep beside other work, whose measuring pass (:mod:`tsprune.sweep.remeasure`) times its kept runs later. A
    sparse-engine run then leaves its compilation to that pass as well (``compile_deferred``; the run directory holds
    the masked model): the compiler chooses each layer's kernel by timing, which under load chooses noisily, and the
    pass compiles again on the quiet machine anyway.
    """
    config.validate()
    method = methods.check(config)
    recipes.check(config)
    engine = config.engine
    deferred = not timed and config.timed  # left to a measuring pass; config.timed False: never timed
    timed = timed and config.timed
    out_path = Path(out) if out is not None else None
    if out_path is not None and out_path.exists() and not overwrite:
        raise TsPruneError(f"{out_path} already exists: choose another out or set overwrite",
                           options=("out", "overwrite"))
    run = source if isinstance(source, Run) else load_run(source)
    if run.sparse_plan:
        raise TsPruneError("this run is compiled for the sparse engine: prune the run it was compiled from")
    if pruned is not None and pruned.source_id != pruning_key(run, config):
        raise TsPruneError("the pruned model passed in was pruned from another run or with other settings")
    configure_threads(config.threads)
    device = resolve_device(config.device)
    data = run.data()
    started = time.perf_counter()

    if baseline is None or baseline.get("batch_sizes") != list(config.batch_sizes):
        baseline = dense_baseline(run, config, data)
    dense_cost, dense_metrics = baseline["cost"], baseline["metrics"]

    shared = pruned is not None
    if pruned is None:
        pruned = prune_model(run, config, data, progress, baseline)
    model = copy.deepcopy(pruned.model).to(device) if shared else pruned.model.to(device)
    metrics, cost = dict(pruned.metrics), dict(pruned.cost)
    inputs = {size: example_inputs(data, size, device=device) for size in config.batch_sizes}
    models = {"dense": run.model.to(device), "pruned": model}
    sparse_plan = None
    if engine == "sparse" and timed:  # the masked model stays for accuracy and FLOPs; the compiled one is timed
        models["masked"] = model
        # attention=False: the dense model runs torch's attention, so the speedup is the sparsity's alone
        models["pruned"], sparse_plan = compile_sparse(copy.deepcopy(model), inputs, max(config.batch_sizes),
                                                       threads=config.threads, attention=False)
    # Dense and pruned are timed in alternation on the same real windows: a same-conditions ratio.
    try:
        paired = {str(size): compare_latency(models, inputs[size], config.latency_repeats, threads=config.threads)
                  for size in config.batch_sizes} if timed else {}
    finally:
        run.model.cpu()
    largest = str(max(config.batch_sizes))

    params = dict(unstructured.prunable_parameters(model, config.include_embeddings, config.include_fourier))
    report = unstructured.density_report(model, params)
    if method.structured:  # the target refers to all parameters: nothing is masked, channels are gone
        report = {**report, "density_prunable": cost["params"] / dense_cost["params"],
                  "density_total": cost["params"] / dense_cost["params"]}
    metrics.update({
        "method": config.method,
        "target_density": config.density,
        "density_prunable": report["density_prunable"],
        "density_total": report["density_total"],
        "emptied_layers": None if method.structured else report["emptied_layers"],
        "params": cost["params"],
        "nonzero_params": cost["nonzero_params"],
        "params_dense": dense_cost["params"],
        "flops": cost["flops"],
        "flops_dense": dense_cost["flops"],
        "flops_ratio": cost["flops"] / dense_cost["flops"],
        "flops_effective": cost["flops_effective"],
        "flops_effective_ratio": cost["flops_effective"] / dense_cost["flops"],
        **(timing_metrics(paired, largest) if timed else {"latency_deferred": True} if deferred else {}),
        **({"compile_deferred": True} if engine == "sparse" and deferred else {}),
        "speedup_batch_size": int(largest),
        "finetuned": bool(config.finetune_epochs),
        "recipe": recipes.recipe_of(dataclasses.asdict(config)),
        "finetune_epochs": config.finetune_epochs,
        "finetune_history": pruned.fit_history,
        "dense_mse": dense_metrics["mse"],
        "dense_mae": dense_metrics["mae"],
        "source": str(run.path) if run.path is not None else None,
        # pruning, fine-tuning and evaluation (once for engine twins that share them) plus this run's timing
        "prune_seconds": (pruned.seconds if shared else 0.0) + time.perf_counter() - started,
        "device": str(device),
        "environment": {**environment(device), **cost["environment"]},
        "engine": engine,
        **pruned.facts,
    })
    if sparse_plan is not None:
        metrics.update({"compiled_batch_size": int(largest), **plan_summary(sparse_plan)})
        model = models["pruned"]
    forecaster = cast(Forecaster, model.cpu())  # pruning and compiling keep the run's forecaster class
    result = Run(run.config, forecaster, run.scaler, run.columns, run.freq, metrics, sparse_plan=sparse_plan)
    result.architecture = pruned.architecture or run.architecture
    if out_path is not None:
        _write_atomically(result, out_path, config, overwrite)
    return result


def timing_metrics(paired: dict[str, dict[str, Any]], largest: str) -> dict[str, Any]:
    """A prune record's timing fields from alternating timings ``{batch size: {"dense", "pruned"[, "masked"]:
    latency}}`` (:func:`tsprune.measure.compare_latency`); the headline ``speedup`` is at batch size ``largest``.
    The measuring pass writes the same fields."""
    latency = {size: timing["pruned"] for size, timing in paired.items()}
    dense = {size: timing["dense"] for size, timing in paired.items()}
    out: dict[str, Any] = {
        "latency_ms": latency[largest]["median_ms"], "latency_dense_ms": dense[largest]["median_ms"],
        "speedup": dense[largest]["median_ms"] / latency[largest]["median_ms"],
        "latency": latency, "latency_dense": dense,
        "speedup_by_batch_size": {size: dense[size]["median_ms"] / latency[size]["median_ms"] for size in latency},
    }
    if all("masked" in timing for timing in paired.values()):  # a sparse-engine run, timed beside its masked twin
        masked = {size: timing["masked"] for size, timing in paired.items()}
        out.update({"latency_masked": masked, "latency_masked_ms": masked[largest]["median_ms"],
                    "speedup_masked": dense[largest]["median_ms"] / masked[largest]["median_ms"],
                    "speedup_over_masked": masked[largest]["median_ms"] / latency[largest]["median_ms"]})
    return out


def _write_atomically(run: Run, out: Path, config: PruneConfig, overwrite: bool) -> None:
    with atomic_dir(out, replace=overwrite) as staging:
        save_run(run, staging, {"prune": dataclasses.asdict(config)})
    run.path = out
