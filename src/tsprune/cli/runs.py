"""Commands on one run: list data and models, train, evaluate, prune, measure, compile, predict, plot."""


from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.table import Table

from tsprune.config import COMPARISONS, IMPORTANCES, SCOPES
from tsprune.errors import TsPruneError
from tsprune.prune import methods, recipes

from tsprune.cli.app import DATA, MODEL, TRAIN, method_help, app, console, err_console, print_metrics, user_errors


@app.command()
@user_errors
def datasets() -> None:
    """List the known datasets (built in, or supplied with --data-path)."""
    from tsprune.data.registry import DATASETS

    table = Table("name", "frequency", "split", "shipped", "description")
    for info in DATASETS.values():
        table.add_row(info.name, info.freq, info.split_text,
                      "yes" if info.shipped else "no (--data-path)", info.description)
    console.print(table)


@app.command()
@user_errors
def models() -> None:
    """List the forecasters (the study's five, then the small ones) with their default hyper-parameters."""
    from tsprune.models.registry import default_config, get_spec, model_names

    table = Table("model", "group", "summary", "defaults")
    for name in model_names():
        spec, config = get_spec(name), default_config(name)
        defaults = ", ".join(f"{field}={getattr(config, field)}" for field in spec.uses)
        table.add_row(name, spec.group, spec.summary, defaults)
    console.print(table)


def model_options(command: Callable) -> Callable:
    """Give ``command`` one ``--option`` per model hyper-parameter (``config.hyper_parameters``: the field's name,
    type and help), collected into its ``hyper`` argument; unset ones are None (the model's own default)."""
    import inspect

    from tsprune.config import hyper_parameters

    types = {"int": int, "float": float, "str": str, "bool": bool}
    fields = hyper_parameters()
    signature = inspect.signature(command)
    options = [inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                 annotation=Annotated[Optional[types[str(spec.type)]], typer.Option(
                                     help=spec.metadata["help"], rich_help_panel=MODEL)]) for spec in fields]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        hyper = {spec.name: kwargs.pop(spec.name) for spec in fields if spec.name in kwargs}
        return command(*args, **kwargs, hyper=hyper)

    kept = [param for param in signature.parameters.values() if param.name != "hyper"]
    wrapper.__signature__ = signature.replace(parameters=kept + options)  # type: ignore[attr-defined]
    return wrapper


@app.command()
@user_errors
@model_options
def train(
    model: Annotated[str, typer.Option(help="Forecaster name (see `tsprune models`).")] = "Transformer",
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/latest"),
    dataset: Annotated[Optional[str], typer.Option(help="Built-in dataset (see `tsprune datasets`).",
                                                   rich_help_panel=DATA)] = None,
    data_path: Annotated[Optional[Path], typer.Option(help="Any CSV with a date column.", rich_help_panel=DATA)] = None,
    target: Annotated[Optional[str], typer.Option(help="Target column (default: last).", rich_help_panel=DATA)] = None,
    freq: Annotated[Optional[str], typer.Option(help="Pandas frequency alias (default: inferred).",
                                                rich_help_panel=DATA)] = None,
    features: Annotated[str, typer.Option(help="M, S or MS.", rich_help_panel=DATA)] = "M",
    seq_len: Annotated[int, typer.Option(rich_help_panel=DATA)] = 96,
    label_len: Annotated[int, typer.Option(rich_help_panel=DATA)] = 48,
    pred_len: Annotated[int, typer.Option(rich_help_panel=DATA)] = 96,
    train_fraction: Annotated[float, typer.Option(help="Keep the most recent fraction of the training split.",
                                                  rich_help_panel=DATA)] = 1.0,
    preset: Annotated[Optional[str], typer.Option(help="Training preset: study-code (default) or study-text "
                                                  "(lr 5e-4).", rich_help_panel=TRAIN)] = None,
    epochs: Annotated[Optional[int], typer.Option(rich_help_panel=TRAIN)] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Cap on steps per epoch.", rich_help_panel=TRAIN)] = None,
    lr: Annotated[Optional[float], typer.Option(rich_help_panel=TRAIN)] = None,
    lr_schedule: Annotated[Optional[str], typer.Option(help="constant, halve or cosine.",
                                                       rich_help_panel=TRAIN)] = None,
    batch_size: Annotated[Optional[int], typer.Option(rich_help_panel=TRAIN)] = None,
    patience: Annotated[Optional[int], typer.Option(rich_help_panel=TRAIN)] = None,
    seed: Annotated[Optional[int], typer.Option(rich_help_panel=TRAIN)] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N.", rich_help_panel=TRAIN)] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch.", rich_help_panel=TRAIN)] = None,
    progress: Annotated[bool, typer.Option(help="Show the progress bar (off: one log line per epoch).",
                                           rich_help_panel=TRAIN)] = True,
    hyper: dict[str, Any] | None = None,
) -> None:
    """Train a forecaster with the study's protocol and write MODEL.safetensors, config.json, metrics.json."""
    from tsprune import api

    if dataset is None and data_path is None:
        dataset = "ETTh1"
    config = api.make_config(
        model, preset=preset,
        data=dict(dataset=dataset, data_path=str(data_path) if data_path else None, target=target, freq=freq,
                  features=features, seq_len=seq_len, label_len=label_len, pred_len=pred_len,
                  train_fraction=train_fraction),
        train=dict(epochs=epochs, max_steps=max_steps, lr=lr, lr_schedule=lr_schedule, batch_size=batch_size,
                   patience=patience, seed=seed, device=device, threads=threads),
        **(hyper or {}))
    run = api.train(config, out=out, progress=progress,
                    log=lambda line: err_console.print(line, highlight=False, soft_wrap=True))
    print_metrics(run.metrics, title=f"{config.model.name} on {config.data.dataset or data_path} "
                                     f"(pred_len {pred_len}) -> {out}")


