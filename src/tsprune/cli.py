"""The ``tsprune`` command line: parses options, calls the Python API, prints. No logic of its own."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from tsprune.errors import TsPruneError
from tsprune.prune import methods

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Prune Transformer time-series forecasters and measure what you really save.")
console = Console()
err_console = Console(stderr=True)

DATA, MODEL, TRAIN = "Data", "Model hyper-parameters (default: the model's own)", "Training"


def _for(option: str, text: str) -> str:
    """Help text of a pruning option, prefixed with the methods that read it."""
    return f"{', '.join(methods.using(option))}: {text}"


def user_errors(command: Callable) -> Callable:
    """Turn a TsPruneError into one red line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TsPruneError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/yellow]")
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@user_errors
def datasets() -> None:
    """List the known datasets (built in, or supplied with --data-path)."""
    from tsprune.data.registry import DATASETS

    table = Table("name", "frequency", "split", "shipped", "description")
    for info in DATASETS.values():
        table.add_row(info.name, info.freq, "12/4/4 months" if info.split.startswith("ett") else "70/10/20",
                      "yes" if info.shipped else "no (--data-path)", info.description)
    console.print(table)


@app.command()
@user_errors
def models() -> None:
    """List the forecasters with their default hyper-parameters."""
    from tsprune.models.registry import default_config, get_spec, model_names

    table = Table("model", "summary", "defaults")
    for name in model_names():
        spec, config = get_spec(name), default_config(name)
        defaults = ", ".join(f"{field}={getattr(config, field)}" for field in spec.uses)
        table.add_row(name, spec.summary, defaults)
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
    method: Annotated[str, typer.Option(help=methods.describe() + ".", rich_help_panel=PRUNE)] = methods.MAGNITUDE,
    density: Annotated[float, typer.Option(help="Fraction kept: " + "; ".join(
        f"{', '.join(m.name for m in methods.METHODS if m.density_of == what)}: of the {what}"
        for what in dict.fromkeys(m.density_of for m in methods.METHODS)) + ".", rich_help_panel=PRUNE)] = 0.5,
    iterative: Annotated[bool, typer.Option(help=_for("iterative", "prune along 0.8^i to the target, fine-tuning "
                                                                   "between steps."), rich_help_panel=PRUNE)] = False,
    include_embeddings: Annotated[bool, typer.Option(rich_help_panel=PRUNE)] = False,
    include_fourier: Annotated[bool, typer.Option(help="Also prune FEDformer's complex Fourier weights.",
                                                  rich_help_panel=PRUNE)] = False,
    scope: Annotated[str, typer.Option(help=_for("scope", "global | uniform."), rich_help_panel=PRUNE)] = "global",
    heads: Annotated[str, typer.Option(help=_for("heads", "dims (equal per head) | heads (whole heads)."),
                                       rich_help_panel=PRUNE)] = "dims",
    round_to: Annotated[Optional[int], typer.Option(help=_for("round_to", "keep channel counts multiples of this "
                                                         "(default: 8 for models with d_model >= 128; 1: exact)."),
                                                    rich_help_panel=PRUNE)] = None,
    timeout: Annotated[float, typer.Option(help=_for("timeout_s", "time limit in seconds."),
                                           rich_help_panel=PRUNE)] = 900.0,
    finetune_epochs: Annotated[int, typer.Option(rich_help_panel=FINETUNE)] = 0,
    finetune_lr: Annotated[Optional[float], typer.Option(rich_help_panel=FINETUNE)] = None,
    finetune_max_steps: Annotated[Optional[int], typer.Option(rich_help_panel=FINETUNE)] = None,
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

    run = api.prune(run_dir, method, density, out, overwrite=overwrite, progress=not as_json,
                    iterative=iterative, include_embeddings=include_embeddings, include_fourier=include_fourier,
                    scope=scope, heads=heads, round_to=round_to, timeout_s=timeout, finetune_epochs=finetune_epochs,
                    finetune_lr=finetune_lr, finetune_max_steps=finetune_max_steps,
                    batch_sizes=_batch_sizes(batch_sizes), latency_repeats=repeats, threads=threads, device=device,
                    engine=engine)
    m = run.metrics
    if as_json:
        hidden = ("latency", "latency_dense", "latency_masked")
        typer.echo(json.dumps({k: v for k, v in m.items() if k not in hidden}, indent=2))
        return
    table = Table("metric", "pruned", "dense", title=f"{run.config.model.name} {method} {density} -> {out}")
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


