"""Does sparsity pay? Latency of masked, sparse-compiled and DepGraph-pruned forecasters against the dense model.

    python benchmarks/speedup.py --models Transformer,Informer --densities 0.107 --batch-sizes 1,32
        [--threads 2] [--repeats 10] [--compile-repeats 5] [--runs RUN_DIR ...] [--json OUT.json]
        [--round-to N] [--heads dims|heads] [--method magnitude|magnitude-layerwise] [--no-depgraph]

Per model (default size, ETTh1, pred_len 96, random weights; or the trained ``--runs`` directories instead) and
density: ``masked`` zeroes weights by global magnitude (same dense kernels), ``sparse`` is that model after
``compile_sparse`` at the batch size measured, ``depgraph`` removes channels to the same parameter density. All
four models are timed in alternation (``compare_latency``), so ratios stay honest on a busy machine.
Measures only, asserts nothing. Records: ``model, engine, density, batch_size, flops_reduction, ideal (1/density),
speedup, efficiency (speedup / flops_reduction), latency_ms, dense_ms, threads`` and extras per engine.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from torch import nn

from tsprune.config import DataConfig
from tsprune.data.dataset import ForecastData, prepare_data
from tsprune.errors import TsPruneError
from tsprune.report.render import markdown_table
from tsprune.measure import compare_latency, count_flops, example_inputs
from tsprune.models.registry import build_model, default_config
from tsprune.sparse.engine import compile_sparse
from tsprune.prune.structured import prune_to_density
from tsprune.prune.unstructured import parse_densities, prune_magnitude
from tsprune.run import load_run

cli = typer.Typer(add_completion=False)

COLUMNS = ("model", "engine", "density", "batch_size", "flops_reduction", "ideal", "speedup", "efficiency",
           "latency_ms", "note")


def random_model(name: str, data: ForecastData) -> nn.Module:
    """The model at its default size, shaped for ``data``, with seeded random weights."""
    config = default_config(name, enc_in=data.enc_in, dec_in=data.enc_in, c_out=data.c_out,
                            n_time_features=data.n_time_features)
    torch.manual_seed(0)
    return build_model(config).eval()


SCOPE_OF = {"magnitude": "global", "magnitude-layerwise": "uniform"}  # the unstructured methods' weight ranking


def variants(model: nn.Module, density: float, inputs_1: tuple, round_to: int | None = None,
             heads: str = "dims", method: str = "magnitude", depgraph: bool = True) -> dict[str, Any]:
    """The masked (``method``) and DepGraph-pruned copies of ``model`` at ``density`` with their FLOP reductions."""
    dense_flops = count_flops(model, inputs_1)["flops"]
    masked = copy.deepcopy(model)
    _, report = prune_magnitude(masked, density, SCOPE_OF[method])
    out: dict[str, Any] = {"masked": masked, "masked_density": report["density_total"],
                           "masked_reduction": dense_flops / count_flops(masked, inputs_1)["flops_effective"]}
    if not depgraph:
        out.update(depgraph=None, depgraph_note="not asked for")
        return out
    try:
        pruned, result = prune_to_density(model, inputs_1, density, heads=heads, round_to=round_to, timeout_s=300)
        note = result.reason or f"round_to {result.round_to or 1}, heads {heads}"
        out.update(depgraph=pruned.eval(), depgraph_density=result.density, depgraph_note=note,
                   depgraph_reduction=dense_flops / count_flops(pruned, inputs_1)["flops"])
    except TsPruneError as exc:
        out.update(depgraph=None, depgraph_note=f"failed: {exc}"[:120])
    return out


def record(name: str, engine: str, density: float, size: int, reduction: float, timing: dict, dense: dict,
           **extra: Any) -> dict[str, Any]:
    speedup = dense["median_ms"] / timing["median_ms"]
    return {"model": name, "engine": engine, "density": density, "batch_size": size, "flops_reduction": reduction,
            "ideal": 1.0 / density, "speedup": speedup, "efficiency": speedup / reduction,
            "latency_ms": timing["median_ms"], "iqr_ms": timing["iqr_ms"], "dense_ms": dense["median_ms"],
            "threads": timing["threads"], "repeats": timing["repeats"], "device": timing["device"],
            "torch": timing["torch"], **extra}


def measure_batch(name: str, model: nn.Module, found: dict[str, Any], density: float, data: ForecastData,
                  size: int, threads: int | None, repeats: int, compile_repeats: int) -> list[dict[str, Any]]:
    inputs = example_inputs(data, size)
    start = time.perf_counter()
    sparse, plan = compile_sparse(copy.deepcopy(found["masked"]), inputs, threads=threads, repeats=compile_repeats)
    compile_s = time.perf_counter() - start
    kernels = [entry["kernel"] for entry in plan["layers"].values()]
    chosen = {kernel: kernels.count(kernel) for kernel in ("pcsr", "csr", "bsr", "zero", "skip", "dense")}
    models = {"dense": model, "masked": found["masked"], "sparse": sparse}
    if found["depgraph"] is not None:
        models["depgraph"] = found["depgraph"]
    timings = compare_latency(models, inputs, repeats=repeats, threads=threads)
    dense = timings["dense"]
    rows = [record(name, "dense", 1.0, size, 1.0, dense, dense, density_actual=1.0),
            record(name, "masked", density, size, found["masked_reduction"], timings["masked"], dense,
                   density_actual=found["masked_density"])]
    note = (f"{chosen['pcsr']} pcsr + {chosen['csr']} csr + {chosen['bsr']} bsr + {chosen['zero']} zero + "
            f"{chosen['skip']} skipped "
            f"of {len(kernels)} pruned layers")
    rows.append(record(name, "sparse", density, size, found["masked_reduction"], timings["sparse"], dense,
                       density_actual=found["masked_density"], note=note, sparse_layers=chosen,
                       compile_s=compile_s, plan=plan))
    if found["depgraph"] is not None:
        rows.append(record(name, "depgraph", density, size, found["depgraph_reduction"], timings["depgraph"], dense,
                           density_actual=found["depgraph_density"], note=found["depgraph_note"]))
    else:
        rows.append({"model": name, "engine": "depgraph", "density": density, "batch_size": size,
                     "note": found["depgraph_note"]})
    return rows


def markdown(rows: list[dict]) -> str:
    return markdown_table(rows, COLUMNS, digits=3)


def sources(models: str, runs: list[Path]) -> list[tuple[str, nn.Module, ForecastData]]:
    if runs:
        loaded = [load_run(path) for path in runs]
        return [(run.config.model.name, run.model.eval(), run.data()) for run in loaded]
    data = prepare_data(DataConfig(dataset="ETTh1", pred_len=96))
    return [(name, random_model(name, data), data) for name in models.split(",") if name]


@cli.command()
def main(
    models: Annotated[str, typer.Option(help="Comma-separated model names (ignored with --runs).")] = "Transformer",
    densities: Annotated[str, typer.Option(help="Target densities, e.g. 0.107 or 0.5,0.107.")] = "0.107",
    batch_sizes: Annotated[str, typer.Option()] = "1,32",
    threads: Annotated[int | None, typer.Option()] = None,
    repeats: Annotated[int, typer.Option(help="Timed passes per model (compare_latency).")] = 10,
    compile_repeats: Annotated[int, typer.Option(help="Timing rounds per layer in compile_sparse.")] = 5,
    runs: Annotated[list[Path] | None, typer.Option(help="Trained run directories instead of random weights.")]
    = None,
    json_out: Annotated[Path | None, typer.Option("--json")] = None,
    round_to: Annotated[int | None, typer.Option(help="DepGraph channel rounding (default: 8 for wide models, "
                                                      "1: exact counts).")] = None,
    heads: Annotated[str, typer.Option(help="DepGraph: dims (equal dims per head) | heads (whole heads).")] = "dims",
    method: Annotated[str, typer.Option(help="The masked model's method: magnitude (global, the study's) or "
                                             "magnitude-layerwise (every tensor at the density).")] = "magnitude",
    no_depgraph: Annotated[bool, typer.Option("--no-depgraph", help="Skip the DepGraph variant.")] = False,
) -> None:
    if method not in SCOPE_OF:
        raise typer.BadParameter(f"use one of {', '.join(SCOPE_OF)}", param_hint="--method")
    sizes = [int(b) for b in batch_sizes.split(",")]
    rows: list[dict] = []
    for name, model, data in sources(models, runs or []):
        inputs_1 = example_inputs(data, 1)
        for density in parse_densities(densities):
            found = variants(model, density, inputs_1, round_to, heads, method, not no_depgraph)
            for size in sizes:
                batch_rows = measure_batch(name, model, found, density, data, size, threads, repeats,
                                           compile_repeats)
                rows += batch_rows
                for row in batch_rows:
                    typer.echo(json.dumps({k: v for k, v in row.items() if k != "plan"}), err=True)
                if json_out is not None:  # after every batch: a long benchmark survives an interruption
                    json_out.write_text(json.dumps(rows, indent=2) + "\n")
    typer.echo(markdown(rows))


if __name__ == "__main__":
    cli()