@app.command()
@user_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `tsprune train`.")],
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    device: Annotated[str, typer.Option()] = "auto",
    threads: Annotated[Optional[int], typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Reload a run and recompute its metrics over all windows of a split."""
    from tsprune import api
    from tsprune.data.dataset import SPLITS

    if split not in SPLITS:
        raise TsPruneError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    run = api.load(run_dir)
    metrics = api.evaluate(run, split=split, device=device, threads=threads)
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    stored = run.metrics if split == "test" else {}
    print_metrics(metrics, title=f"{run.config.model.name} {run_dir} ({split})", stored=stored)


PRUNE, FINETUNE, MEASURE = "Pruning", "Fine-tuning", "Measurement"


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise TsPruneError(f"--batch-sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise TsPruneError(f"--batch-sizes must be positive integers, got {text!r}")
    return sizes


@app.command()
@user_errors
def prune(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory.")],
    out: Annotated[Path, typer.Option(help="Directory for the pruned run.")],
    method: Annotated[Optional[str], typer.Option(help=methods.describe() + ". Default: magnitude, the recipe's, or "
                                                  f"at a density of {recipes.HIGH_SPARSITY_DENSITY:g} or less the "
                                                  f"recipe {recipes.HIGH_SPARSITY}'s.",
                                                  rich_help_panel=PRUNE)] = None,
    recipe: Annotated[Optional[str], typer.Option(help="A named recipe sets the method and how it fine-tunes, at a "
                                                       "budget of one epoch (--finetune-epochs lengthens it): "
                                                       + recipes.describe() + ".",
                                                  rich_help_panel=PRUNE)] = None,
    density: Annotated[float, typer.Option(help="Fraction kept: " + "; ".join(
        f"{', '.join(m.name for m in methods.METHODS if m.density_of == what)}: of the {what}"
        for what in dict.fromkeys(m.density_of for m in methods.METHODS)) + ".", rich_help_panel=PRUNE)] = 0.5,
    iterative: Annotated[bool, typer.Option(help=method_help(
        "iterative", "prune along 0.8^i to the target, fine-tuning between steps."), rich_help_panel=PRUNE)] = False,
    include_embeddings: Annotated[bool, typer.Option(rich_help_panel=PRUNE)] = False,
    include_fourier: Annotated[bool, typer.Option(help=method_help(
        "include_fourier", "also prune FEDformer's complex Fourier weights (ranked by modulus)."),
                                                  rich_help_panel=PRUNE)] = False,
    scope: Annotated[str, typer.Option(help=method_help("scope", " | ".join(SCOPES) + "."),
                                       rich_help_panel=PRUNE)] = "global",
    heads: Annotated[str, typer.Option(help=method_help("heads", "dims (equal per head) | heads (whole heads)."),
                                       rich_help_panel=PRUNE)] = "dims",
    round_to: Annotated[Optional[int], typer.Option(help=method_help(
        "round_to", "keep channel counts multiples of this (default: 8 for models with d_model >= 128; 1: exact)."),
        rich_help_panel=PRUNE)] = None,
    timeout: Annotated[float, typer.Option(help=method_help("timeout_s", "time limit in seconds."),
                                           rich_help_panel=PRUNE)] = 900.0,
    importance: Annotated[str, typer.Option(help=method_help(
        "importance", " | ".join(IMPORTANCES) + ": how channels are ranked (taylor and hessian from gradients of the "
        "training loss on calibration windows)."), rich_help_panel=PRUNE)] = "l2",
    calibration_windows: Annotated[int, typer.Option(help=method_help(
        "calibration_windows", "training windows (a seeded sample, never validation or test) to calibrate on."),
        rich_help_panel=PRUNE)] = 128,
    comparison: Annotated[str, typer.Option(help=method_help(
        "comparison", " | ".join(COMPARISONS) + ": which weights compete for the kept share (sparsegpt: row or "
        "layer)."), rich_help_panel=PRUNE)] = "row",
    damping: Annotated[float, typer.Option(help=method_help(
        "damping", "added to the Hessian's diagonal, as a fraction of its mean."), rich_help_panel=PRUNE)] = 0.1,
    finetune_epochs: Annotated[int, typer.Option(rich_help_panel=FINETUNE)] = 0,
    finetune_lr: Annotated[Optional[float], typer.Option(rich_help_panel=FINETUNE)] = None,
    finetune_max_steps: Annotated[Optional[int], typer.Option(rich_help_panel=FINETUNE)] = None,
    distill: Annotated[float, typer.Option(help="Fine-tuning loss = MSE to the target + this x MSE to the dense "
                                                "model's forecast (0: no teacher).", rich_help_panel=FINETUNE)] = 0.0,
    schedule: Annotated[str, typer.Option(help="oneshot: the method's masks, fixed while fine-tuning; gradual: "
                                               "magnitude sparsity raised from dense to --density during "
                                               "fine-tuning (Zhu & Gupta's cubic schedule).",
                                          rich_help_panel=FINETUNE)] = "oneshot",
    gradual_every: Annotated[int, typer.Option(help="gradual: optimiser steps between two cuts.",
                                               rich_help_panel=FINETUNE)] = 10,
    gradual_ramp: Annotated[float, typer.Option(help="gradual: share of the fine-tuning steps after which the "
                                                     "target density is reached.", rich_help_panel=FINETUNE)] = 0.75,
    batch_sizes: Annotated[str, typer.Option(help="Latency batch sizes.", rich_help_panel=MEASURE)] = "1,32",
    repeats: Annotated[int, typer.Option(help="Timed passes per batch size.", rich_help_panel=MEASURE)] = 20,
    threads: Annotated[Optional[int], typer.Option(rich_help_panel=MEASURE)] = None,
    engine: Annotated[str, typer.Option(help="dense | sparse: compile the (unstructured) pruned model for sparse "
                                             "kernels where measured faster, and time that.",
                                        rich_help_panel=MEASURE)] = "dense",
    device: Annotated[str, typer.Option()] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Prune a trained run, optionally fine-tune it, and measure it against the dense model."""
    from tsprune import api

    options: dict[str, Any] = {"distill": distill or None, "schedule": None if schedule == "oneshot" else schedule,
                               "gradual_every": gradual_every, "gradual_ramp": gradual_ramp}
    run = api.prune(run_dir, method, density, out, recipe=recipe, overwrite=overwrite, progress=not as_json,
                    iterative=iterative, include_embeddings=include_embeddings, include_fourier=include_fourier,
                    scope=scope, heads=heads, round_to=round_to, timeout_s=timeout, importance=importance,
                    calibration_windows=calibration_windows, comparison=comparison, damping=damping,
                    finetune_epochs=finetune_epochs,
                    finetune_lr=finetune_lr, finetune_max_steps=finetune_max_steps,
                    batch_sizes=_batch_sizes(batch_sizes), latency_repeats=repeats, threads=threads, device=device,
                    engine=engine, **options)
    m = run.metrics
    if method is None and recipe is None and m.get("recipe") == recipes.HIGH_SPARSITY:
        err_console.print(f"note: at density {density:g} (at most {recipes.HIGH_SPARSITY_DENSITY:g}) tsprune prunes "
                          f"with the recipe measured best there, {recipes.HIGH_SPARSITY} (one epoch of fine-tuning); "
                          "--method magnitude prunes as the study does")
    if as_json:
        hidden = ("latency", "latency_dense", "latency_masked")
        typer.echo(json.dumps({k: v for k, v in m.items() if k not in hidden}, indent=2))
        return
    how = m["recipe"] or m["method"]
    table = Table("metric", "pruned", "dense", title=f"{run.config.model.name} {how} {density} -> {out}")
    table.add_row("test mse", f"{m['mse']:.4f}", f"{m['dense_mse']:.4f}")
    table.add_row("test mae", f"{m['mae']:.4f}", f"{m['dense_mae']:.4f}")
    table.add_row("params", f"{m['params']:,}", f"{m['params_dense']:,}")
    table.add_row("density prunable / total", f"{m['density_prunable']:.4f} / {m['density_total']:.4f}", "1 / 1")
    table.add_row("FLOPs (batch 1)", f"{m['flops']:,}", f"{m['flops_dense']:,}")
    table.add_row("FLOPs effective (non-zero weights)", f"{m['flops_effective']:,}", f"{m['flops_dense']:,}")
    table.add_row(f"latency ms (batch {m['speedup_batch_size']})", f"{m['latency_ms']:.2f}",
                  f"{m['latency_dense_ms']:.2f}")
    if engine == "sparse":
        table.add_row(f"latency ms masked dense (batch {m['speedup_batch_size']})", f"{m['latency_masked_ms']:.2f}",
                      "")
        table.add_row("layers on sparse kernels", f"{m['sparse_layers']} of {m['candidate_layers']} pruned", "")
    table.add_row("speedup" + (" (sparse engine)" if engine == "sparse" else ""), f"{m['speedup']:.2f}x", "1x")
    console.print(table)


@app.command()
@user_errors
def measure(
    run_dir: Annotated[Path, typer.Argument(help="Any run directory (dense or pruned).")],
    batch_sizes: Annotated[str, typer.Option(help="Latency batch sizes.")] = "1,32",
    repeats: Annotated[int, typer.Option(help="Timed passes per batch size.")] = 20,
    threads: Annotated[Optional[int], typer.Option()] = None,
    device: Annotated[str, typer.Option()] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a run's parameters, FLOPs (attention and FFT included) and measured latency."""
    from tsprune import api

    if repeats < 1:
        raise TsPruneError(f"--repeats must be at least 1, got {repeats}")
    result = api.measure(run_dir, _batch_sizes(batch_sizes), device=device, threads=threads, repeats=repeats)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table("quantity", "value", title=f"{run_dir}")
    table.add_row("params", f"{result['params']:,}")
    table.add_row("non-zero params", f"{result['nonzero_params']:,}")
    table.add_row("FLOPs per forward (batch 1)", f"{result['flops']:,}")
    table.add_row("FLOPs effective (non-zero weights)", f"{result['flops_effective']:,}")
    for size, timing in result["latency"].items():
        table.add_row(f"latency batch {size} (median, IQR)", f"{timing['median_ms']:.2f} ms ({timing['iqr_ms']:.2f})")
        if "speedup_over_masked" in result:  # a compiled run, timed beside its masked dense twin
            masked = result["latency_masked"][size]
            table.add_row(f"  masked dense, batch {size}", f"{masked['median_ms']:.2f} ms ({masked['iqr_ms']:.2f})")
            table.add_row(f"  sparse engine speedup, batch {size}", f"{result['speedup_over_masked'][size]:.2f}x")
    env = result["environment"]
    table.add_row("environment", f"torch {env.get('torch')}, {env.get('device')}, {env.get('threads')} threads")
    console.print(table)


@app.command()
@user_errors
def plot(
    run_dirs: Annotated[list[Path], typer.Argument(help="One or more runs of the same data (e.g. dense and pruned).")],
    out: Annotated[Path, typer.Option(help="Image file (png, svg, pdf).")],
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    windows: Annotated[int, typer.Option(help="Evenly spaced windows to draw.")] = 3,
    channel: Annotated[Optional[str], typer.Option(help="Channel to draw (default: target).")] = None,
    labels: Annotated[Optional[str], typer.Option(help="Comma-separated legend labels, one per run.")] = None,
    device: Annotated[str, typer.Option()] = "auto",
) -> None:
    """Predictions vs ground truth on chosen windows, several runs overlaid."""
    from tsprune import api
    from tsprune.plots import plot_windows

    names = [label.strip() for label in labels.split(",")] if labels else None
    if names is not None and len(names) != len(run_dirs):
        raise TsPruneError(f"--labels has {len(names)} names for {len(run_dirs)} runs")
    runs = [api.load(path) for path in run_dirs]
    written = plot_windows(runs, out, names or [str(p) for p in run_dirs], split, windows, channel, device)
    console.print(f"wrote {written}")


