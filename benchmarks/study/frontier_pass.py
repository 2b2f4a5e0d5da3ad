"""The frontier's costs (issue 32): every point of the frontier timed on this machine, on each engine it can run on.

    python benchmarks/study/frontier_pass.py --results benchmarks/results/study-etth1/results.parquet \
        --results benchmarks/results/seeds-etth1/results.parquet \
        --results benchmarks/results/small-etth1/results.parquet \
        --dense /work/runs/seeds-etth1/sweep --dense /work/runs/small-etth1/sweep \
        --out benchmarks/results/frontier/costs.csv [--models Autoformer,PatchTST] [--engines eager,onnxruntime,sparse]

A point (``report.frontier.POINT_KEYS`` less the fine-tuning, which changes values, not structure) is rebuilt from a
dense run of its model and size whose weights are on this disk (``--dense``: sweep directories; any seed, the
lowest first), or for a dense point without one, from its recorded configuration with initial weights (a dense
model's time does not depend on its values): the dense model itself, or its pruning made again
(``prune.pipeline.prune_again``, the method of the point's recorded configuration, no fine-tuning). A seed changes
where the zeros fall a little, not how many there are per layer to within a few percent, nor the shapes: a point's
latency is its structure's.

Each point is timed at batch 1 and 32, 2 threads, on every engine it runs on, in one alternating loop
(``measure.compare_latency``): dense eager PyTorch; ONNX Runtime (``tsprune export``'s graph, checked against
PyTorch); tsprune's sparse engine for unstructured prunings (compiled here at batch 32). The fastest engine per batch
size is the point's latency. Also counted: parameters, non-zeros, FLOPs and effective FLOPs per window
(``measure.count_flops``). The table names the CPU and the dense run each point was made from.

Resumable: points already in ``--out`` measured on this CPU are skipped; each finished point is appended at once.
Pause every other job on the machine while it runs (timing). Order: dense and small points first, then prunings by
falling density, so a pass cut short has the points the frontier needs most.
"""

from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import pandas as pd
import torch
import typer
from torch import nn

from tsprune import api
from tsprune.config import PruneConfig, from_dict
from tsprune.errors import TsPruneError
from tsprune.measure import REWARM_S, compare_latency, count_flops, count_params, example_inputs
from tsprune.prune.methods import get_method
from tsprune.prune.pipeline import prune_again
from tsprune.report import tables
from tsprune.report.frontier import POINT_KEYS, points
from tsprune.runtime import atomic_write, configure_threads, cpu_name
from tsprune.sweep.results import read_results

KEYS = [key for key in POINT_KEYS if key != "finetune_epochs"]
ENGINES = ("eager", "onnxruntime", "sparse")
BATCH_SIZES = (1, 32)
cli = typer.Typer(add_completion=False)


class OrtModule(nn.Module):
    """An ONNX Runtime session behind the ``nn.Module`` call that ``compare_latency`` times (numpy in, tensor out:
    the copy is part of what a caller of the session pays)."""

    def __init__(self, forecaster: Any) -> None:
        super().__init__()
        self.forecaster = forecaster

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.forecaster(*inputs))


def point_key(values: Any) -> tuple[str, ...]:
    """A point's identity as text, the same from a table row and from the costs CSV read back (NaN variant: "")."""
    model, size, method, variant, density = (values[key] for key in KEYS)
    variant = variant if isinstance(variant, str) else ""
    return str(model), str(size), str(method), variant, f"{float(density):.6f}"


