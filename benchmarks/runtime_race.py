"""The runtime race: every way tsprune can run a forecaster, dense and sparse, timed in one alternating loop.

    python benchmarks/runtime_race.py [--models Transformer,Informer,Autoformer,FEDformer,Crossformer]
        [--density 0.107] [--batch-sizes 1,32] [--threads 2] [--repeats 20] [--rewarm 0.06] [--train-steps 1]
        [--masks magnitude,magnitude-layerwise] [--engines ...] [--json OUT.json]
    python benchmarks/runtime_race.py --from-json RACE.json [--readme docs/results/speed.md] [--summary README.md]

Per model (default size, ETTh1, pred_len 96, weights after ``--train-steps`` optimiser steps) and batch size, up to
nine engines run the same real test windows in alternation (``tsprune.measure.compare_latency``: pass 1 of each,
pass 2 of each, the order reversed every other pass), so a load change on the machine moves all of them alike;
before every timed pass, the same engine runs untimed for ``--rewarm`` seconds, so each is timed in its own steady
state and not in the spin of the engine before (ONNX Runtime's pool keeps a core busy for 40-50 ms after a pass:
``tsprune.measure.REWARM_S``):

- dense: ``eager`` (PyTorch), ``inductor`` (``torch.compile``), ``ort`` (``tsprune export``, ONNX Runtime),
  ``engine`` (``tsprune compile`` of the dense run: tsprune's engine with nothing to sparsify, whose fused
  short attention counts as a dense gain);
- per mask method at ``--density`` (``magnitude``: one global threshold, the study's; ``magnitude-layerwise``: every
  tensor at the density, so no layer is emptied): ``sparse`` (``tsprune compile`` at that batch size, eager),
  ``sparse-inductor`` (that model under ``torch.compile``, the kernel a custom op) and ``pt2`` (``tsprune export
  --format pt2`` of the compiled run at that batch size, AOTInductor, no Python model code).

Prints one markdown table: milliseconds per engine (median), the fastest dense and the fastest sparse engine per
mask, and their ratio. Measures only, asserts nothing about time. Every export is checked against PyTorch on test
windows before it is timed (the exports' own check). With ``--json``, rows are written after every model, so an
interrupted race keeps what it measured.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import torch
import typer
from torch import nn

from oneshot_table import replace_block
from speedup import SCOPE_OF
from tsprune import api
from tsprune.errors import TsPruneError, exception_line
from tsprune.export import OnnxForecaster, export_run
from tsprune.export_pt2 import Pt2Forecaster, export_pt2
from tsprune.measure import REWARM_S, compare_latency, example_inputs
from tsprune.prune.unstructured import prune_magnitude
from tsprune.run import Run
from tsprune.runtime import configure_threads, cpu_name

cli = typer.Typer(add_completion=False)

MODELS = ("Transformer", "Informer", "Autoformer", "FEDformer", "Crossformer")
MASKS = SCOPE_OF  # mask method -> prune_magnitude's scope, as benchmarks/speedup.py masks
DENSE = ("eager", "inductor", "ort", "engine")
SPARSE = ("sparse", "sparse-inductor", "pt2")


class ArrayModule(nn.Module):
    """A deployed artifact (ONNX Runtime session, AOTInductor package) behind the module interface
    ``compare_latency`` times: tensors in, a tensor out."""

    def __init__(self, forecaster: Callable[..., Any]) -> None:
        super().__init__()
        self.forecaster = forecaster

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.forecaster(*inputs))


def trained(name: str, steps: int, hyper: dict[str, Any]) -> Run:
    """The model on ETTh1/96 at its default size (``hyper``: overrides) after ``steps`` optimiser steps."""
    config = api.make_config(name, data={"dataset": "ETTh1", "pred_len": 96},
                             train={"epochs": 1, "max_steps": steps}, **hyper)
    return api.train(config, progress=False)


def masked(run: Run, method: str, density: float) -> Run:
    """A copy of ``run`` with magnitude masks at ``density`` (``method`` names the scope: see :data:`MASKS`)."""
    model = copy.deepcopy(run.model)
    _, report = prune_magnitude(model, density, MASKS[method])
    return dataclasses.replace(run, model=model, metrics={"density_total": report["density_total"]})


def inductor(model: nn.Module) -> nn.Module:
    """``model`` under ``torch.compile`` (inductor, static shapes: one graph per batch size, compiled at warm-up)."""
    return torch.compile(copy.deepcopy(model).eval(), dynamic=False)  # type: ignore[return-value]


def engines(run: Run, size: int, masks: list[str], density: float, threads: int, wanted: set[str],
            folder: Path) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    """The engines of one model at batch size ``size``: name -> module, and facts (plans, export checks, build
    seconds) per engine."""
    name = run.config.model.name
    built: dict[str, nn.Module] = {}
    facts: dict[str, Any] = {}

    def add(key: str, make: Callable[[], nn.Module]) -> None:
        if key.split("/")[-1] not in wanted:
            return
        start = time.perf_counter()
        try:
            built[key] = make()
            facts[key] = {**facts.get(key, {}), "build_s": time.perf_counter() - start}
        except (TsPruneError, RuntimeError, AssertionError) as exc:
            facts[key] = {"failed": exception_line(exc)[:200]}
            typer.echo(f"  {name} b{size} {key}: failed: {facts[key]['failed']}", err=True)

    add("eager", lambda: run.model.eval())
    add("inductor", lambda: inductor(run.model))

    def ort() -> nn.Module:
        onnx = folder / f"{name}-dense.onnx"
        if not onnx.exists():  # dynamic batch: one checked export serves every batch size
            facts["ort"] = {"max_rel_diff": export_run(run, onnx).max_rel_diff}
        return ArrayModule(OnnxForecaster(onnx, threads=threads))

    add("ort", ort)
    # the dense model on tsprune's engine: no layer to sparsify, but its fused short attention where it measures
    # faster (Crossformer): what the engine gains without sparsity counts as dense
    add("engine", lambda: api.compile_run(run, batch_size=size, threads=threads, device="cpu").model.eval())
    for method in masks:
        pruned = masked(run, method, density)
        compiled = api.compile_run(pruned, batch_size=size, threads=threads, device="cpu")
        facts[f"{method}/sparse"] = {"density_total": pruned.metrics["density_total"],
                                     "layers": {k: v for k, v in compiled.metrics.items() if k.startswith("n_")}}
        add(f"{method}/sparse", lambda: compiled.model.eval())
        add(f"{method}/sparse-inductor", lambda: inductor(compiled.model))

        def pt2(method: str = method, compiled: Run = compiled) -> nn.Module:
            exported = export_pt2(compiled, folder / f"{name}-{method}-b{size}.pt2", batch_size=size)
            facts[f"{method}/pt2"] = {"max_rel_diff": exported.max_rel_diff}
            return ArrayModule(Pt2Forecaster(exported.path))

        add(f"{method}/pt2", pt2)
    return built, facts


def race(run: Run, size: int, masks: list[str], density: float, threads: int, repeats: int, wanted: set[str],
         folder: Path, rewarm: float = REWARM_S) -> dict[str, Any]:
    """One model at one batch size: every engine timed in one alternating loop."""
    models, facts = engines(run, size, masks, density, threads, wanted, folder)
    inputs = example_inputs(run.data(), size)
    timings = compare_latency(models, inputs, repeats=repeats, threads=threads, rewarm_s=rewarm)
    ms = {key: timing["median_ms"] for key, timing in timings.items()}
    row: dict[str, Any] = {"model": run.config.model.name, "batch_size": size, "threads": threads,
                           "density": density, "ms": ms, "iqr_ms": {k: t["iqr_ms"] for k, t in timings.items()},
                           "facts": facts}
    dense = {key: ms[key] for key in DENSE if key in ms}
    if dense:
        row["fastest_dense"] = min(dense, key=dense.__getitem__)
    for method in masks:
        sparse = {key: ms[f"{method}/{key}"] for key in SPARSE if f"{method}/{key}" in ms}
        if sparse and dense:
            best = min(sparse, key=sparse.__getitem__)
            row[f"{method}/fastest"] = best
            row[f"{method}/ratio"] = dense[row["fastest_dense"]] / sparse[best]
            if "pt2" in sparse:
                row[f"{method}/pt2_vs_fastest"] = sparse["pt2"] / sparse[best]
    return row


def table(rows: list[dict[str, Any]], masks: list[str]) -> str:
    """Markdown: per model and batch, ms per engine, the fastest dense and sparse, and their ratio."""
    keys = [key for key in DENSE if any(key in row["ms"] for row in rows)]
    sparse = [f"{m}/{k}" for m in masks for k in SPARSE if any(f"{m}/{k}" in row["ms"] for row in rows)]
    head = ["model", "batch", *keys, *sparse, "fastest dense",
            *[f"{m}: fastest sparse" for m in masks], *[f"{m}: sparse vs fastest dense" for m in masks]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["model"], str(row["batch_size"])]
        cells += [f"{row['ms'][k]:.1f}" if k in row["ms"] else "fails" if "failed" in row["facts"].get(k, {}) else "-"
                  for k in [*keys, *sparse]]
        cells.append(row.get("fastest_dense", "-"))
        cells += [row.get(f"{m}/fastest", "-") for m in masks]
        cells += [f"{row[f'{m}/ratio']:.2f}x" if f"{m}/ratio" in row else "-" for m in masks]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def raced_masks(rows: list[dict[str, Any]]) -> list[str]:
    """The mask methods that ``rows`` have ratios for, in :data:`MASKS` order."""
    return [m for m in MASKS if any(f"{m}/ratio" in row for row in rows)]


def race_markdown(data: dict[str, Any]) -> str:
    """Markdown of a race written by ``--json``: its machine, then :func:`table` of its rows."""
    rows = data["rows"]
    masks = raced_masks(rows)
    passes = f" of {data['repeats']}" if "repeats" in data else ""
    rewarm = (f", each after {data['rewarm_s']:g} s of untimed passes of the same engine" if data.get("rewarm_s")
              else "")
    repeats = f"density {rows[0]['density']:g}, median ms{passes} alternating passes{rewarm}" if rows else "no rows"
    note = f" ({data['note']})" if data.get("note") else ""
    return f"{data['machine']}; {repeats}{note}:\n\n{table(rows, masks)}\n"


def race_summary(data: dict[str, Any]) -> str:
    """Markdown for a front page: per model and batch, the fastest dense engine and, per mask method, the fastest
    sparse artifact, each with its median ms, and their ratio; then one line naming the machine."""
    rows = data["rows"]
    masks = raced_masks(rows)
    head = ["model", "batch", "fastest dense", *[f"{m}: fastest sparse (ratio)" for m in masks]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        dense = row.get("fastest_dense")
        cells = [row["model"], str(row["batch_size"]), f"{dense} {row['ms'][dense]:.1f} ms" if dense else "-"]
        for m in masks:
            best = row.get(f"{m}/fastest")
            cells.append(f"{best} {row['ms'][f'{m}/{best}']:.1f} ms ({row[f'{m}/ratio']:.2f}x)" if best else "-")
        lines.append("| " + " | ".join(cells) + " |")
    density = f", density {rows[0]['density']:g}" if rows else ""
    return "\n".join(lines) + f"\n\n{data['machine']}{density} (`benchmarks/runtime_race.py`).\n"


def machine() -> str:
    from tsprune.sparse import kernel
    return f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, kernel ISA {kernel.isa()}"


@cli.command()
def main(
    models: Annotated[str, typer.Option(help="Comma-separated model names.")] = ",".join(MODELS),
    density: Annotated[float, typer.Option(help="Density of the sparse variants.")] = 0.107,
    batch_sizes: Annotated[str, typer.Option()] = "1,32",
    threads: Annotated[int, typer.Option()] = 2,
    repeats: Annotated[int, typer.Option(help="Timed passes per engine.")] = 20,
    rewarm: Annotated[float, typer.Option(help="Seconds of untimed passes of an engine before each of its timed "
                                               "passes (its steady state; the previous engine's pool stops "
                                               "spinning).")] = REWARM_S,
    train_steps: Annotated[int, typer.Option(help="Optimiser steps before timing (weights' provenance).")] = 1,
    masks: Annotated[str, typer.Option(help="Mask methods: magnitude, magnitude-layerwise.")] =
    "magnitude,magnitude-layerwise",
    engine_names: Annotated[str, typer.Option("--engines", help="Engines to race.")] = ",".join(DENSE + SPARSE),
    overrides: Annotated[str, typer.Option("--set", help="Model overrides as JSON (tests: a tiny size).")] = "",
    json_out: Annotated[Optional[Path], typer.Option("--json")] = None,
    from_json: Annotated[Optional[Path], typer.Option(help="Race nothing: print the table of this --json file.")]
    = None,
    readme: Annotated[Optional[Path], typer.Option(help="With --from-json: also write the table into this page's "
                                                        "runtime-race block.")] = None,
    summary: Annotated[Optional[Path], typer.Option(help="With --from-json: also write the short table (fastest "
                                                         "engines and ratios) into this page's "
                                                         "runtime-race-summary block.")] = None,
) -> None:
    if from_json is not None:
        try:
            data = json.loads(from_json.read_text(encoding="utf-8"))
            text, short = race_markdown(data), race_summary(data)
            if readme is not None:
                replace_block(readme, "runtime-race", text)
            if summary is not None:
                replace_block(summary, "runtime-race-summary", short)
        except (OSError, ValueError, KeyError, TsPruneError) as exc:
            typer.echo(f"error: cannot render {from_json} ({exc}): give a file written by --json", err=True)
            raise typer.Exit(2) from None
        typer.echo(text, nl=False)
        return
    mask_list = [m for m in masks.split(",") if m]
    wanted = {e for e in engine_names.split(",") if e}
    unknown = [m for m in mask_list if m not in MASKS] + sorted(wanted - set(DENSE + SPARSE))
    if unknown:
        typer.echo(f"error: unknown mask or engine {unknown[0]!r}: use masks from {', '.join(MASKS)} and engines "
                   f"from {', '.join(DENSE + SPARSE)}", err=True)
        raise typer.Exit(2)
    sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
    configure_threads(threads)
    torch._inductor.config.fallback_random = True  # Informer's sampling draws as eager does under compile
    hyper = json.loads(overrides) if overrides else {}
    rows: list[dict[str, Any]] = []
    where = machine()
    typer.echo(f"machine: {where}", err=True)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for name in [m for m in models.split(",") if m]:
                run = trained(name, train_steps, hyper)
                for size in sizes:
                    rows.append(race(run, size, mask_list, density, threads, repeats, wanted, Path(scratch), rewarm))
                    typer.echo(json.dumps({k: v for k, v in rows[-1].items() if k != "facts"}), err=True)
                if json_out is not None:
                    record = {"machine": where, "repeats": repeats, "rewarm_s": rewarm, "rows": rows}
                    json_out.write_text(json.dumps(record, indent=1) + "\n")
    except TsPruneError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{where}; density {density:g}, median ms of {repeats} alternating passes\n")
    typer.echo(table(rows, mask_list))


if __name__ == "__main__":
    sys.exit(cli())
