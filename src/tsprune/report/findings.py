"""The study's claims, one row each, decided by the numbers of a sweep's results table.

Each claim of "A Comparative Study of Pruning Methods in Transformer-based Time Series Forecasting" (arXiv
2412.12883) is turned into a test written out in the table, so a reader can disagree with the test rather than
with a verdict. A verdict is ``confirmed``, ``partly``, ``refuted``, or ``open`` when the runs it needs are not
(all) in the table; the evidence column gives the deciding numbers and ``runs`` how many finished runs they come
from. Nothing here is typed by hand: the same table always gives the same findings.

Every claim is decided on seed means with a paired criterion (``report.seeds``): per seed, the pruned run's MSE
minus the dense run's of the same seed, averaged over seeds, against the model's measured seed spread (the range of
its dense MSE over the seeds). A model "keeps its accuracy" while that paired change stays within its spread. A
model with one seed has no measured spread; :data:`SEED_SPREAD` stands in for it, and the caption says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd

from tsprune.models.registry import study_models
from tsprune.prune.methods import DEPGRAPH, MAGNITUDE
from tsprune.report import frontier, tables
from tsprune.report import recipes as recipe_report
from tsprune.report.seeds import SINGLE_SEED_STAND_IN, at_density, paired, seed_noise

SEED_SPREAD = SINGLE_SEED_STAND_IN  # test MSE, only for a model with one seed; see the module doc
FINETUNE_DENSITY = 0.8**5  # 0.328, the study's fine-tuning density
HIGH_SPARSITY = 0.8**10  # 0.107
NEAR_ONE_PERCENT = 0.02  # "competitive down to ~1%": kept accuracy at or below 2% of the weights
FLOPS_FALL = 5.0  # "FLOPs fall ~7x": at least 5x fewer effective FLOPs ...
NO_TIME_SAVED = 0.10  # ... and a speedup within 10% of 1x
DENSITY_MATCH = 1e-3


@dataclass(frozen=True)
class Finding:
    claim: str
    test: str
    verdict: str
    evidence: str
    runs: int


def _pruned(grid: pd.DataFrame, method: str, engine: str = "dense", finetune: int = 0,
            scored: bool = True) -> pd.DataFrame:
    """Finished prune runs of ``method`` on ``engine`` with ``finetune`` epochs (with an MSE when ``scored``), at
    the method's default options: the study's claims are about its settings (L2 DepGraph, global magnitude), so
    another variant of a method (``tables.SERIES``, e.g. Taylor importance) is never pooled into them."""
    rows = grid[(grid["kind"] == "prune") & (grid["method"] == method) & (grid["variant"] == "")
                & (grid["engine"] == engine) & (grid["finetune_epochs"] == finetune)]
    return rows[rows["mse"].notna()] if scored else rows


def _at(rows: pd.DataFrame, density: float) -> pd.DataFrame:
    return rows[np.isclose(rows["target_density"], density, atol=DENSITY_MATCH)]


def kept_down_to(curve: pd.DataFrame, threshold: float) -> float | None:
    """The lowest density such that it and every density above it keep the paired change (``seeds.paired``: seed
    mean of pruned minus dense MSE) within ``threshold``; None when the first density already does not."""
    lowest = None
    for density, change in curve.set_index("target_density")["change"].sort_index(ascending=False).items():
        if change > threshold:
            break
        lowest = float(cast(float, density))  # a target density (pandas types index labels as Hashable)
    return lowest


def _pct(value: float | None) -> str:
    return "none" if value is None else f"{value:.1%}" if value >= 0.1 else f"{value:.2%}"


def _seeds(table: pd.DataFrame) -> str:
    """``"3 seeds"``: how many seeds stand behind a paired table's numbers (the fewest of its rows)."""
    count = int(table["seeds"].min()) if not table.empty else 0
    return f"{count} seed{'s' if count != 1 else ''}"