def dense_runs(folders: list[Path]) -> dict[tuple[str, str], Path]:
    """(model, size) -> the directory of a finished dense run with its weights, the lowest seed first."""
    found: dict[tuple[str, str], tuple[int, Path]] = {}
    for folder in folders:
        for path in sorted((folder / "records").glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            labels = record.get("labels") or {}
            run_dir = folder / "runs" / str(record.get("run_id"))
            if record.get("kind") != "dense" or record.get("status") != "done" or \
                    not (run_dir / "model.safetensors").is_file() or labels.get("train_fraction") != 1.0:
                continue
            key, seed = (str(labels["model"]), str(labels["size"])), int(labels["seed"])
            if key not in found or seed < found[key][0]:
                found[key] = (seed, run_dir)
    return {key: run_dir for key, (_, run_dir) in found.items()}


def untrained_run(config_json: str) -> Any:
    """A dense run of the recorded configuration with its initial weights: a dense model's latency and FLOPs do not
    depend on the values, so a dense point needs no weights on this disk (a pruned one does: its zeros do)."""
    from tsprune.config import RunConfig
    from tsprune.configure import bind_to_data
    from tsprune.data.dataset import prepare_data
    from tsprune.models.registry import build_model
    from tsprune.run import Run

    config = RunConfig.from_dict((json.loads(config_json) or {})["config"])
    data = prepare_data(config.data)
    config = bind_to_data(config, data)
    torch.manual_seed(config.train.seed)
    return Run(config, build_model(config.model).eval(), data.scaler, data.columns, data.freq, {})


def point_configs(frame: pd.DataFrame) -> pd.DataFrame:
    """The frontier's points (untuned structure only) with one recorded configuration each (a dense point's is its
    dense run's, a pruned point's its prune run's)."""
    data = points(frame)
    data = data[data["finetune_epochs"] == 0].copy()
    done = tables.done(frame)
    configs = {}
    for row in done.itertuples():
        variant = row.variant if isinstance(row.variant, str) else ""
        key = (row.model, row.size, row.method, variant, round(float(row.target_density), 6))
        configs.setdefault(key, row.config_json)
    data["config_json"] = [configs.get((r.model, r.size, r.method, r.variant if isinstance(r.variant, str) else "",
                                        round(float(r.target_density), 6))) for r in data.itertuples()]
    order = np.where(data["method"] == "dense", 2.0, data["target_density"])  # dense and small points first
    return data.assign(_order=order).sort_values("_order", ascending=False, kind="stable").drop(columns="_order")


def rebuild(run: Any, point: pd.Series) -> nn.Module:
    """The point's model from ``run``: the dense model, or its pruning made again without fine-tuning."""
    if point["method"] == "dense":
        return run.model.eval()
    raw = dict((json.loads(point["config_json"]) or {}).get("prune") or {})
    raw.update(batch_sizes=tuple(raw.get("batch_sizes") or BATCH_SIZES), finetune_epochs=0, device="cpu")
    model, _ = prune_again(run, from_dict(PruneConfig, raw))
    return model


def engines_for(run: Any, model: nn.Module, point: pd.Series, inputs: dict[int, tuple], wanted: list[str],
                threads: int, folder: Path) -> dict[str, nn.Module]:
    """The point's model on each wanted engine it can run on."""
    from tsprune.export import export_run, onnx_forecaster
    from tsprune.sparse.engine import compile_sparse

    out: dict[str, nn.Module] = {"eager": model}
    if "onnxruntime" in wanted:
        path = folder / "model.onnx"
        export_run(replace(run, model=model, path=None, architecture=None), path)
        out["onnxruntime"] = OrtModule(onnx_forecaster(path, threads=threads))
    unstructured = point["method"] != "dense" and not get_method(str(point["method"])).structured
    if "sparse" in wanted and unstructured:
        out["sparse"], _ = compile_sparse(copy.deepcopy(model), inputs, max(BATCH_SIZES), threads=threads)
    return {name: engine for name, engine in out.items() if name in wanted}


def measure_point(run: Any, run_dir: Path | None, point: pd.Series, wanted: list[str], threads: int,
                  repeats: int) -> dict[str, Any]:
    data = run.data()
    inputs = {size: example_inputs(data, size) for size in BATCH_SIZES}
    model = rebuild(run, point)
    with tempfile.TemporaryDirectory() as folder:
        engines = engines_for(run, model, point, inputs, wanted, threads, Path(folder))
        # ONNX Runtime's pool spins after each pass: rewarm so each engine is timed in its own steady state
        timings = {size: compare_latency(engines, inputs[size], repeats, threads=threads, rewarm_s=REWARM_S)
                   for size in BATCH_SIZES}
    flops, params = count_flops(model, inputs[1]), count_params(model)
    row: dict[str, Any] = {key: point[key] for key in KEYS}
    row.update(flops=flops["flops_effective"], flops_dense_equivalent=flops["flops"], params=params["params"],
               nonzero_params=params["nonzero_params"], cpu=cpu_name(), threads=threads, repeats=repeats,
               torch=torch.__version__, from_run=run_dir.name if run_dir is not None else "untrained")
    for size in BATCH_SIZES:
        medians = {name: timing["median_ms"] for name, timing in timings[size].items()}
        for name, value in medians.items():
            row[f"{name}_b{size}_ms"] = value
        fastest = min(medians, key=lambda name: medians[name])
        row[f"latency_b{size}_ms"], row[f"engine_b{size}"] = medians[fastest], fastest
    row["engine"] = row[f"engine_b{max(BATCH_SIZES)}"]
    return row


@cli.command()
def main(
    results: Annotated[list[Path], typer.Option(help="Results tables (or sweep directories) whose points to time.")],
    dense: Annotated[list[Path], typer.Option(help="Sweep directories holding dense runs with their weights.")],
    out: Annotated[Path, typer.Option(help="The costs table (CSV), appended to point by point.")],
    models: Annotated[Optional[str], typer.Option(help="Comma-separated models (default: every model).")] = None,
    engines: Annotated[str, typer.Option(help="Engines to time: eager, onnxruntime, sparse.")] = ",".join(ENGINES),
    threads: Annotated[int, typer.Option(help="Torch and ONNX Runtime threads.")] = 2,
    repeats: Annotated[int, typer.Option(help="Timed passes per engine and batch size.")] = 10,
) -> None:
    """Time every frontier point on this machine (see the module doc)."""
    wanted = [name.strip() for name in engines.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(ENGINES))
    if unknown or "eager" not in wanted:
        raise typer.BadParameter(f"engines are {', '.join(ENGINES)} (eager always); got {engines}")
    configure_threads(threads)
    frame = tables.prepare(pd.concat([read_results(path) for path in results], ignore_index=True)
                           .drop_duplicates("run_id"))
    todo = point_configs(frame)
    if models:
        todo = todo[todo["model"].isin([name.strip() for name in models.split(",")])]
    runs = dense_runs(dense)
    done = pd.read_csv(out) if out.is_file() else pd.DataFrame(columns=[*KEYS, "cpu"])
    cpu = cpu_name()
    measured = {point_key(row) for _, row in done[done["cpu"] == cpu].iterrows()}
    for _, point in todo.iterrows():
        key = point_key(point)
        if key in measured:
            continue
        run_dir = runs.get((str(point["model"]), str(point["size"])))
        if run_dir is None and point["method"] != "dense":
            typer.echo(f"{' '.join(key)}: no dense run with weights here to prune again: skipped")
            continue
        try:
            run = api.load(run_dir) if run_dir is not None else untrained_run(str(point["config_json"]))
            row = measure_point(run, run_dir, point, wanted, threads, repeats)
        except TsPruneError as exc:
            typer.echo(f"{' '.join(key)}: not measured: {exc}")
            continue
        done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, done.to_csv(index=False))
        typer.echo(f"{' '.join(key)}: b1 {row['latency_b1_ms']:.2f} ms ({row['engine_b1']}), b32 "
                   f"{row['latency_b32_ms']:.1f} ms ({row['engine_b32']}) on {cpu}")


if __name__ == "__main__":
    cli()
