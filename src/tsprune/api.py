"""The Python API: train, load and evaluate runs. The CLI is a thin shell over these functions."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from tsprune.config import RunConfig, read_json, replace_known, write_json
from tsprune.configure import make_config  # noqa: F401 - part of the API
from tsprune.data.dataset import ForecastData, prepare_data
from tsprune.errors import TsPruneError
from tsprune.run import Run, environment, load_run, save_run
from tsprune.train import configure_threads, evaluate as evaluate_model, fit, resolve_device, seed_everything


def data_bound_values(config: RunConfig, data: ForecastData) -> dict[str, int]:
    """The values of ``config.DATA_BOUND_FIELDS``: the model sizes and window lengths the data dictates."""
    return {"enc_in": data.enc_in, "dec_in": data.enc_in, "c_out": data.c_out, "seq_len": config.data.seq_len,
            "label_len": config.data.label_len, "pred_len": config.data.pred_len,
            "n_time_features": data.n_time_features}


def bind_to_data(config: RunConfig, data: ForecastData) -> RunConfig:
    """Fill the model's input/output sizes and window lengths from the prepared data."""
    return dataclasses.replace(config, model=dataclasses.replace(config.model, **data_bound_values(config, data)))


def train(config: RunConfig, out: str | Path | None = None, progress: bool = True,
          log: Callable[[str], None] | None = None) -> Run:
    """Train a dense forecaster with ``config``; write the run directory to ``out`` when given.

    Without a progress bar, ``log`` (e.g. ``print``) still receives one line per epoch.
    """
    from tsprune.models.registry import build_model

    configure_threads(config.train.threads)
    device = resolve_device(config.train.device)
    data = prepare_data(config.data)  # validates the data before anything is built or trained
    config = bind_to_data(config, data)
    seed_everything(config.train.seed)
    model = build_model(config.model).to(device)
    state_dir = training_state_dir(Path(out), config) if out is not None else None
    result = fit(model, data, config.train, device, progress=progress, state_dir=state_dir, log=log)
    started = time.perf_counter()
    metrics = evaluate_model(model, data, "test", config.train.batch_size, device)
    metrics.update({
        "params": sum(p.numel() for p in model.parameters()),
        "train_seconds": result.train_seconds,
        "test_seconds": time.perf_counter() - started,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "best_val_mse": min(h["val_mse"] for h in result.history),
        "test_windows": data.n_windows("test"),
        "history": result.history,
        "device": str(device),
        "environment": environment(device),
    })
    run = Run(config, model.cpu(), data.scaler, data.columns, data.freq, metrics)
    if out is not None:
        save_run(run, Path(out))
        shutil.rmtree(state_dir, ignore_errors=True)  # the run is complete: nothing left to resume
    return run


# Where and how fast a run executes, not what it computes: a run may resume on another device or thread count.
EXECUTION_SETTINGS = ("device", "threads", "num_workers")
TRAINING_STATE = "training_state"  # folder of a run directory holding an unfinished run's per-epoch state


def training_state_dir(out: Path, config: RunConfig) -> Path:
    """Where :func:`train` keeps its per-epoch state; an interrupted run with the same config resumes from it
    (execution settings, :data:`EXECUTION_SETTINGS`, may differ)."""
    def experiment(settings: dict[str, Any]) -> dict[str, Any]:
        train = {k: v for k, v in settings["train"].items() if k not in EXECUTION_SETTINGS}
        return {**settings, "train": train}

    state_dir = out / TRAINING_STATE
    stamp = state_dir / "run_config.json"
    if stamp.is_file():
        if experiment(read_json(stamp)) != experiment(json.loads(json.dumps(config.to_dict()))):
            raise TsPruneError(f"{out} holds an unfinished run with another configuration: use another --out or "
                               f"delete {state_dir}")
    else:
        state_dir.mkdir(parents=True, exist_ok=True)
        write_json(stamp, config.to_dict())
    return state_dir


def load(path: str | Path) -> Run:
    """Reload a run directory written by :func:`train`."""
    return load_run(path)


def evaluate(run: Run | str | Path, split: str = "test", device: str = "auto", batch_size: int | None = None,
             threads: int | None = None) -> dict[str, float]:
    """Recompute a run's metrics on ``split`` (all windows) with its stored scaler."""
    if not isinstance(run, Run):
        run = load_run(run)
    configure_threads(threads)
    device_t = resolve_device(device)
    data = run.data()
    model = run.model.to(device_t)
    try:
        return evaluate_model(model, data, split, batch_size or run.config.train.batch_size, device_t)
    finally:
        run.model.cpu()