@app.command(name="compile")
@user_errors
def compile_command(
    run_dir: Annotated[Path, typer.Argument(help="A pruned run directory.")],
    out: Annotated[Path, typer.Option(help="Directory for the compiled run.")],
    engine: Annotated[str, typer.Option(help="sparse (CSR/BSR kernels where they measure faster).")] = "sparse",
    batch_size: Annotated[int, typer.Option(help="The batch size to optimise for.")] = 32,
    min_speedup: Annotated[float, typer.Option(help="A layer goes sparse only if at least this much faster.")] = 1.05,
    repeats: Annotated[int, typer.Option(help="Timed passes per candidate kernel.")] = 10,
    threads: Annotated[Optional[int], typer.Option()] = None,
    device: Annotated[str, typer.Option()] = "auto",
) -> None:
    """Run each pruned layer on the kernel that measures fastest here (sparse CSR/BSR or dense)."""
    from tsprune import api

    run = api.compile_run(run_dir, batch_size, out, engine=engine, threads=threads, min_speedup=min_speedup,
                          repeats=repeats, device=device)
    table = Table("layer", "density", "engine", "dense ms", "chosen ms", title=f"{run_dir} -> {out}")
    for name, layer in run.sparse_plan["layers"].items():
        table.add_row(name, f"{layer['density']:.3f}", layer["engine"] + (f" {layer['block']}" if layer.get("block")
                                                                             else ""),
                      f"{layer['dense_ms']:.3f}" if layer.get("dense_ms") is not None else "-",
                      f"{layer['chosen_ms']:.3f}" if layer.get("chosen_ms") is not None else "-")
    console.print(table)
    m = run.metrics
    console.print(f"{m['sparse_layers']} of {m['candidate_layers']} pruned layers sparse; batch {batch_size}: "
                  f"{m['latency_masked_ms']:.2f} ms masked -> {m['latency_sparse_ms']:.2f} ms sparse "
                  f"({m['speedup_over_masked']:.2f}x)", highlight=False)


@app.command()
@user_errors
def predict(
    run_dir: Annotated[Path, typer.Argument(
        help="A run directory (dense, pruned, fine-tuned or structurally pruned).")],
    out: Annotated[Path, typer.Option(help="CSV file for the forecast.")],
    data_path: Annotated[Optional[str], typer.Option(help="CSV to forecast from (default: the run's own data).")]
    = None,
    dataset: Annotated[Optional[str], typer.Option(help="Built-in dataset to forecast from.")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Also draw history and forecast to this image.")] = None,
    channels: Annotated[Optional[str], typer.Option(help="Comma-separated channels to plot (default: target).")]
    = None,
    engine: Annotated[Optional[str], typer.Option(help="dense or sparse (default: as the run was saved; sparse "
                                                       "compiles a pruned run for batch 1 first).")] = None,
    device: Annotated[str, typer.Option()] = "auto",
) -> None:
    """Forecast the pred_len steps after the end of the data, in original units, with continuing timestamps."""
    from tsprune import api
    from tsprune.forecast import read_history

    run = api.load(run_dir)
    history = read_history(run, dataset, data_path)
    forecast = api.predict(run, history, engine=engine, device=device)
    out.parent.mkdir(parents=True, exist_ok=True)
    forecast.to_csv(out, index=False)
    console.print(f"wrote {len(forecast)} forecast rows to {out}")
    if plot is not None:
        from tsprune.plots import plot_forecast

        names = [c.strip() for c in channels.split(",")] if channels else None
        console.print(f"wrote {plot_forecast(history, forecast, plot, names)}")


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


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option(help="Directory for the sweep, the timings and the report.")] = Path("demo"),
    workers: Annotated[int, typer.Option(help="Concurrent runs of the accuracy part (one thread each).")] = 2,
    retrain: Annotated[bool, typer.Option(help="Train the five dense models from scratch instead of using the "
                                               "shipped checkpoints.")] = False,
    save_checkpoints: Annotated[Optional[Path], typer.Option(help="Write the dense runs to this folder in the "
                                                                  "shipped layout (with --retrain: the command "
                                                                  "that makes the shipped checkpoints).")] = None,
    speed: Annotated[bool, typer.Option(help="Run the speed part (full-size models timed).")] = True,
    progress: Annotated[bool, typer.Option(help="Live progress bar.")] = True,
) -> None:
    """The study in miniature: the paper-mini sweep on trained small models, full-size timings, and the report."""
    from tsprune.demo import run_demo

    if workers < 1:
        raise TsPruneError(f"--workers must be at least 1, got {workers}")
    report = run_demo(Path(out), workers=workers, retrain=retrain, save_to=save_checkpoints, speed=speed,
                      progress=progress, console=err_console)
    console.print(f"[green]report written:[/green] {report} (and {report.with_suffix('.html')})")


