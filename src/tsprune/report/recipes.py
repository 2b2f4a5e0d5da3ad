"""Recipes at high sparsity (issue 33): which way of reaching 10.7% (and 5%) density keeps a model nearest its
dense accuracy within the study's fine-tuning budget of one epoch?

Every finished, dense-engine prune run whose pruning is a recipe (``prune.recipes.recipe_of``, the table's
``recipe`` column: old records have one too, so the study's magnitude runs fine-tuned for an epoch are the
``magnitude-ft`` baseline) at one of :data:`DENSITIES` is paired with the dense run of its own model, size and
seed. Per model, recipe, density and budget: the seed-mean MSE, its min-max spread over seeds, the paired change
(mean over seeds of pruned minus dense) and the machine minutes a run took (pruning, fine-tuning and evaluation:
the record's ``prune_seconds``).

Recipes are ranked, per model size and density, by the mean over models of the relative paired change, among the
recipes that have every model of that size at the one-epoch budget: the **best recipe** is the first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tsprune.prune.recipes import BUDGET_EPOCHS, recipe_names
from tsprune.report import tables

DENSITIES = (0.8**10, 0.05)  # the study's 90%-sparsity headline (0.107) and a harder 5%
KEYS = ["size", "model", "recipe", "target_density", "finetune_epochs"]
COLUMNS = [*KEYS, "seeds", "mse", "lo", "hi", "dense_mse", "change", "relative", "minutes", "run_ids"]


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per :data:`KEYS` from a ``tables.prepare``-d results table (columns :data:`COLUMNS`), ordered by
    size, density (descending), model and the recipes' order in ``prune.recipes``."""
    done = tables.done(frame)
    done = done[done["mse"].notna() & np.isclose(done["train_fraction"], 1.0)]
    near = np.zeros(len(done), dtype=bool)
    for density in DENSITIES:
        near |= np.isclose(done["target_density"], density, atol=1e-3)
    runs = done[(done["kind"] == "prune") & done["recipe"].notna() & (done["engine"] == "dense") & near]
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    dense = done[done["kind"] == "dense"].groupby(["model", "size", "seed"])["mse"].mean()
    runs = runs.merge(dense.rename("dense_mse_paired").reset_index(), on=["model", "size", "seed"], how="inner")
    runs = runs.assign(change=runs["mse"] - runs["dense_mse_paired"],
                       target_density=runs["target_density"].round(3),
                       finetune_epochs=runs["finetune_epochs"].astype(int))
    out = runs.groupby(KEYS, as_index=False).agg(
        seeds=("seed", "nunique"), mse=("mse", "mean"), lo=("mse", "min"), hi=("mse", "max"),
        dense_mse=("dense_mse_paired", "mean"), change=("change", "mean"),
        minutes=("prune_seconds", lambda s: s.mean() / 60), run_ids=("run_id", lambda s: " ".join(sorted(s))))
    out = out.assign(relative=out["change"] / out["dense_mse"])
    order = {name: i for i, name in enumerate(recipe_names())}
    out = out.assign(_order=out["recipe"].map(order), _density=-out["target_density"])
    out = out.sort_values(["size", "_density", "model", "_order", "finetune_epochs"], ignore_index=True)
    return out[COLUMNS]


def ranking(table: pd.DataFrame, size: str, density: float) -> list[tuple[str, float]]:
    """``(recipe, mean relative change over models)`` at ``size`` and ``density`` with the one-epoch budget, best
    first, among the recipes that have every model of that size there."""
    rows = table[(table["size"] == size) & np.isclose(table["target_density"], density, atol=1e-3)
                 & (table["finetune_epochs"] == BUDGET_EPOCHS)]
    models = set(rows["model"])
    scores = [(str(recipe), float(group["relative"].mean())) for recipe, group in rows.groupby("recipe")
              if set(group["model"]) == models]
    return sorted(scores, key=lambda item: item[1])


def best(table: pd.DataFrame, size: str, density: float = DENSITIES[0]) -> str | None:
    """The best recipe at ``size`` and ``density`` (:func:`ranking`), None without one."""
    ranked = ranking(table, size, density)
    return ranked[0][0] if ranked else None