def magnitude_keeps_accuracy(grid: pd.DataFrame, planned: list[str]) -> list[Finding]:
    noise = seed_noise(grid)
    rows = _pruned(grid, MAGNITUDE)
    curves = paired(rows, grid)
    kept = {model: kept_down_to(curve, noise.threshold(model))
            for model, curve in tables.text_groups(curves, "model") if model in planned}
    lowest = {model: float(rows.loc[rows["model"] == model, "target_density"].min()) for model in kept}

    def decided(model: str, threshold: float) -> bool:
        """Whether the runs so far settle how far ``model`` keeps its accuracy, as far as ``threshold``."""
        value = kept[model]
        return value is None or value > lowest[model] + 1e-9 or lowest[model] <= threshold + 1e-9

    runs = len(rows) + int((grid["kind"] == "dense").sum())
    evidence = "; ".join(f"{model} {_pct(kept[model])}" for model in sorted(kept, key=lambda m: kept[m] or 1.0))
    if kept:
        evidence += f" ({_seeds(curves)})"
    test = (f"each model's paired MSE change (seed mean of pruned minus dense) stays within its seed spread, without "
            f"fine-tuning, at every density down to {_pct(FINETUNE_DENSITY)} (global magnitude; the densities "
            f"listed are how far each one kept it)")
    if not kept or len(kept) < len(planned) or not all(decided(m, FINETUNE_DENSITY) for m in kept):
        first = Finding("Magnitude pruning keeps accuracy to high sparsity", test, "open", evidence, runs)
    else:
        keeps = sum(1 for value in kept.values() if value is not None and value <= FINETUNE_DENSITY + DENSITY_MATCH)
        verdict = "confirmed" if keeps == len(kept) else "refuted" if keeps == 0 else "partly"
        first = Finding("Magnitude pruning keeps accuracy to high sparsity", test, verdict,
                        f"{keeps} of {len(kept)} models: {evidence}", runs)
    test = (f"Autoformer and FEDformer keep it to the two lowest densities of all models, both at or below "
            f"{_pct(NEAR_ONE_PERCENT)}")
    leaders = {"Autoformer", "FEDformer"}
    if len(kept) < len(planned) or not leaders <= set(kept) or not all(decided(m, NEAR_ONE_PERCENT) for m in kept):
        return [first, Finding("Autoformer and FEDformer are the most robust, competitive down to ~1%", test,
                               "open", evidence, runs)]
    order = sorted(kept, key=lambda m: (kept[m] if kept[m] is not None else 2.0, m))
    lowest_two = set(order[:2]) == leaders
    near = [m for m in leaders if (kept_to := kept[m]) is not None and kept_to <= NEAR_ONE_PERCENT + 1e-9]
    verdict = "confirmed" if lowest_two and len(near) == 2 else "refuted" if not lowest_two and not near else "partly"
    return [first, Finding("Autoformer and FEDformer are the most robust, competitive down to ~1%", test, verdict,
                           evidence, runs)]


def _reversals(curve: pd.DataFrame, threshold: float) -> tuple[int, float]:
    """How many densities of a paired curve (by falling density) sit more than ``threshold`` below the worst change
    so far, and the largest such fall."""
    changes = curve.sort_values("target_density", ascending=False)["change"].to_numpy()
    falls = np.maximum.accumulate(changes) - changes
    return int((falls > threshold).sum()), float(falls.max()) if len(falls) else 0.0


def structured_inconsistent(grid: pd.DataFrame, planned: list[str]) -> list[Finding]:
    noise = seed_noise(grid)
    rows = _pruned(grid, DEPGRAPH)
    curves = paired(rows, grid)
    at = at_density(curves, FINETUNE_DENSITY)
    change = {str(model): float(value) for model, value in zip(at["model"], at["change"])}
    reversals = {model: _reversals(curve, noise.threshold(model)) for model, curve in tables.text_groups(curves,
                                                                                                         "model")}
    test = (f"across models, the paired MSE change at DepGraph density {_pct(FINETUNE_DENSITY)} spans more than the "
            f"seed spreads of the two extreme models together, or some model's paired change falls back by more "
            f"than its seed spread as density decreases")
    evidence = "; ".join(f"{model} {change[model]:+.3f}" for model in sorted(change))
    bumpy = [model for model, (count, _) in reversals.items() if count]
    largest = max(reversals, key=lambda m: reversals[m][1]) if reversals else None
    if largest is not None:
        evidence += (f"; largest fall-back {largest} {reversals[largest][1]:.3f} (its spread "
                     f"{noise.threshold(largest):.3f})")
    if bumpy:
        evidence += f"; non-monotone: {', '.join(sorted(bumpy))}"
    if not change or len(change) < len(planned):
        return [Finding("DepGraph (structured) pruning is inconsistent across models", test, "open", evidence,
                        len(rows))]
    high, low = max(change, key=lambda m: change[m]), min(change, key=lambda m: change[m])
    spread = change[high] - change[low]
    wide = spread > noise.threshold(high) + noise.threshold(low)
    verdict = "confirmed" if wide and bumpy else "partly" if wide or bumpy else "refuted"
    return [Finding("DepGraph (structured) pruning is inconsistent across models", test, verdict,
                    f"span {spread:.3f} (spreads {noise.threshold(high):.3f} + {noise.threshold(low):.3f}): "
                    f"{evidence} ({_seeds(at)})", len(rows))]


