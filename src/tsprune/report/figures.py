"""The report's figures: one function per figure, each taking a ``tables.prepare``-d results table.

Figures are ``matplotlib.figure.Figure`` objects, never pyplot ones: no GUI backend is touched (PNG goes through
Agg, SVG through the SVG backend) and a figure is freed with the object. Their look lives in ``style``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullLocator

from tsprune.report import tables
from tsprune.report import frontier as frontier_data
from tsprune.report.style import (
    headline,
    note,
    human_count,
    legend,
    linestyle,
    log_axis,
    model_colors,
    model_handles,
    mse_axis,
    note_figure,
    panels,
    percent,
    series_handles,
    series_markers,
)


def task_label(dataset: str, horizon: float) -> str:
    horizon_text = "?" if pd.isna(horizon) else f"{horizon:g}"
    return f"{dataset} · horizon {horizon_text}"


def tasks(frame: pd.DataFrame) -> list[tuple]:
    return sorted(frame[["dataset", "pred_len"]].drop_duplicates().itertuples(index=False, name=None),
                  key=lambda t: (str(t[0]), -1 if pd.isna(t[1]) else t[1]))


def at_task(frame: pd.DataFrame, dataset: str, horizon: float) -> pd.DataFrame:
    same_horizon = frame["pred_len"].isna() if pd.isna(horizon) else frame["pred_len"] == horizon
    return frame[(frame["dataset"] == dataset) & same_horizon]


def seed_stats(frame: pd.DataFrame, by: str, x: pd.Series) -> pd.DataFrame:
    """Per group: mean x, mean/min/max MSE over seeds and their count, sorted by x (the order lines are drawn)."""
    data = frame.assign(_x=x)
    stats = data.groupby(by, dropna=False).agg(x=("_x", "mean"), mse=("mse", "mean"), lo=("mse", "min"),
                                               hi=("mse", "max"), n=("mse", "size"))
    return stats.reset_index().sort_values("x")


# --------------------------------------------------------------------------------------------------- figures


def mse_vs_density(frame: pd.DataFrame) -> Figure:
    """Accuracy cost of pruning: MSE against the share of all parameters kept, dense MSE as the target line."""
    colors, markers = model_colors(frame["model"]), series_markers(frame)
    grid, epochs = tables.untuned(tables.main_grid(tables.accuracy_view(tables.done(frame)), frame))
    grid = grid[grid["mse"].notna()]
    title = "Test MSE vs density"
    if not (grid["kind"] == "prune").any():
        return note_figure(title, "no completed pruned runs with a test MSE on the main grid\n"
                                  "(dense MSEs are in the summary table)")
    fig, axes = panels(len(tasks(grid)), extra_height=0.6)
    spread = False
    for ax, (dataset, horizon) in zip(axes, tasks(grid)):
        rows = at_task(grid, dataset, horizon)
        xs, ys = [1.0], list(rows["mse"])
        for model, by_model in tables.text_groups(rows, "model"):
            dense = by_model[by_model["kind"] == "dense"]["mse"]
            if not dense.empty:
                ax.axhline(dense.mean(), color=colors[model], ls=":", lw=1.3)
            for method, label, runs in tables.series_groups(by_model[by_model["kind"] == "prune"]):
                stats = seed_stats(runs, "target_density", tables.density_x(runs))
                ax.plot(stats["x"], stats["mse"], color=colors[model], ls=linestyle(method), marker=markers[label],
                        ms=5, lw=1.6)
                if (stats["n"] > 1).any():
                    spread = True
                    ax.fill_between(stats["x"], stats["lo"], stats["hi"], color=colors[model], alpha=0.15, lw=0)
                xs.extend(stats["x"])
        if (rows["kind"] == "prune").any():
            log_axis(ax, "x", xs, percent, pad=1.15)
        else:
            ax.text(0.5, 0.08, "no pruned runs: dense MSE only", transform=ax.transAxes, ha="center", color="0.35")
            ax.set_xticks([])
            ax.set_ylim(min(ys) * 0.9, max(ys) * 1.1)  # reference lines alone do not scale the axis
        mse_axis(ax, ys)
        ax.set_xlabel("density: share of all parameters kept (log scale)")
        ax.set_title(task_label(dataset, horizon))
    references: list[Artist] = [Line2D([], [], color="0.25", ls=":", lw=1.3, label="dense model")]
    if spread:
        references.append(Patch(color="0.25", alpha=0.15, label="seed min–max (line: mean)"))
    legend(fig, [model_handles(grid["model"], colors), series_handles(grid[grid["kind"] == "prune"], markers),
                 references])
    tuning = "without fine-tuning" if epochs == 0 else f"fine-tuned {epochs} epochs (no untuned runs)"
    headline(fig, title, f"{tables.grid_description(frame)}, {tuning}")
    return fig


def speedup_vs_flops(frame: pd.DataFrame) -> Figure:
    """Does saving FLOPs save time? Measured speedup against FLOPs reduction, with the ideal y = x."""
    colors, markers = model_colors(frame["model"]), series_markers(frame)
    grid, _ = tables.untuned(tables.main_grid(tables.done(frame), frame))
    runs = grid[grid["kind"] == "prune"].assign(x=lambda f: tables.flops_reduction(f), y=lambda f: f["speedup"])
    runs = runs[(runs["x"] > 0) & (runs["y"] > 0)]
    title = "Measured speedup vs FLOPs reduction"
    if runs.empty:
        return note_figure(title, "no pruned runs with both a measured speedup and a FLOPs count")
    fig = Figure(figsize=(9.0, 6.4), layout="constrained")
    ax = fig.subplots()
    keys = ["model", *tables.SERIES, "series", "engine", "dataset", "pred_len"]
    for key, points in runs.groupby(keys, dropna=False):
        model, method, _, label, engine = cast(tuple[str, str, str, str, str], key[:5])  # text columns
        stats = points.groupby("target_density").agg(x=("x", "mean"), y=("y", "mean"), lo=("y", "min"),
                                                     hi=("y", "max")).sort_values("x")
        face = colors[model] if engine == "dense" else "white"
        ax.plot(stats["x"], stats["y"], color=colors[model], ls=linestyle(method), lw=1.0, alpha=0.5)
        ax.vlines(stats["x"], stats["lo"], stats["hi"], color=colors[model], lw=1.2, alpha=0.7)
        ax.plot(stats["x"], stats["y"], ls="none", marker=markers[label], ms=7, mfc=face, mec=colors[model])
    values = [*runs["x"], *runs["y"], 1.0]
    low, high = min(values) / 1.3, max(values) * 1.3
    ax.plot([low, high], [low, high], color="0.4", ls="-.", lw=1.0)
    ax.axhline(1.0, color="0.4", ls=":", lw=1.0)
    for axis in ("x", "y"):
        log_axis(ax, axis, [low, high], lambda v: f"{v:g}×", pad=1.0)
    ax.set_aspect("equal")
    ax.set_xlabel("FLOPs reduction: dense / pruned FLOPs (effective for unstructured)")
    ax.set_ylabel("measured speedup: dense / pruned latency")
    references = [Line2D([], [], color="0.4", ls="-.", label="ideal: speedup = FLOPs reduction"),
                  Line2D([], [], color="0.4", ls=":", label="no speedup")]
    if (runs["engine"] != "dense").any():
        references += [Line2D([], [], ls="none", marker="o", color="0.25", label="filled: dense engine"),
                       Line2D([], [], ls="none", marker="o", mfc="white", color="0.25", label="hollow: sparse engine")]
    legend(fig, [model_handles(runs["model"], colors), series_handles(runs, markers), references], right=True)
    headline(fig, title, f"{tables.grid_description(frame)}; vertical bars: seed min–max")
    return fig


def finetune(frame: pd.DataFrame) -> Figure:
    """What fine-tuning recovers: paired MSEs without and with it at every setting that has a fine-tuned run.

    Points rather than bars: bars must start at zero, which hides the few-percent differences that matter here.
    """
    colors, markers = model_colors(frame["model"]), series_markers(frame)
    grid = tables.main_grid(tables.accuracy_view(tables.done(frame)), frame)
    grid = grid[grid["mse"].notna()]
    setting = tables.TASK + [*tables.SERIES, "target_density"]
    pruned = grid[grid["kind"] == "prune"]
    tuned = pruned.loc[pruned["finetune_epochs"] > 0, setting].drop_duplicates()
    title = "Fine-tuned vs not"
    if tuned.empty:
        return note_figure(title, "no fine-tuned runs in this sweep")
    runs = pruned.merge(tuned, on=setting)
    epochs = sorted(runs["finetune_epochs"].unique())
    spread = 0.2 if len(epochs) <= 2 else 0.32
    offsets = np.linspace(-spread, spread, len(epochs)) if len(epochs) > 1 else np.zeros(1)
    dense_ref = grid[grid["kind"] == "dense"].groupby(tables.TASK, dropna=False)["mse"].mean()
    fig, axes = panels(len(tasks(runs)), extra_height=0.5)
    for ax, (dataset, horizon) in zip(axes, tasks(runs)):
        rows = at_task(runs, dataset, horizon)
        cells = sorted(rows[["model", "series", "target_density"]].drop_duplicates().itertuples(index=False),
                       key=lambda c: (c[0], c[1], -c[2]))
        for i, (model, label, density) in enumerate(cells):
            cell = rows[(rows["model"] == model) & (rows["series"] == label) & (rows["target_density"] == density)]
            stats = seed_stats(cell, "finetune_epochs", cell["finetune_epochs"])
            xs = i + offsets[[epochs.index(e) for e in stats["finetune_epochs"]]]
            ax.plot(xs, stats["mse"], color=colors[model], lw=1.2, alpha=0.6)
            ax.vlines(xs, stats["lo"], stats["hi"], color=colors[model], lw=1.2)
            for x, epoch, mse in zip(xs, stats["finetune_epochs"], stats["mse"]):
                ax.plot(x, mse, ls="none", marker=markers[label], ms=8, mec=colors[model],
                        mfc=colors[model] if epoch else "white", mew=1.5)
            reference = dense_ref.get((model, dataset, horizon), np.nan)
            if np.isfinite(reference):
                ax.hlines(reference, i - 0.35, i + 0.35, color="black", ls="--", lw=1.3)
        ax.set_xticks(range(len(cells)))
        rotate = len(cells) > 4
        ax.set_xticklabels([f"{m}\n{meth} at {percent(d)}" for m, meth, d in cells], fontsize=8.5,
                           rotation=30 if rotate else 0, ha="right" if rotate else "center")
        ax.set_xlim(-0.6, len(cells) - 0.4)
        ax.margins(y=0.1)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(axis="x", visible=False)
        ax.set_ylabel("test MSE")
        ax.set_title(task_label(dataset, horizon))
    tuned_epochs = ", ".join(f"{e:g}" for e in epochs if e > 0)
    order = " (left to right)" if len(epochs) > 2 else ""
    handles = [Line2D([], [], ls="none", marker="o", mfc="white", mec="0.25", mew=1.5, label="not fine-tuned"),
               Line2D([], [], ls="none", marker="o", color="0.25", label=f"fine-tuned {tuned_epochs} epochs{order}"),
               Line2D([], [], color="black", ls="--", label="dense model")]
    legend(fig, [handles])
    headline(fig, title, f"{tables.grid_description(frame)}; points: seed mean, bars: seed min–max")
    return fig


def dataset_size(frame: pd.DataFrame) -> Figure:
    """How much data the dense models need: MSE against the fraction of the training split used."""
    colors = model_colors(frame["model"])
    dense = tables.done(frame)
    dense = dense[(dense["kind"] == "dense") & dense["mse"].notna()]
    keys = ["dataset", "pred_len", "size"]
    fractions_per_key = dense.groupby(keys, dropna=False)["train_fraction"].nunique()
    varied = sorted(fractions_per_key[fractions_per_key > 1].index, key=lambda k: (str(k[0]), k[1], str(k[2])))
    title = "Dense MSE vs training-set size"
    if not varied:
        return note_figure(title, "no dataset-size study in this sweep\n"
                                  "(no finished dense run of one size at two or more training fractions)")
    fig, axes = panels(len(varied), extra_height=0.4)
    for ax, (dataset, horizon, size) in zip(axes, varied):
        rows = at_task(dense, dataset, horizon)
        rows = rows[rows["size"] == size]
        for model, runs in tables.text_groups(rows, "model"):
            stats = seed_stats(runs, "train_fraction", runs["train_fraction"])
            ax.plot(stats["x"], stats["mse"], color=colors[model], marker="o", ms=5, lw=1.6)
            if (stats["n"] > 1).any():
                ax.fill_between(stats["x"], stats["lo"], stats["hi"], color=colors[model], alpha=0.15, lw=0)
        fractions = sorted(rows["train_fraction"].unique())
        log_axis(ax, "x", fractions, percent, pad=1.15, ticks=fractions)
        mse_axis(ax, rows["mse"])
        ax.set_xlabel("share of the training split used (log scale)")
        ax.set_title(f"{task_label(dataset, horizon)} · size {size}")
    legend(fig, [model_handles(dense["model"], colors), [Patch(color="0.25", alpha=0.15, label="seed min–max")]])
    headline(fig, title, "dense models; lines: seed mean")
    return fig


def model_size(frame: pd.DataFrame) -> Figure:
    """Is a smaller dense model already enough? MSE against parameter count, one line through each model's sizes."""
    colors = model_colors(frame["model"])
    dense = tables.done(frame)
    fraction = tables.main_fraction(frame)
    dense = dense[(dense["kind"] == "dense") & dense["mse"].notna() & dense["params"].gt(0)
                  & np.isclose(dense["train_fraction"], fraction)]
    varied = [task for task in tasks(dense) if at_task(dense, *task)["size"].nunique() > 1]
    title = "Dense MSE vs model size"
    if not varied:
        sizes = ", ".join(sorted(tables.done(frame)["size"].dropna().unique())) or "none"
        return note_figure(title, f"no model-size study in this sweep\n(model sizes with finished runs: {sizes})")
    fig, axes = panels(len(varied), extra_height=0.4)
    for ax, (dataset, horizon) in zip(axes, varied):
        rows = at_task(dense, dataset, horizon)
        for model, runs in tables.text_groups(rows, "model"):
            stats = seed_stats(runs, "size", runs["params"])
            ax.plot(stats["x"], stats["mse"], color=colors[model], marker="o", ms=5, lw=1.6)
            ax.vlines(stats["x"], stats["lo"], stats["hi"], color=colors[model], lw=1.0, alpha=0.6)
            for name, x, y in stats[["size", "x", "mse"]].itertuples(index=False):
                ax.annotate(name, (x, y), xytext=(5, 4), textcoords="offset points", fontsize=8,
                            color=colors[model])
        log_axis(ax, "x", rows["params"], human_count, pad=1.3)
        mse_axis(ax, rows["mse"])
        ax.set_xlabel("parameters (log scale)")
        ax.set_title(task_label(dataset, horizon))
    legend(fig, [model_handles(dense["model"], colors)])
    headline(fig, title, f"dense models, {percent(fraction)} of the training data\n"
                         "points: seed mean labelled with the size, bars: min–max")
    return fig