@app.command()
@user_errors
def report(
    sweep_dir: Annotated[Path, typer.Argument(help="A sweep directory written by `tsprune sweep run`, or a results "
                                                   "table (.parquet/.csv) exported from one.")],
    out: Annotated[Path, typer.Option(help="Report directory (report.md, report.html, figures/).")] = Path("report"),
    title: Annotated[str, typer.Option()] = "tsprune sweep report",
    readme: Annotated[Optional[Path], typer.Option(help="Also write the findings into this file's findings block "
                                                        "(the README's).")] = None,
) -> None:
    """Write the study's figures and tables for a sweep: markdown, self-contained HTML, PNG and SVG."""
    from tsprune.report import build_report
    from tsprune.report.render import update_readme
    from tsprune.sweep.store import read_results

    frame = read_results(sweep_dir)
    if frame.empty:
        raise TsPruneError(f"{sweep_dir} holds no runs yet: run `tsprune sweep run SPEC --dir DIR` first")
    if readme is not None and not readme.is_file():
        raise TsPruneError(f"{readme} not found: --readme takes the file whose findings block to update")
    path = build_report(frame, out, title=title)
    console.print(f"[green]report written:[/green] {path} (and {path.with_suffix('.html')})")
    if readme is not None:
        update_readme(readme, out)
        console.print(f"findings written into {readme}", highlight=False)


sweep_app = typer.Typer(no_args_is_help=True, help="Plan and run sweeps (models x datasets x horizons x methods x "
                        "densities x fine-tuning x seeds, dataset-size and model-size studies).")
app.add_typer(sweep_app, name="sweep")
SPEC_HELP = "A sweep spec: a YAML file, or a preset (paper, paper-mini, study-etth1)."


@sweep_app.command("plan")
@user_errors
def sweep_plan(spec: Annotated[str, typer.Argument(help=SPEC_HELP)]) -> None:
    """Count the dense trainings and pruning runs of a sweep and estimate its cost."""
    from tsprune.sweep import load_spec, plan_sweep
    from tsprune.sweep.cost import estimate
    from tsprune.sweep.tables import plan_lines, plan_table

    loaded = load_spec(spec)
    planned = plan_sweep(loaded)
    for line in plan_lines(planned, estimate(planned), spec):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(plan_table(planned))


@sweep_app.command("run")
@user_errors
def sweep_run(
    spec: Annotated[str, typer.Argument(help=SPEC_HELP)],
    sweep_dir: Annotated[Path, typer.Option("--dir", help="Sweep directory (records, runs, results.parquet).")],
    executor: Annotated[str, typer.Option(help="local or ray.")] = "local",
    workers: Annotated[Optional[int], typer.Option(help="Concurrent runs (local default 1; ray default: one per "
                                                        "CPU); each gets cores // workers threads unless --threads.")]
    = None,
    address: Annotated[Optional[str], typer.Option(help="Ray: auto or ray://HOST:PORT (default: a local Ray "
                                                        "runtime).")] = None,
    retry_failed: Annotated[bool, typer.Option(help="Run failed runs again.")] = False,
    gpus_per_run: Annotated[float, typer.Option(help="Ray: GPUs each run asks for.")] = 0.0,
    threads: Annotated[Optional[int], typer.Option(help="Torch threads per run (default: cores // workers).")]
    = None,
    progress: Annotated[bool, typer.Option(help="Live progress bar (off: one log line per run).")] = True,
) -> None:
    """Run a sweep, or resume it: runs already recorded in --dir are skipped."""
    from tsprune.sweep import load_spec, run_sweep

    outcome = run_sweep(load_spec(spec), sweep_dir, executor=executor, workers=workers, address=address,
                        retry_failed=retry_failed, gpus_per_run=gpus_per_run, threads=threads, progress=progress,
                        console=err_console)
    console.print(f"{outcome.done} run(s) done, {outcome.failed} failed, {outcome.skipped} already recorded, in "
                  f"{outcome.seconds:.0f}s; results: {outcome.results}", highlight=False, soft_wrap=True)