def flops_without_time(grid: pd.DataFrame, planned: list[str]) -> list[Finding]:
    masked = _at(_pruned(grid, MAGNITUDE, scored=False), HIGH_SPARSITY)
    masked = masked[masked["speedup"].notna()]
    reduction = 1.0 / masked["flops_effective_ratio"]
    test = (f"at density {_pct(HIGH_SPARSITY)} (masked weights, dense kernels) the median model does at least "
            f"{FLOPS_FALL:g}x fewer effective FLOPs and runs within {NO_TIME_SAVED:.0%} of dense speed (batch 32)")
    findings = []
    if masked.empty or masked["model"].nunique() < len(planned):
        so_far = "; ".join(f"{model} {float((1.0 / group['flops_effective_ratio']).median()):.1f}x fewer, "
                           f"{float(group['speedup'].median()):.2f}x"
                           for model, group in tables.text_groups(masked, "model"))
        findings.append(Finding("Pruning cuts FLOPs (~7x) but saves no time", test, "open", so_far, len(masked)))
    else:
        flops, speed = float(reduction.median()), float(masked["speedup"].median())
        falls, flat = flops >= FLOPS_FALL, abs(speed - 1.0) <= NO_TIME_SAVED
        verdict = "confirmed" if falls and flat else "refuted" if not falls and not flat else "partly"
        findings.append(Finding("Pruning cuts FLOPs (~7x) but saves no time", test, verdict,
                                f"median {flops:.1f}x fewer effective FLOPs, speedup {speed:.2f}x "
                                f"(range {masked['speedup'].min():.2f}-{masked['speedup'].max():.2f}x)",
                                len(masked)))
    sparse = _at(_pruned(grid, MAGNITUDE, engine="sparse", scored=False), HIGH_SPARSITY)
    structured = _pruned(grid, DEPGRAPH, scored=False)
    structured = structured[structured["speedup"].notna()]
    if not structured.empty:  # the DepGraph density nearest the study's 0.328 that was timed
        nearest = structured["target_density"].iloc[(structured["target_density"] - FINETUNE_DENSITY).abs().argmin()]
        structured = _at(structured, float(nearest))
    parts = []
    if not sparse.empty:
        parts.append(f"sparse engine at {_pct(HIGH_SPARSITY)}: median {sparse['speedup'].median():.2f}x "
                     f"(range {sparse['speedup'].min():.2f}-{sparse['speedup'].max():.2f}x)")
    if not structured.empty:
        at = _pct(float(structured["target_density"].iloc[0]))
        parts.append(f"DepGraph at {at}: median {structured['speedup'].median():.2f}x for "
                     f"{float((1.0 / structured['flops_ratio']).median()):.1f}x fewer FLOPs")
    findings.append(Finding("…unless the zeros are skipped (tsprune, beyond the study)",
                            "speedups of the same pruned models on tsprune's sparse engine, and of DepGraph's "
                            "smaller dense models (batch 32)",
                            "—" if parts else "open", "; ".join(parts), len(sparse) + len(structured)))
    return findings


