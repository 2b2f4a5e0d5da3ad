"""Where does inference time go before and after pruning? A per-operator profile, side by side.

    python benchmarks/profile_ops.py --models Transformer,Autoformer --density 0.25 --batch-size 32 --threads 2
        [--variant depgraph|sparse] [--round-to 8] [--passes 5] [--top 12] [--json OUT.json]

Per model (default size, ETTh1/96, seeded random weights): the dense model and its pruned copy at the given
parameter density (``depgraph``: DepGraph-pruned; ``sparse``: global magnitude masks on the sparse engine,
``tsprune compile`` at the batch size profiled) run ``passes`` inference passes each under ``torch.profiler``; the
table lists the operators with the most self CPU time in either model, their time per pass in both, and each
operator's own speedup, next to the model's FLOPs reduction. Operators whose speedup stays far below the FLOPs
reduction are what keeps the measured speedup down. Measures only, asserts nothing.
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from torch import nn
from torch.profiler import ProfilerActivity, profile

from tsprune.config import DataConfig
from tsprune.data.dataset import prepare_data
from tsprune.measure import count_flops, example_inputs
from tsprune.models.registry import build_model, default_config
from tsprune.prune.structured import prune_to_density
from tsprune.prune.unstructured import prune_magnitude
from tsprune.sparse.engine import compile_sparse
from tsprune.report.render import markdown_table

cli = typer.Typer(add_completion=False)


def operator_times(model: nn.Module, inputs: tuple, passes: int) -> dict[str, float]:
    """Self CPU milliseconds per pass of each aten operator, from ``passes`` profiled inference passes."""
    with torch.inference_mode():
        for _ in range(2):  # warm-up: allocator, MKL/oneDNN primitive caches
            model(*inputs)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(passes):
                model(*inputs)
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        totals[event.key] += event.self_cpu_time_total / 1e3 / passes
    return dict(totals)


def pruned_copy(dense: nn.Module, variant: str, density: float, inputs_1: tuple, inputs: tuple,
                round_to: int | None) -> tuple[nn.Module, float, int | None]:
    """``(model, density, round_to)`` of the ``variant`` of ``dense`` at ``density``."""
    if variant == "sparse":
        masked = copy.deepcopy(dense)
        _, report = prune_magnitude(masked, density, "global")
        compiled, _ = compile_sparse(masked, inputs, threads=torch.get_num_threads())
        return compiled.eval(), report["density_total"], None
    pruned, result = prune_to_density(copy.deepcopy(dense), inputs_1, density, round_to=round_to, timeout_s=600)
    return pruned.eval(), result.density, result.round_to


def profile_model(name: str, density: float, batch_size: int, round_to: int | None, passes: int,
                  top: int, variant: str = "depgraph") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    data = prepare_data(DataConfig(dataset="ETTh1", pred_len=96))
    config = default_config(name, enc_in=data.enc_in, dec_in=data.enc_in, c_out=data.c_out,
                            n_time_features=data.n_time_features)
    torch.manual_seed(0)
    dense = build_model(config).eval()
    inputs_1, inputs = example_inputs(data, 1), example_inputs(data, batch_size)
    pruned, kept, rounded = pruned_copy(dense, variant, density, inputs_1, inputs, round_to)
    flops = count_flops(pruned, inputs_1)
    reduction = count_flops(dense, inputs_1)["flops"] / flops.get("flops_effective", flops["flops"])
    before, after = operator_times(dense, inputs, passes), operator_times(pruned, inputs, passes)
    total_before, total_after = sum(before.values()), sum(after.values())
    rows = []
    for op in sorted(set(before) | set(after), key=lambda op: max(before.get(op, 0.0), after.get(op, 0.0)),
                     reverse=True)[:top]:
        ms_after = after.get(op, 0.0)
        ms_before = before.get(op, 0.0)
        rows.append({"model": name, "operator": op, "dense_ms": ms_before, "pruned_ms": ms_after,
                     "share_dense": ms_before / total_before, "share_pruned": ms_after / total_after,
                     "op_speedup": ms_before / ms_after if ms_after else float("inf")})
    summary = {"model": name, "variant": variant, "density": kept, "round_to": rounded, "flops_reduction": reduction,
               "dense_ms": total_before, "pruned_ms": total_after, "profiled_speedup": total_before / total_after,
               "efficiency": total_before / total_after / reduction, "batch_size": batch_size,
               "threads": torch.get_num_threads()}
    return rows, summary


@cli.command()
def main(
    models: Annotated[str, typer.Option(help="Comma-separated model names.")] = "Transformer",
    density: Annotated[float, typer.Option(help="DepGraph parameter density.")] = 0.25,
    batch_size: Annotated[int, typer.Option()] = 32,
    threads: Annotated[int | None, typer.Option()] = None,
    round_to: Annotated[int | None, typer.Option(help="Keep channel counts multiples of this.")] = None,
    passes: Annotated[int, typer.Option(help="Profiled passes per model.")] = 5,
    top: Annotated[int, typer.Option(help="Operators listed per model.")] = 12,
    variant: Annotated[str, typer.Option(help="depgraph (channels removed) or sparse (magnitude masks on the "
                                              "sparse engine).")] = "depgraph",
    json_out: Annotated[Path | None, typer.Option("--json")] = None,
) -> None:
    if variant not in ("depgraph", "sparse"):
        raise typer.BadParameter("use depgraph or sparse", param_hint="--variant")
    if threads is not None:
        torch.set_num_threads(threads)
    rows: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    for name in [m for m in models.split(",") if m]:
        found, summary = profile_model(name, density, batch_size, round_to, passes, top, variant)
        rows += found
        summaries.append(summary)
        typer.echo(json.dumps(summary), err=True)
    typer.echo(markdown_table(summaries, ("model", "variant", "density", "round_to", "flops_reduction", "dense_ms",
                                          "pruned_ms", "profiled_speedup", "efficiency"), digits=3))
    typer.echo("")
    typer.echo(markdown_table(rows, ("model", "operator", "dense_ms", "pruned_ms", "share_dense", "share_pruned",
                                     "op_speedup"), digits=3))
    if json_out is not None:
        json_out.write_text(json.dumps({"summary": summaries, "operators": rows}, indent=2) + "\n")


if __name__ == "__main__":
    cli()