@sweep_app.command("measure")
@user_errors
def sweep_measure(
    sweep_dir: Annotated[Path, typer.Option("--dir", help="Sweep directory written by `tsprune sweep run`.")],
    threads: Annotated[Optional[int], typer.Option(help="Threads (default: each run's own).")] = None,
    repeats: Annotated[Optional[int], typer.Option(help="Timed passes (default: each run's own).")] = None,
    models: Annotated[Optional[str], typer.Option(help="Only these models (comma-separated).")] = None,
    redo: Annotated[bool, typer.Option(help="Time again runs an earlier pass timed with these settings.")] = False,
) -> None:
    """The measuring pass: time the kept prune runs again, in alternation with their dense run, on a quiet machine."""
    from tsprune.sweep.remeasure import remeasure

    chosen = [name.strip() for name in models.split(",") if name.strip()] if models else None
    outcome = remeasure(sweep_dir, threads=threads, repeats=repeats, redo=redo, models=chosen,
                        say=lambda line: err_console.print(line, highlight=False))
    console.print(f"{len(outcome.measured)} run(s) timed, {len(outcome.current)} already timed by a pass, "
                  f"{len(outcome.no_weights)} without weights here (keep their in-sweep timing); results: "
                  f"{outcome.results}", highlight=False, soft_wrap=True)


@app.command()
@user_errors
def results(
    sweep_dir: Annotated[Path, typer.Argument(help="A sweep directory written by `tsprune sweep run`.")],
    sql: Annotated[Optional[str], typer.Option(help="DuckDB SQL over a view named `runs`.")] = None,
    export: Annotated[Optional[Path], typer.Option(help="Write the table to a .parquet or .csv file.")] = None,
) -> None:
    """Summarise a sweep's results, query them with SQL, or export them."""
    from tsprune.sweep.store import export as export_results
    from tsprune.sweep.store import load_results, query
    from tsprune.sweep.tables import frame_text, summary_table

    if export is not None:
        console.print(f"wrote {export_results(sweep_dir, export)}", highlight=False, soft_wrap=True)
    if sql is not None:
        console.print(frame_text(query(sweep_dir, sql)), highlight=False, soft_wrap=True, markup=False)
    elif export is None:
        frame = load_results(sweep_dir)
        if frame.empty:
            raise TsPruneError(f"{sweep_dir} has no records yet: run `tsprune sweep run SPEC --dir {sweep_dir}`")
        wide = console if console.is_terminal else Console(width=160)  # logs and pipes get the whole table
        wide.print(summary_table(frame, title=f"{sweep_dir}: {len(frame)} runs"))


def print_metrics(metrics: dict[str, Any], title: str, stored: dict[str, Any] | None = None) -> None:
    table = Table("metric", "value", *(["stored"] if stored else []), title=title)
    for key in ("mse", "mae", "mse_raw", "mae_raw", "params", "epochs_run", "best_epoch", "train_seconds"):
        if key in metrics:
            value = metrics[key]
            cells = [key, f"{value:.6g}" if isinstance(value, float) else str(value)]
            if stored:
                old = stored.get(key)
                cells.append("" if old is None else (f"{old:.6g}" if isinstance(old, float) else str(old)))
            table.add_row(*cells)
    console.print(table)


def show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """Warnings on the command line: one line on stderr, without the source location."""
    err_console.print(f"[yellow]note:[/yellow] {message}", highlight=False, soft_wrap=True)


def main() -> None:
    warnings.showwarning = show_warning
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
