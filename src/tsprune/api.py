"""The Python API: train, load and evaluate runs. The CLI is a thin shell over these functions."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, cast

from tsprune.config import RunConfig, replace_known
from tsprune.configure import make_config  # noqa: F401 - part of the API
from tsprune.errors import TsPruneError
from tsprune.models.base import Forecaster
from tsprune.run import Run, load_run, save_run
from tsprune.train import evaluate as evaluate_model
from tsprune.runtime import configure_threads, resolve_device


def train(config: RunConfig, out: str | Path | None = None, progress: bool = True,
          log: Callable[[str], None] | None = None) -> Run:
    """Train a dense forecaster with ``config``; write the run directory to ``out`` when given (an interrupted
    training there resumes after its last finished epoch). Without a progress bar, ``log`` (e.g. ``print``) still
    receives one line per epoch."""
    from tsprune.train import train_run

    return train_run(config, out, progress=progress, log=log)


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


def prune(source: Run | str | Path, method: str | None = None, density: float = 0.5, out: str | Path | None = None,
          *, recipe: str | None = None, overwrite: bool = False, progress: bool = False,
          baseline: dict[str, Any] | None = None, **options: Any) -> Run:
    """Prune a trained run with ``method`` (a record of ``tsprune.prune.methods``) to ``density``, optionally
    fine-tune it (``finetune_epochs=N``), and measure it against the dense model in the same process. Naming neither
    ``method`` nor ``recipe`` prunes by global magnitude, or, at high sparsity (density at most
    ``prune.recipes.HIGH_SPARSITY_DENSITY``), with the recipe measured best there (``prune.recipes.HIGH_SPARSITY``,
    one epoch of fine-tuning), unless ``iterative``, ``distill`` or ``schedule`` compose a way of their own.

    ``recipe`` (a record of ``tsprune.prune.recipes``) sets the method, the fine-tuning schedule, distillation and
    the budget in one name; a ``method`` given beside it must be the recipe's, and ``finetune_epochs`` lengthens
    its budget. ``options`` are :class:`tsprune.config.PruneConfig` fields. The returned run's ``metrics`` hold
    test MSE/MAE, densities, FLOPs, latency and speedup; with ``out`` it is also written as a run directory.
    ``baseline`` (``tsprune.prune.pipeline.dense_baseline``) reuses one dense measurement across several calls.
    ``engine="sparse"`` also compiles the pruned model for sparse kernels (see :func:`compile_run`) and times that.
    """
    from tsprune.config import PruneConfig
    from tsprune.prune import recipes
    from tsprune.prune.pipeline import prune_run

    if "batch_sizes" in options and options["batch_sizes"] is not None:
        options["batch_sizes"] = tuple(int(b) for b in options["batch_sizes"])
    config = replace_known(PruneConfig(density=density), options)
    own_recipe = options.get("iterative") or options.get("distill") or options.get("schedule") not in (None, "oneshot")
    if recipe is None and method is None and not own_recipe:
        recipe = recipes.default_for(density)  # high sparsity: the measured best recipe (prune.recipes)
    if recipe is not None:
        wanted = recipes.get_recipe(recipe).method
        if method is not None and method != wanted:
            raise TsPruneError(f"recipe {recipe} prunes with {wanted}, not {method}: drop the method or the recipe")
        config = recipes.apply(config, recipe)
    elif method is not None:
        config = dataclasses.replace(config, method=method)
    return prune_run(source, config, out, overwrite=overwrite, progress=progress, baseline=baseline)


def export(run: Run | str | Path, path: str | Path, batch_size: int | None = None, format: str = "onnx") -> Any:
    """Export a run and check the file against PyTorch on real test windows before keeping it, with a JSON sidecar
    ``path + '.json'``. ``format`` ``onnx`` (``tsprune.export``): a dense, magnitude- or DepGraph-pruned run to an
    ONNX file for ONNX Runtime; ``pt2`` (``tsprune.export_pt2``): those or a sparse-compiled run to a
    ``torch.export``/AOTInductor package, its op library beside it. ``batch_size`` None: any batch size. Returns
    what was written and the measured difference."""
    if format == "onnx":
        from tsprune.export import export_run

        return export_run(run, path, batch_size=batch_size)
    if format == "pt2":
        from tsprune.export_pt2 import export_pt2

        return export_pt2(run, path, batch_size=batch_size)
    raise TsPruneError(f"unknown export format {format!r}: use onnx or pt2", options=("format",))


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
    from tsprune.sparse.engine import densify_model

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
    """Convert each pruned layer whose sparse kernel (tsprune's pcsr, torch's CSR or BSR) measures faster than
    dense at ``batch_size`` on this machine into a sparse-weight module; the per-layer decision and timings are
    stored in the run's ``sparse_plan``. The compiled run's metrics add its latency and speedup over the masked
    dense model, measured in the same process. ``force`` ("pcsr"/"csr"/"bsr") skips timing and converts every
    pruned layer.
    """
    import copy

    from tsprune.measure import compare_latency, example_inputs
    from tsprune.sparse.engine import compile_sparse, plan_summary

    if engine != "sparse":
        raise TsPruneError(f"unknown engine {engine!r}: the only compiled engine is 'sparse'")
    if not isinstance(run, Run):
        run = load_run(run)
    if run.sparse_plan:
        raise TsPruneError("this run is already compiled: compile the run it was made from")
    configure_threads(threads)
    device_t = resolve_device(device)
    inputs = example_inputs(run.data(), batch_size, device=device_t)  # checks batch_size
    dense = run.model.to(device_t)
    compiled, plan = compile_sparse(copy.deepcopy(dense), inputs, batch_size, threads=threads,
                                    min_speedup=min_speedup, repeats=repeats, force=force)
    timing = compare_latency({"masked": dense, "sparse": compiled}, inputs, repeats, threads=threads)
    dense.cpu()
    metrics = {**run.metrics, "engine": "sparse", "compiled_batch_size": batch_size, **plan_summary(plan),
               "latency_masked_ms": timing["masked"]["median_ms"], "latency_sparse_ms": timing["sparse"]["median_ms"],
               "speedup_over_masked": timing["masked"]["median_ms"] / timing["sparse"]["median_ms"]}
    model = cast(Forecaster, compiled.cpu())  # compiling swaps layers inside a copy of the forecaster
    result = Run(run.config, model, run.scaler, run.columns, run.freq, metrics, None, run.architecture, plan)
    if out is not None:
        out = Path(out)
        if out.exists():
            raise TsPruneError(f"{out} already exists: choose another out", options=("out",))
        save_run(result, out)
    return result


def predict(run: Run | str | Path, history: Any = None, *, dataset: str | None = None, data_path: str | None = None,
            engine: str | None = None, device: str = "auto", onnx: str | Path | None = None) -> Any:
    """Forecast the ``pred_len`` steps after the end of ``history`` in original units, as a DataFrame of future
    timestamps and forecast channels.

    ``history`` is a DataFrame with a date column and the run's columns; without it, ``data_path`` or a built-in
    ``dataset``, else the run's own data. ``engine`` runs the forecast ``dense`` (a compiled run is densified),
    ``sparse`` (a pruned run is compiled for batch 1 first), ``onnx`` (the run's exported file ``onnx``, default
    ``RUN_DIR/model.onnx``, in ONNX Runtime) or ``pt2`` (its PyTorch 2 package, default ``RUN_DIR/model.pt2``,
    with the op library beside it); None keeps the run as it was saved.
    """
    from tsprune.forecast import predict as forecast_after, read_history

    if engine not in (None, "dense", "sparse", "onnx", "pt2"):
        raise TsPruneError(f"unknown engine {engine!r}: use dense, sparse, onnx or pt2", options=("engine",))
    run = load(run) if not isinstance(run, Run) else run
    if engine in ("onnx", "pt2"):
        from tsprune.export import onnx_forecaster
        from tsprune.export_pt2 import Pt2Forecaster

        if onnx is None and run.path is None:
            raise TsPruneError("give the exported file (onnx) for a run that has no directory", options=("onnx",))
        file = onnx if onnx is not None else Path(run.path or ".") / f"model.{engine}"
        forecaster = onnx_forecaster(file) if engine == "onnx" else Pt2Forecaster(file)
        forecaster.check_run(run)
        if history is None:
            history = read_history(run, dataset, data_path)
        return forecast_after(run, history, device, forward=forecaster)
    if engine == "dense" and run.sparse_plan:
        from tsprune.sparse.engine import densify_model

        run.model, run.sparse_plan = cast(Forecaster, densify_model(run.model)), None  # densified in place
    elif engine == "sparse" and not run.sparse_plan:
        run = compile_run(run, batch_size=1, device=device)
    if history is None:
        history = read_history(run, dataset, data_path)
    return forecast_after(run, history, device)
