"""The study's claims, one row each, decided by the numbers of a sweep's results table.

Each claim of "A Comparative Study of Pruning Methods in Transformer-based Time Series Forecasting" (arXiv
2412.12883) is turned into a test written out in the table, so a reader can disagree with the test rather than
with a verdict. A verdict is ``confirmed``, ``partly``, ``refuted``, or ``open`` when the runs it needs are not
(all) in the table; the evidence column gives the deciding numbers and ``runs`` how many finished runs they come
from. Nothing here is typed by hand: the same table always gives the same findings.

Differences in MSE smaller than :data:`SEED_SPREAD` are not findings. It is the spread between two seeds of the
same model and protocol that we measured (Informer on ETTh1/96: 1.045 and 1.094), the only seed spread this
machine has paid for; a model "keeps its accuracy" while its MSE stays within it of the dense MSE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd

from tsprune.models.registry import model_names
from tsprune.prune.methods import DEPGRAPH, MAGNITUDE
from tsprune.report import tables

SEED_SPREAD = 0.05  # test MSE; see the module doc
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


def _dense_mse(grid: pd.DataFrame) -> dict[str, float]:
    dense = grid[(grid["kind"] == "dense") & grid["mse"].notna()]
    return cast(dict[str, float], dense.groupby("model")["mse"].mean().to_dict())


def kept_down_to(rows: pd.DataFrame, dense_mse: float) -> float | None:
    """The lowest density such that it and every density above it keep the MSE within the seed spread of dense;
    None when the first density already does not."""
    lowest = None
    for density, mse in rows.groupby("target_density")["mse"].mean().sort_index(ascending=False).items():
        if mse > dense_mse + SEED_SPREAD:
            break
        lowest = float(cast(float, density))  # a target density (pandas types index labels as Hashable)
    return lowest


def _pct(value: float | None) -> str:
    return "none" if value is None else f"{value:.1%}" if value >= 0.1 else f"{value:.2%}"


def magnitude_keeps_accuracy(grid: pd.DataFrame, planned: list[str]) -> list[Finding]:
    dense = _dense_mse(grid)
    rows = _pruned(grid, MAGNITUDE)
    kept = {model: kept_down_to(rows[rows["model"] == model], dense[model])
            for model in planned if model in dense and (rows["model"] == model).any()}
    lowest = {model: float(rows.loc[rows["model"] == model, "target_density"].min()) for model in kept}

    def decided(model: str, threshold: float) -> bool:
        """Whether the runs so far settle how far ``model`` keeps its accuracy, as far as ``threshold``."""
        value = kept[model]
        return value is None or value > lowest[model] + 1e-9 or lowest[model] <= threshold + 1e-9

    runs = len(rows) + len(dense)
    evidence = "; ".join(f"{model} {_pct(kept[model])}" for model in sorted(kept, key=lambda m: kept[m] or 1.0))
    test = (f"each model's MSE stays within +{SEED_SPREAD} of dense, without fine-tuning, at every density down to "
            f"{_pct(FINETUNE_DENSITY)} (global magnitude; the densities listed are how far each one kept it)")
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


def structured_inconsistent(grid: pd.DataFrame, planned: list[str]) -> list[Finding]:
    dense = _dense_mse(grid)
    rows = _pruned(grid, DEPGRAPH)
    at = _at(rows, FINETUNE_DENSITY)
    change = {model: float(group["mse"].mean()) - dense[model] for model, group in tables.text_groups(at, "model")
              if model in dense}
    reversals = {}
    for model, group in tables.text_groups(rows, "model"):
        curve = group.groupby("target_density")["mse"].mean().sort_index(ascending=False).to_numpy()
        rises = np.maximum.accumulate(curve) - curve  # how far the MSE fell back below its worst so far
        reversals[model] = int((rises > SEED_SPREAD).sum())
    test = (f"across models, the MSE change at DepGraph density {_pct(FINETUNE_DENSITY)} spans more than "
            f"{2 * SEED_SPREAD:.2f}, or some model's MSE falls back by more than {SEED_SPREAD} as density decreases")
    evidence = "; ".join(f"{model} {change[model]:+.3f}" for model in sorted(change))
    bumpy = [model for model, count in reversals.items() if count]
    if bumpy:
        evidence += f"; non-monotone: {', '.join(sorted(bumpy))}"
    if not change or len(change) < len(planned):
        return [Finding("DepGraph (structured) pruning is inconsistent across models", test, "open", evidence,
                        len(rows))]
    spread = max(change.values()) - min(change.values())
    verdict = "confirmed" if spread > 2 * SEED_SPREAD and bumpy else "partly" if spread > 2 * SEED_SPREAD or bumpy \
        else "refuted"
    return [Finding("DepGraph (structured) pruning is inconsistent across models", test, verdict,
                    f"span {spread:.3f}: {evidence}", len(rows))]


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
    findings = []
    for method in (MAGNITUDE, DEPGRAPH):
        before = _at(_pruned(grid, method), HIGH_SPARSITY)
        after = _at(_pruned(grid, method, finetune=1), HIGH_SPARSITY)
        dense = _dense_mse(grid)
        pairs = {}
        for model in sorted(set(before["model"]) & set(after["model"]) & set(dense)):
            pairs[model] = (float(before.loc[before["model"] == model, "mse"].mean()),
                            float(after.loc[after["model"] == model, "mse"].mean()), dense[model])
        needed = [m for m, (b, a, d) in pairs.items() if b > d + SEED_SPREAD and a < b - SEED_SPREAD]
        test = (f"{method} at {_pct(HIGH_SPARSITY)}: without fine-tuning the MSE is more than {SEED_SPREAD} above "
                f"dense, and one epoch of fine-tuning (masks kept) lowers it by more than {SEED_SPREAD}")
        evidence = "; ".join(f"{m} {b:.3f} → {a:.3f} (dense {d:.3f})" for m, (b, a, d) in pairs.items())
        runs = len(before) + len(after)
        if not pairs or len(pairs) < len(planned):
            findings.append(Finding(f"Fine-tuning is needed ({method})", test, "open", evidence, runs))
            continue
        share = len(needed) / len(pairs)
        verdict = "confirmed" if share >= 0.8 else "refuted" if share <= 0.2 else "partly"
        findings.append(Finding(f"Fine-tuning is needed ({method})", test, verdict,
                                f"{len(needed)} of {len(pairs)} models: {evidence}", runs))
    return findings


def size_grows_with_data(frame: pd.DataFrame) -> list[Finding]:
    done = tables.done(frame)
    dense = done[(done["kind"] == "dense") & done["mse"].notna() & done["params"].gt(0)]
    test = ("for the model with a size x data study, the dense model size with the lowest MSE does not shrink as "
            f"the training fraction grows, and at the full split it beats the best size of the smallest fraction "
            f"by more than {SEED_SPREAD}")
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
        verdict = "confirmed" if grows and gain > SEED_SPREAD else "refuted" if not grows else "partly"
        evidence = "; ".join(f"{fraction:.0%} of the data: {size} (MSE {mse.loc[(fraction, size)]:.3f})"
                             for fraction, size in sorted(best.items()))
        evidence += f"; at {top:.0%}, {best[top]} beats {best[small]} by {gain:.3f}"
        findings.append(Finding(f"Model size must grow with dataset size ({model})", test, verdict, evidence,
                                len(rows)))
    return findings


CLAIMS: list[Callable[..., list[Finding]]] = [magnitude_keeps_accuracy, structured_inconsistent, flops_without_time,
                                              finetuning_needed]


def findings(frame: pd.DataFrame, timing: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per claim (columns claim, test, verdict, evidence, runs) from a ``tables.prepare``-d results table.

    ``timing``, when given, is a prepared table whose speedups decide the time claims instead (the demo's speed
    part, timed at full size).
    """
    grid = tables.main_grid(tables.done(frame), frame)
    planned = model_names()  # the study's claims are about its five models
    rows: list[Finding] = []
    for claim in CLAIMS:
        if claim is flops_without_time and timing is not None:
            rows.extend(claim(tables.done(timing), planned))
        else:
            rows.extend(claim(grid, planned))
    rows.extend(size_grows_with_data(frame))
    return pd.DataFrame([vars(row) for row in rows], columns=["claim", "test", "verdict", "evidence", "runs"])
