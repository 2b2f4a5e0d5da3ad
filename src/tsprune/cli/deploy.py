"""Commands that deploy a run: compile it for the sparse engine, export it to ONNX or a PyTorch 2 package, and
forecast with it on any of those engines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from tsprune.cli.app import app, console, user_errors


@app.command()
@user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory: dense, magnitude- or DepGraph-pruned, or (pt2 "
                                                 "only) compiled for the sparse engine.")],
    out: Annotated[Path, typer.Option(help="The file to write: .onnx or .pt2 (a JSON sidecar goes beside it).")],
    format: Annotated[Optional[str], typer.Option(
        "--format", help="onnx (ONNX Runtime) or pt2 (torch.export + AOTInductor package; a sparse-compiled run keeps "
                         "its sparse kernels, whose op library is written beside it). Default: from --out's suffix.")]
    = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Fix the batch size (default: any batch size).")] = None,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch", help="Any batch size (the default; not with "
                                                                  "--batch-size).")] = False,
) -> None:
    """Export a run to ONNX or a PyTorch 2 package, checked against PyTorch on real test windows."""
    from tsprune import api
    from tsprune.errors import TsPruneError

    if dynamic_batch and batch_size is not None:
        raise TsPruneError("give --batch-size or --dynamic-batch, not both")
    chosen = format or ("pt2" if out.suffix == ".pt2" else "onnx")
    exported = api.export(run_dir, out, batch_size=batch_size, format=chosen)
    runtime = "ONNX Runtime" if chosen == "onnx" else "the AOTInductor package"
    console.print(f"wrote {exported.path} and {exported.sidecar.name}: {runtime} matches PyTorch within "
                  f"{exported.max_rel_diff:.1e} (relative) on {exported.windows} test windows; "
                  f"{exported.seconds:.0f}s", highlight=False, soft_wrap=True)


@app.command(name="compile")
@user_errors
def compile_command(
    run_dir: Annotated[Path, typer.Argument(help="A pruned run directory.")],
    out: Annotated[Path, typer.Option(help="Directory for the compiled run.")],
    engine: Annotated[str, typer.Option(
        help="sparse (tsprune's own kernel, torch CSR/BSR: where they measure faster).")] = "sparse",
    batch_size: Annotated[int, typer.Option(help="The batch size to optimise for.")] = 32,
    min_speedup: Annotated[float, typer.Option(help="A layer goes sparse only if at least this much faster.")] = 1.05,
    repeats: Annotated[int, typer.Option(help="Timed passes per candidate kernel.")] = 10,
    threads: Annotated[Optional[int], typer.Option()] = None,
    device: Annotated[str, typer.Option()] = "auto",
) -> None:
    """Run each pruned layer on the kernel that measures fastest here (pcsr, CSR, BSR or dense)."""
    from tsprune import api

    run = api.compile_run(run_dir, batch_size, out, engine=engine, threads=threads, min_speedup=min_speedup,
                          repeats=repeats, device=device)
    assert run.sparse_plan is not None  # a compiled run always has its plan
    table = Table("layer", "density", "kernel", "dense ms", "chosen ms", title=f"{run_dir} -> {out}")
    for name, layer in run.sparse_plan["layers"].items():
        block = f" {layer['block']}" if layer.get("block") else ""
        table.add_row(name, f"{layer['density']:.3f}", layer["kernel"] + block,
                      f"{layer['dense_ms']:.3f}" if layer.get("dense_ms") is not None else "-",
                      f"{layer['chosen_ms']:.3f}" if layer.get("chosen_ms") is not None else "-")
    console.print(table)
    m = run.metrics
    # the engine's whole-model choices: kept or not, with the two timings
    for key, what, count in (("epilogues", "feed-forward activations", "layers"),
                             ("attention", "short attention", "modules")):
        entry = run.sparse_plan.get(key)
        if entry:
            timed = ", ".join(f"{ms:.2f} ms {variant}" for variant, ms in entry.get("ms", {}).items())
            times = f" ({timed})" if timed else ""
            console.print(f"{what}: {entry['kernel']} in {len(entry[count])} {count}{times}", highlight=False)
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
    engine: Annotated[Optional[str], typer.Option(help="dense, sparse, onnx or pt2 (default: as the run was saved; "
                                                       "sparse compiles a pruned run for batch 1 first; onnx runs "
                                                       "the exported file in ONNX Runtime, pt2 the exported "
                                                       "PyTorch 2 package).")] = None,
    onnx: Annotated[Optional[Path], typer.Option(help="--engine onnx or pt2: the file `tsprune export` wrote "
                                                      "(default: RUN_DIR/model.onnx or RUN_DIR/model.pt2).")] = None,
    device: Annotated[str, typer.Option()] = "auto",
) -> None:
    """Forecast the pred_len steps after the end of the data, in original units, with continuing timestamps."""
    from tsprune import api
    from tsprune.forecast import read_history

    run = api.load(run_dir)
    history = read_history(run, dataset, data_path)
    forecast = api.predict(run, history, engine=engine, device=device, onnx=onnx)
    out.parent.mkdir(parents=True, exist_ok=True)
    forecast.to_csv(out, index=False)
    console.print(f"wrote {len(forecast)} forecast rows to {out}")
    if plot is not None:
        from tsprune.plots import plot_forecast

        names = [c.strip() for c in channels.split(",")] if channels else None
        console.print(f"wrote {plot_forecast(history, forecast, plot, names)}")