def finetuning_needed(grid: pd.DataFrame, planned: list[str]) -> list[Finding]:
    noise = seed_noise(grid)
    findings = []
    for method in (MAGNITUDE, DEPGRAPH):
        before = paired(_at(_pruned(grid, method), HIGH_SPARSITY), grid)
        after = paired(_at(_pruned(grid, method, finetune=1), HIGH_SPARSITY), grid)
        both = before.merge(after, on="model", suffixes=("_before", "_after"))
        both = both[both["model"].isin(planned)]
        pairs = {str(row["model"]): (float(row["mse_before"]), float(row["mse_after"]), float(row["dense_mse_before"]),
                                     float(row["change_before"]), float(row["change_after"]))
                 for row in both.to_dict("records")}
        needed = [model for model, (_, _, _, was, now) in pairs.items()
                  if was > noise.threshold(model) and was - now > noise.threshold(model)]
        test = (f"{method} at {_pct(HIGH_SPARSITY)}: without fine-tuning the paired MSE change is more than the "
                f"model's seed spread, and one epoch of fine-tuning (masks kept) lowers it by more than that spread")
        evidence = "; ".join(f"{model} {b:.3f} → {a:.3f} (dense {d:.3f})" for model, (b, a, d, _, _) in pairs.items())
        runs = int(before["seeds"].sum() + after["seeds"].sum()) if not both.empty else 0
        if both.empty or len(both) < len(planned):
            findings.append(Finding(f"Fine-tuning is needed ({method})", test, "open", evidence, runs))
            continue
        seeds = _seeds(pd.concat([before, after]))
        share = len(needed) / len(both)
        verdict = "confirmed" if share >= 0.8 else "refuted" if share <= 0.2 else "partly"
        findings.append(Finding(f"Fine-tuning is needed ({method})", test, verdict,
                                f"{len(needed)} of {len(both)} models: {evidence} ({seeds})", runs))
    return findings


def size_grows_with_data(frame: pd.DataFrame) -> list[Finding]:
    done = tables.done(frame)
    dense = done[(done["kind"] == "dense") & done["mse"].notna() & done["params"].gt(0)]
    test = ("for the model with a size x data study, the dense model size with the lowest MSE does not shrink as "
            "the training fraction grows, and at the full split it beats the best size of the smallest fraction "
            "by more than the model's seed spread (of its main-grid dense runs)")
    noise = seed_noise(tables.main_grid(done, frame))
    studied = [model for model, rows in tables.text_groups(dense, "model")
               if rows["size"].nunique() > 1 and rows["train_fraction"].nunique() > 1]
    if not studied:
        return [Finding("Model size must grow with dataset size", test, "open", "", 0)]
    findings = []
    for model in studied:
        rows = dense[dense["model"] == model]
        table = rows.groupby(["train_fraction", "size"]).agg(mse=("mse", "mean"), params=("params", "mean"))
        complete = table.reset_index().groupby("train_fraction")["size"].nunique()
        if complete.min() < rows["size"].nunique():
            findings.append(Finding(f"Model size must grow with dataset size ({model})", test, "open", "", len(rows)))
            continue
        # fraction -> the size with the lowest MSE there (pandas types the labels only as Hashable)
        best = cast(dict[float, str], {fraction: group.droplevel(0)["mse"].idxmin()
                                       for fraction, group in table.groupby(level=0)})
        mse = table["mse"]  # by (fraction, size)
        params = {fraction: table["params"].loc[(fraction, size)] for fraction, size in best.items()}
        fractions = sorted(best)
        grows = all(params[a] <= params[b] for a, b in zip(fractions, fractions[1:]))
        top, small = fractions[-1], fractions[0]
        gain = mse.loc[(top, best[small])] - mse.loc[(top, best[top])]
        verdict = "confirmed" if grows and gain > noise.threshold(model) else "refuted" if not grows else "partly"
        evidence = "; ".join(f"{fraction:.0%} of the data: {size} (MSE {mse.loc[(fraction, size)]:.3f})"
                             for fraction, size in sorted(best.items()))
        evidence += (f"; at {top:.0%}, {best[top]} beats {best[small]} by {gain:.3f} (seed spread "
                     f"{noise.threshold(model):.3f}{'' if noise.measured(model) else ', one seed: assumed'})")
        findings.append(Finding(f"Model size must grow with dataset size ({model})", test, verdict, evidence,
                                len(rows)))
    return findings