def prune(source: Run | str | Path, method: str = "magnitude", density: float = 0.5, out: str | Path | None = None,
          *, overwrite: bool = False, progress: bool = False, baseline: dict[str, Any] | None = None,
          engine: str = "dense", **options: Any) -> Run:
    """Prune a trained run (``magnitude``, ``magnitude-layerwise`` or ``depgraph``) to ``density``, optionally
    fine-tune it (``finetune_epochs=N``), and measure it against the dense model in the same process.

    ``options`` are :class:`tsprune.config.PruneConfig` fields. The returned run's ``metrics`` hold test MSE/MAE,
    densities, FLOPs, latency and speedup; with ``out`` it is also written as a run directory. ``baseline``
    (``tsprune.prune.pipeline.dense_baseline``) reuses one dense measurement across several calls.
    ``engine="sparse"`` also compiles the pruned model for sparse kernels (see :func:`compile_run`) and times that.
    """
    from tsprune.config import PruneConfig
    from tsprune.prune.pipeline import prune_run

    if "batch_sizes" in options and options["batch_sizes"] is not None:
        options["batch_sizes"] = tuple(int(b) for b in options["batch_sizes"])
    config = replace_known(PruneConfig(method=method, density=density), options)
    return prune_run(source, config, out, overwrite=overwrite, progress=progress, baseline=baseline, engine=engine)


def measure(run: Run | str | Path, batch_sizes: tuple[int, ...] = (1, 32), device: str = "auto",
            threads: int | None = None, repeats: int = 20, latency: bool = True) -> dict[str, Any]:
    """Parameters, non-zero parameters, FLOPs (operator level, attention and FFT included) and measured latency
    of a run on its own real test windows."""
    from tsprune.measure import measure as measure_model

    if not isinstance(run, Run):
        run = load_run(run)
    configure_threads(threads)
    data, device_t = run.data(), resolve_device(device)
    if not run.sparse_plan:
        return measure_model(run.model, data, tuple(batch_sizes), device_t, repeats=repeats, threads=threads,
                             latency=latency)
    # Sparse kernels hide their weights from the counters: count on the dense-with-zeros twin; time the compiled
    # model in alternation with that twin (same process, same inputs), so the speedup is a same-conditions ratio.
    import copy

    from tsprune.measure import compare_latency, example_inputs
    from tsprune.prune.sparse import densify_model

    twin = densify_model(copy.deepcopy(run.model))
    result = measure_model(twin, data, tuple(batch_sizes), device_t, threads=threads, latency=False)
    if latency:
        models = {"masked": twin.to(device_t), "sparse": run.model.to(device_t)}
        try:
            paired = {str(size): compare_latency(models, example_inputs(data, size, device=device_t), repeats,
                                                 threads=threads) for size in batch_sizes}
        finally:
            run.model.cpu()
            twin.cpu()
        result["latency"] = {size: timing["sparse"] for size, timing in paired.items()}
        result["latency_masked"] = {size: timing["masked"] for size, timing in paired.items()}
        result["speedup_over_masked"] = {size: timing["masked"]["median_ms"] / timing["sparse"]["median_ms"]
                                         for size, timing in paired.items()}
        result["latency_ms"] = result["latency"][str(max(batch_sizes))]["median_ms"]
    result["engine"] = "sparse"
    return result


def compile_run(run: Run | str | Path, batch_size: int = 32, out: str | Path | None = None, *, engine: str = "sparse",
            threads: int | None = None, min_speedup: float = 1.05, repeats: int = 10, device: str = "auto",
            force: str | None = None) -> Run:
    """Convert each pruned layer whose sparse kernel (CSR or BSR) measures faster than dense at ``batch_size`` on
    this machine into a sparse-weight module; the per-layer decision and timings are stored in the run's
    ``sparse_plan``. The compiled run's metrics add its latency and speedup over the masked dense model, measured
    in the same process. ``force`` ("csr"/"bsr") skips timing and converts every pruned layer.
    """
    import copy

    from tsprune.measure import compare_latency, example_inputs
    from tsprune.prune.sparse import compile_sparse, plan_summary

    if engine != "sparse":
        raise TsPruneError(f"unknown engine {engine!r}: the only compiled engine is 'sparse'")
    if batch_size < 1:
        raise TsPruneError(f"--batch-size must be at least 1, got {batch_size}")
    if not isinstance(run, Run):
        run = load_run(run)
    if run.sparse_plan:
        raise TsPruneError("this run is already compiled: compile the run it was made from")
    configure_threads(threads)
    device_t = resolve_device(device)
    inputs = example_inputs(run.data(), batch_size, device=device_t)
    dense = run.model.to(device_t)
    compiled, plan = compile_sparse(copy.deepcopy(dense), inputs, batch_size, threads=threads,
                                    min_speedup=min_speedup, repeats=repeats, force=force)
    timing = compare_latency({"masked": dense, "sparse": compiled}, inputs, repeats, threads=threads)
    dense.cpu()
    metrics = {**run.metrics, "engine": "sparse", "compiled_batch_size": batch_size, **plan_summary(plan),
               "latency_masked_ms": timing["masked"]["median_ms"], "latency_sparse_ms": timing["sparse"]["median_ms"],
               "speedup_over_masked": timing["masked"]["median_ms"] / timing["sparse"]["median_ms"]}
    result = Run(run.config, compiled.cpu(), run.scaler, run.columns, run.freq, metrics, None, run.architecture, plan)
    if out is not None:
        out = Path(out)
        if out.exists():
            raise TsPruneError(f"{out} already exists: choose another --out")
        save_run(result, out)
    return result
