"""The study's pruning table for trained dense runs: test MSE, density, FLOPs and measured speedup per method.

    python benchmarks/prune_table.py RUN_DIR [RUN_DIR ...] [--unstructured 1,0.512,0.262,0.107]
        [--depgraph 0.8,0.5,0.25] [--batch-sizes 1,32] [--threads 2] [--repeats 10] [--json out.json]

Each dense run is measured once and every pruned variant against it in the same process (no fine-tuning unless
``--finetune-epochs``). Prints a markdown table; measures only, asserts nothing about time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from tsprune import api
from tsprune.config import PruneConfig
from tsprune.errors import TsPruneError
from tsprune.report.render import markdown_table
from tsprune.prune.pipeline import dense_baseline
from tsprune.schedule import parse_densities

cli = typer.Typer(add_completion=False)

COLUMNS = ("model", "method", "target", "mse", "density_total", "flops_ratio", "flops_effective_ratio",
           "speedup_b1", "speedup_b32", "latency_ms_b32")


def row(model: str, method: str, target: float, metrics: dict) -> dict:
    speed = metrics.get("speedup_by_batch_size", {})
    latency = metrics.get("latency", {})
    return {
        "model": model, "method": method, "target": target, "mse": metrics["mse"],
        "density_total": metrics["density_total"], "flops_ratio": metrics["flops_ratio"],
        "flops_effective_ratio": metrics["flops_effective_ratio"],
        "speedup_b1": speed.get("1"), "speedup_b32": speed.get("32"),
        "latency_ms_b32": latency.get("32", {}).get("median_ms"),
    }


def markdown(rows: list[dict]) -> str:
    return markdown_table(rows, COLUMNS, digits=4)


@cli.command()
def main(
    runs: Annotated[list[Path], typer.Argument(help="Trained dense run directories.")],
    unstructured: Annotated[str, typer.Option(help="Global magnitude densities.")] = "1,0.512,0.262,0.107",
    depgraph: Annotated[str, typer.Option(help="DepGraph parameter densities.")] = "0.8,0.5,0.25",
    batch_sizes: Annotated[str, typer.Option()] = "1,32",
    threads: Annotated[Optional[int], typer.Option()] = None,
    repeats: Annotated[int, typer.Option()] = 10,
    finetune_epochs: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option()] = "auto",
    json_out: Annotated[Optional[Path], typer.Option("--json")] = None,
) -> None:
    sizes = tuple(int(b) for b in batch_sizes.split(","))
    plan = [("magnitude", d) for d in parse_densities(unstructured)] + \
           [("depgraph", d) for d in parse_densities(depgraph)]
    rows: list[dict] = []
    for run_dir in runs:
        run = api.load(run_dir)
        name = run.config.model.name
        settings = PruneConfig(batch_sizes=sizes, latency_repeats=repeats, threads=threads, device=device)
        baseline = dense_baseline(run, settings)
        for method, density in plan:
            try:
                pruned = api.prune(run, method, density, baseline=baseline, batch_sizes=sizes,
                                   latency_repeats=repeats, threads=threads, device=device,
                                   finetune_epochs=finetune_epochs)
                rows.append(row(name, method, density, pruned.metrics))
            except TsPruneError as exc:
                rows.append({"model": name, "method": method, "target": density, "error": str(exc)})
            typer.echo(json.dumps(rows[-1]), err=True)
            if json_out is not None:  # written after every row: a long table survives an interruption
                json_out.write_text(json.dumps(rows, indent=2) + "\n")
    typer.echo(markdown(rows))


if __name__ == "__main__":
    cli()
