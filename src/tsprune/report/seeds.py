"""Seeds in the findings: each model's measured seed spread, and pruned-minus-dense differences paired by seed.

A difference between a pruned model and its dense parent is a finding only when it is larger than the noise of
training the dense model again with another seed. That noise is measured per model: its **seed spread** is the
range (max - min) of its dense test MSE over the seeds in the table. A pruned run is compared with the dense run of
*its own* seed (the pair shares data order and initialisation), and the **paired change** at a density is the mean
over seeds of ``pruned MSE - dense MSE``; a claim compares that mean with the model's spread.

A model with one seed has no measured spread. Its threshold is then :data:`SINGLE_SEED_STAND_IN` (0.05, from two
seeds of Informer's paper layout, 1.045 vs 1.094), and every text that uses it says so: the demo trains one seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SINGLE_SEED_STAND_IN = 0.05  # test MSE; used, and named, only where a model has fewer than two seeds


@dataclass(frozen=True)
class SeedNoise:
    """Per model: the seed spread of its dense test MSE (None with fewer than two seeds) and its seeds."""

    spread: dict[str, float | None]
    seeds: dict[str, list[int]]

    def threshold(self, model: str) -> float:
        """What a paired change must exceed to count: the model's spread, or the stand-in with one seed."""
        value = self.spread.get(model)
        return SINGLE_SEED_STAND_IN if value is None else value

    def measured(self, model: str) -> bool:
        return self.spread.get(model) is not None

    def describe(self, models: list[str]) -> str:
        """One sentence: each model's spread and seed count, or the stand-in where none was measured."""
        present = [model for model in models if model in self.seeds]
        parts = [f"{model} {self.spread[model]:.3f} ({len(self.seeds[model])} seeds)" for model in present
                 if self.measured(model)]
        single = [model for model in present if not self.measured(model)]
        if single:
            parts.append(f"{', '.join(single)} not measured (1 seed: {SINGLE_SEED_STAND_IN} assumed)")
        return "; ".join(parts)


def seed_noise(grid: pd.DataFrame) -> SeedNoise:
    """The seed spread of each model's dense runs in ``grid`` (one size and training fraction: the main grid)."""
    dense = grid[(grid["kind"] == "dense") & grid["mse"].notna()]
    spread: dict[str, float | None] = {}
    seeds: dict[str, list[int]] = {}
    for model, rows in dense.groupby("model", sort=False):
        per_seed = rows.groupby("seed")["mse"].mean()
        seeds[str(model)] = sorted(int(seed) for seed in per_seed.index)
        spread[str(model)] = float(per_seed.max() - per_seed.min()) if len(per_seed) > 1 else None
    return SeedNoise(spread, seeds)


def paired(rows: pd.DataFrame, grid: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (pruned runs) against the dense run of the same model and seed in ``grid``, by model and density.

    Columns: model, target_density, mse (seed mean), dense_mse (mean over the same seeds), change (mean over seeds
    of pruned minus dense), seeds (how many). A pruned run whose seed has no dense run is left out.
    """
    dense = grid[(grid["kind"] == "dense") & grid["mse"].notna()]
    base = dense.groupby(["model", "seed"])["mse"].mean().rename("dense_mse").reset_index()
    runs = rows[["model", "seed", "target_density", "mse"]].merge(base, on=["model", "seed"], how="inner")
    runs = runs.assign(change=runs["mse"] - runs["dense_mse"])
    # densities are floats from a schedule: round so 0.8**10 from two specs is one group
    runs = runs.assign(target_density=runs["target_density"].round(9))
    by_seed = runs.groupby(["model", "target_density", "seed"], as_index=False)[["mse", "dense_mse", "change"]].mean()
    out = by_seed.groupby(["model", "target_density"], as_index=False).agg(
        mse=("mse", "mean"), dense_mse=("dense_mse", "mean"), change=("change", "mean"), seeds=("seed", "nunique"))
    return out.sort_values(["model", "target_density"], ascending=[True, False], ignore_index=True)


def at_density(table: pd.DataFrame, density: float, atol: float = 1e-3) -> pd.DataFrame:
    """The rows of a :func:`paired` table at ``density``."""
    return table[np.isclose(table["target_density"], density, atol=atol)]