GROUP_MARKERS = {"dense": "s", "pruned": "o", "small": "^"}


def frontier(frame: pd.DataFrame, costs: pd.DataFrame | None = None) -> Figure:
    """Prune a large model or train a small one? Seed-mean MSE (bars: min–max over seeds) against non-zero
    parameters, effective FLOPs and latency at batch 1 and 32, for the dense study models, their pruned variants and
    the small-model ladder; the dashed step line is each cost's Pareto front (``report.frontier``)."""
    data = frontier_data.points(frame, costs)
    title = "Frontier: pruned large models against small ones"
    if not (data["group"] == "small").any():
        return note_figure(title, "no small-model runs in this table\n(the preset small-etth1 trains them)")
    colors = model_colors(data["model"])
    fig, axes = panels(len(frontier_data.COSTS), extra_height=0.6)
    for ax, (cost, label) in zip(axes, frontier_data.COSTS.items()):
        placed = data[data[cost].notna() & data[cost].gt(0)]
        if placed.empty:
            note(ax, f"{label}:\nnot measured (benchmarks/study/frontier_pass.py)")
            continue
        for (group, model), rows in placed.groupby(["group", "model"], sort=False):
            ax.errorbar(rows[cost], rows["mse"], yerr=[rows["mse"] - rows["lo"], rows["hi"] - rows["mse"]],
                        fmt=GROUP_MARKERS[str(group)], color=colors[str(model)], ms=5 if group != "pruned" else 3.5,
                        alpha=0.9 if group != "pruned" else 0.55, elinewidth=0.8, capsize=0)
        front = placed[frontier_data.pareto(placed, cost)].sort_values(cost)
        ax.step(front[cost], front["mse"], where="post", color="0.2", ls="--", lw=1.0)
        log_axis(ax, "x", placed[cost], human_count if "latency" not in cost else (lambda v: f"{v:g}"), pad=1.3)
        # the interesting region is near the dense models: points far above them are counted, not drawn to scale
        dense = placed.loc[placed["group"] != "pruned", "mse"]
        top = 1.25 * float(dense.max()) if not dense.empty else float(placed["hi"].max())
        above = placed[placed["mse"] > top]
        ax.set_ylim(0.95 * float(placed["lo"].min()), top)
        ax.set_ylabel("test MSE")
        if not above.empty:
            ax.text(0.98, 0.98, f"{len(above)} pruned point(s) above, up to {above['mse'].max():.2f}",
                    transform=ax.transAxes, ha="right", va="top", fontsize=8, color="0.35")
        ax.set_xlabel(f"{label} (log scale)")
    groups = [Line2D([], [], color="0.3", marker=GROUP_MARKERS[g], ls="", label=text)
              for g, text in (("dense", "study model, dense"), ("pruned", "study model, pruned"),
                              ("small", "small model (ladder)"))]
    legend(fig, [model_handles(data["model"], colors), groups,
                 [Line2D([], [], color="0.2", ls="--", lw=1.0, label="Pareto front")]])
    cpu: list[str] = sorted(map(str, costs["cpu"].dropna().unique())) if costs is not None and "cpu" in costs else []
    timed = f"latency: fastest engine per point, 2 threads, {', '.join(cpu)}" if cpu else \
        "latency not measured yet"
    headline(fig, title, f"seed means, bars min–max over seeds; {timed}")
    return fig


FIGURES: dict[str, Callable[[pd.DataFrame], Figure]] = {
    "mse_vs_density": mse_vs_density,
    "speedup_vs_flops": speedup_vs_flops,
    "finetune": finetune,
    "dataset_size": dataset_size,
    "model_size": model_size,
    "frontier": frontier,
}
