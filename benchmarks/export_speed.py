"""PyTorch eager vs ONNX Runtime latency of exported runs, dense and DepGraph-pruned, in alternation.

    python benchmarks/export_speed.py RUN_DIR [RUN_DIR ...] [--depgraph 0.25] [--batch-sizes 1,32] [--threads 2]
        [--repeats 20] [--json out.json]

For each dense run: the run itself and its DepGraph-pruned copy (pruned here, in memory) are exported with
``tsprune.export`` (each export is checked against PyTorch on test windows), then PyTorch and ONNX Runtime run the
same real test windows in alternation (pass 1 of each, pass 2 of each, ...) with the same thread count. Prints a
markdown table of medians; measures only, asserts nothing about time.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any, Optional

import torch
import typer
from torch import nn

from tsprune import api
from tsprune.errors import TsPruneError
from tsprune.export import OnnxForecaster, export_run
from tsprune.measure import REWARM_S, compare_latency, example_inputs
from tsprune.runtime import configure_threads

cli = typer.Typer(add_completion=False)


class OnnxModule(nn.Module):
    """ONNX Runtime behind the module interface ``compare_latency`` times (inputs and output as tensors)."""

    def __init__(self, forecaster: OnnxForecaster) -> None:
        super().__init__()
        self.forecaster = forecaster

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.forecaster(*inputs))


def measure_one(run: Any, label: str, batch_sizes: list[int], threads: int, repeats: int,
                folder: Path) -> list[dict[str, Any]]:
    exported = export_run(run, folder / f"{label}.onnx")
    onnx = OnnxModule(OnnxForecaster(exported.path, threads=threads))
    data = run.data()
    rows = []
    for size in batch_sizes:
        timing = compare_latency({"torch": run.model.cpu(), "onnx": onnx}, example_inputs(data, size), repeats,
                                 threads=threads, rewarm_s=REWARM_S)  # ORT's pool spins after each pass
        rows.append({"model": run.config.model.name, "variant": label, "batch_size": size, "threads": threads,
                     "params": sum(p.numel() for p in run.model.parameters()),
                     "torch_ms": timing["torch"]["median_ms"], "onnx_ms": timing["onnx"]["median_ms"],
                     "onnx_speedup": timing["torch"]["median_ms"] / timing["onnx"]["median_ms"],
                     "max_rel_diff": exported.max_rel_diff})
    return rows


@cli.command()
def main(run_dirs: Annotated[list[Path], typer.Argument(help="Dense run directories.")],
         depgraph: Annotated[float, typer.Option(help="DepGraph density for the pruned variant.")] = 0.25,
         batch_sizes: Annotated[str, typer.Option()] = "1,32",
         threads: Annotated[int, typer.Option()] = 2,
         repeats: Annotated[int, typer.Option()] = 20,
         json_out: Annotated[Optional[Path], typer.Option("--json")] = None) -> None:
    sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
    configure_threads(threads)
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for run_dir in run_dirs:
                dense = api.load(run_dir)
                name = dense.config.model.name
                rows += measure_one(dense, f"{name}-dense", sizes, threads, repeats, Path(scratch))
                pruned = api.prune(dense, "depgraph", depgraph, batch_sizes=(max(sizes),), latency_repeats=1,
                                   threads=threads, device="cpu")
                rows += measure_one(pruned, f"{name}-depgraph-{depgraph:g}", sizes, threads, repeats, Path(scratch))
    except TsPruneError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo("| model | variant | batch | PyTorch ms | ONNX Runtime ms | ORT speedup | max rel diff |")
    typer.echo("|---|---|---|---|---|---|---|")
    for row in rows:
        typer.echo(f"| {row['model']} | {row['variant'].split('-', 1)[1]} | {row['batch_size']} | "
                   f"{row['torch_ms']:.2f} | {row['onnx_ms']:.2f} | {row['onnx_speedup']:.2f}x | "
                   f"{row['max_rel_diff']:.1e} |")
    if json_out is not None:
        json_out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    cli()
