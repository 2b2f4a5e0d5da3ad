"""The tables ``tsprune sweep plan`` and ``tsprune results`` print (rich tables built from a plan or the results)."""

from __future__ import annotations

from collections import Counter

import pandas as pd
from rich.table import Table

from tsprune.sweep.cost import Estimate
from tsprune.sweep.plan import Plan


def plan_table(plan: Plan) -> Table:
    """Dense trainings and prune runs per model, one column per method (and engine, when not dense)."""
    methods = list(dict.fromkeys((run.labels.method, run.engine) for run in plan.prune))
    dense = Counter(run.labels.model for run in plan.dense)
    prune = Counter((run.labels.model, (run.labels.method, run.engine)) for run in plan.prune)
    headers = [f"{method} runs" if engine == "dense" else f"{method} runs ({engine} engine)"
               for method, engine in methods]
    table = Table("model", "dense trainings", *headers, "total", title="runs by model and method")
    for model in dense:
        row = [prune[model, method] for method in methods]
        table.add_row(model, str(dense[model]), *map(str, row), str(dense[model] + sum(row)))
    totals = [sum(prune[model, method] for model in dense) for method in methods]
    table.add_row("[bold]all", f"[bold]{sum(dense.values())}", *(f"[bold]{n}" for n in totals),
                  f"[bold]{len(plan)}", end_section=True)
    return table


def plan_lines(plan: Plan, estimate: Estimate, source: str) -> list[str]:
    finetuned = sum(1 for run in plan.prune if run.config.finetune_epochs)
    return [
        (f"sweep {source}: {len(plan.dense)} dense trainings, {len(plan.prune)} pruning runs "
         f"({finetuned} with fine-tuning), {len(plan)} runs in all"),
        (f"estimated cost: ~{estimate.cpu_minutes:,.0f} CPU-minutes (training ~{estimate.dense_cpu_s / 60:,.0f}, "
         f"pruning and measuring ~{estimate.prune_cpu_s / 60:,.0f}) — a rough estimate from a per-model cost model "
         "scaled by model width and steps; real times vary by a factor of a few"),
    ]


SUMMARY_METRICS = {"mse": "mse", "density_total": "dens. total", "flops_ratio": "FLOPs ratio", "speedup": "speedup"}
HEADERS = {"train_fraction": "fraction", "finetune_epochs": "ft", "target_density": "density", **SUMMARY_METRICS}


def summary_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model / method / fine-tuning / density (and size or train fraction where those vary): means of the
    finished runs and counts of finished and failed ones."""
    keys = [key for key in ("size", "train_fraction", "engine", "variant") if key in frame and frame[key].nunique() > 1]
    keys += ["model", "method", "finetune_epochs", "target_density"]
    frame = frame.assign(target_density=frame["target_density"].round(4), ok=frame["status"] == "done",
                         failed=frame["status"] != "done")
    done = frame[frame["ok"]]
    means = done.groupby(keys, dropna=False)[list(SUMMARY_METRICS)].mean()
    counts = frame.groupby(keys, dropna=False)[["ok", "failed"]].sum().rename(columns={"ok": "runs"})
    summary = counts.join(means).reset_index()
    dense_first = summary["method"].ne("dense")
    return summary.assign(_order=dense_first).sort_values(
        [*keys[:-3], "_order", "method", "finetune_epochs", "target_density"],
        ascending=[True] * (len(keys) - 3) + [True, True, True, False]).drop(columns="_order")


def summary_table(frame: pd.DataFrame, title: str) -> Table:
    summary = summary_frame(frame)
    table = Table(title=title, caption="means over finished runs; ft: fine-tuning epochs")
    for column in summary.columns:
        table.add_column(HEADERS.get(column, column), overflow="fold")
    for row in summary.itertuples(index=False):
        table.add_row(*(_cell(name, value) for name, value in zip(summary.columns, row)))
    return table


def _cell(name: str, value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return "-"
    if name == "failed":
        return f"[red]{value}" if value else "0"
    if name == "speedup":
        return f"{value:.2f}x"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def frame_text(frame: pd.DataFrame) -> str:
    """A query result as plain text, every row and column shown."""
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 250):
        return frame.to_string(index=False)