def sparsity_at_dense_accuracy(grid: pd.DataFrame, planned: list[str]) -> list[Finding]:
    """Issue 33: the study's headline ("pruned to 90% sparsity while maintaining performance"), judged on the best
    recipe (``report.recipes``) at the one-epoch budget, against each model's measured seed spread."""
    claim = "90% sparsity at dense accuracy (the best recipe, one epoch of fine-tuning)"
    table = recipe_report.summary(grid)
    table = table[table["model"].isin(planned) & (table["finetune_epochs"] == recipe_report.BUDGET_EPOCHS)]
    size = str(grid["size"].iloc[0]) if len(grid) else "default"  # the main grid has one size
    density = recipe_report.DENSITIES[0]
    name = recipe_report.best(table[table["size"] == size], size, density)
    test = (f"under the recipe with the lowest mean relative MSE change at {_pct(density)} density, every model's "
            f"paired change (seed mean of pruned minus dense) is within its measured seed spread")
    if name is None:
        return [Finding(claim, test, "open", "no recipe has every model at this density yet", 0)]
    noise = seed_noise(grid)
    rows = table[(table["size"] == size) & (table["recipe"] == name)
                 & np.isclose(table["target_density"], round(density, 3))]
    changes = {str(row["model"]): float(row["change"]) for row in rows.to_dict("records")}
    misses = [f"{model} {change:+.3f} (spread {noise.threshold(model):.3f})" for model, change in changes.items()
              if change > noise.threshold(model)]
    within = [f"{model} {change:+.3f}" for model, change in changes.items() if change <= noise.threshold(model)]
    evidence = f"{name}: " + "; ".join([*(f"{m} missed" for m in misses), *(f"{w} within" for w in within)])
    evidence += f" ({_seeds(rows)})"
    runs = int(rows["seeds"].sum())
    unmeasured = [model for model in changes if not noise.measured(model)]
    if set(rows["model"]) != set(planned) or unmeasured:
        why = f"seed spread not measured for {', '.join(unmeasured)}; " if unmeasured else "not every model; "
        return [Finding(claim, test, "open", why + evidence, runs)]
    verdict = "confirmed" if not misses else "refuted" if not within else "partly"
    return [Finding(claim, test, verdict, evidence, runs)]


CLAIMS: list[Callable[..., list[Finding]]] = [magnitude_keeps_accuracy, structured_inconsistent, flops_without_time,
                                              finetuning_needed, sparsity_at_dense_accuracy]


def pruning_beats_small(frame: pd.DataFrame, costs: pd.DataFrame | None) -> list[Finding]:
    """Issue 32's question, beyond the study: at the cost of each small model, is a pruned large one better?"""
    data = frontier.points(frame, costs)
    small = data[data["group"] == "small"]
    if small.empty:
        return []
    state, evidence = frontier.verdict(frontier.duels(data))
    untimed = int(data[frontier.DECIDING_COST].isna().sum())
    if untimed and state != "open":  # a point without its cost could be the better one: not decided yet
        state, evidence = "open", f"{untimed} point(s) not timed yet; so far: {evidence}"
    label = frontier.COSTS[frontier.DECIDING_COST]
    test = (f"at each point of the small-model ladder, the most accurate study model (dense or pruned) whose "
            f"{label} is at most the small model's has a seed-mean MSE lower by more than the larger seed spread of "
            f"the two (one seed: {SEED_SPREAD})")
    return [Finding("Pruning a large model beats training a small one (tsprune, beyond the study)", test, state,
                    evidence, int(data["seeds"].sum()))]


def findings(frame: pd.DataFrame, timing: pd.DataFrame | None = None,
             costs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per claim (columns claim, test, verdict, evidence, runs) from a ``tables.prepare``-d results table.

    ``timing``, when given, is a prepared table whose speedups decide the time claims instead (the demo's speed
    part, timed at full size). ``costs`` is a frontier pass's table: with small-model runs in ``frame``, the row
    "pruning a large model beats training a small one" is decided on it (``report.frontier``).
    """
    planned = study_models()  # the study's claims are about its five models (the small ones have their own row)
    grid = tables.main_grid(tables.done(frame), frame)
    grid = grid[grid["model"].isin(planned)]
    rows: list[Finding] = []
    for claim in CLAIMS:
        if claim is flops_without_time and timing is not None:
            rows.extend(claim(tables.done(timing), planned))
        else:
            rows.extend(claim(grid, planned))
    rows.extend(size_grows_with_data(frame))
    rows.extend(pruning_beats_small(frame, costs))
    return pd.DataFrame([vars(row) for row in rows], columns=["claim", "test", "verdict", "evidence", "runs"])
