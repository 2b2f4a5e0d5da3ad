"""The frontier (issue 32): is pruning a large forecaster worth it, or should one train a small one instead?

Every finished configuration of a combined results table becomes one **point**: test MSE as the seed mean with its
min-max spread over seeds, against three costs: non-zero parameters, effective FLOPs (``measure``'s convention:
zeros in Linear/Conv weights are not charged) and measured latency at batch 1 and 32. Points fall in three groups:

* ``dense``: the study's five models, trained at their default size;
* ``pruned``: their pruned variants (every method, density and fine-tuning budget of the tables given);
* ``small``: the small forecasters (``models.registry`` group ``small``) at each width of their ladder.

Latency and the dense FLOPs come from a **costs table** (``benchmarks/study/frontier_pass.py``): every point timed in
one alternating loop on one machine, on each engine it can run on (dense eager, ONNX Runtime, tsprune's sparse
engine), the fastest kept and named. A point is keyed by :data:`POINT_KEYS`; fine-tuning changes values, not the
structure, so a point's latency is its untuned twin's. Without a costs table the latency panels are empty and say so.

The Pareto front of each cost marks the points no other point beats on both cost and MSE. The finding "pruning a
large model beats training a small one" is decided at each point of the small-model ladder: among the pruned and
dense large models at most as costly, is the best one's seed-mean MSE lower by more than the larger of the two
points' seed spreads?
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tsprune.models.registry import model_names
from tsprune.report import tables
from tsprune.report.seeds import SINGLE_SEED_STAND_IN

POINT_KEYS = ["model", "size", "method", "variant", "target_density", "finetune_epochs"]
# The costs a point is placed by: column -> axis label
COSTS = {"nonzero_params": "non-zero parameters", "flops_effective": "effective FLOPs per window",
         "latency_b1_ms": "latency, batch 1 (ms)", "latency_b32_ms": "latency, batch 32 (ms)"}
GROUPS = ("dense", "pruned", "small")
DECIDING_COST = "latency_b32_ms"  # the cost the finding is decided on; the others are reported beside it


def points(frame: pd.DataFrame, costs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per configuration of ``frame`` (a ``tables.prepare``-d results table, any number of seeds): the
    :data:`POINT_KEYS`, ``group``, ``mse`` (seed mean), ``lo``/``hi`` (min/max over seeds), ``seeds``, the costs of
    :data:`COSTS` and ``run_ids`` (every run behind the point). ``costs`` (a frontier pass's table) supplies latency,
    the fastest engine and the FLOPs of dense points; its columns are those of :data:`POINT_KEYS` (but
    ``finetune_epochs``) plus ``engine``, ``flops``, ``latency_b1_ms``, ``latency_b32_ms``, ``cpu``."""
    done = tables.done(frame)
    done = done[done["mse"].notna() & np.isclose(done["train_fraction"], 1.0)]
    small = set(model_names("small"))
    study = done[~done["model"].isin(small) & (done["size"] == "default")]
    study = study[(study["kind"] == "dense") | (study["engine"] == "dense")]  # an engine twin is the same model
    rows = pd.concat([study, done[done["model"].isin(small) & (done["kind"] == "dense")]], ignore_index=True)
    if rows.empty:
        return pd.DataFrame(columns=[*POINT_KEYS, "group", "mse", "lo", "hi", "seeds", *COSTS, "engine", "cpu",
                                     "run_ids"])
    rows = rows.assign(variant=rows["variant"].fillna(""), target_density=rows["target_density"].round(6),
                       finetune_epochs=rows["finetune_epochs"].fillna(0).astype(int))
    out = rows.groupby(POINT_KEYS, as_index=False, sort=False).agg(
        mse=("mse", "mean"), lo=("mse", "min"), hi=("mse", "max"), seeds=("seed", "nunique"),
        nonzero_params=("nonzero_params", "mean"), flops_effective=("flops_effective", "mean"),
        run_ids=("run_id", lambda ids: " ".join(sorted(ids.dropna().astype(str)))))
    out["group"] = np.where(out["model"].isin(small), "small", np.where(out["method"] == "dense", "dense", "pruned"))
    out = _join_costs(out, costs)
    return out.sort_values(["group", "model", "size", "method", "target_density"], ignore_index=True)


def _join_costs(out: pd.DataFrame, costs: pd.DataFrame | None) -> pd.DataFrame:
    keys = [key for key in POINT_KEYS if key != "finetune_epochs"]
    if costs is None or costs.empty:
        return out.assign(latency_b1_ms=np.nan, latency_b32_ms=np.nan, engine=None, cpu=None)
    # a CSV read back gives an all-empty variant column as floats (NaN): text again
    variant = costs["variant"].astype(object).where(costs["variant"].notna(), "")
    costs = costs.assign(variant=variant, target_density=costs["target_density"].round(6))
    joined = out.merge(costs[[*keys, "engine", "flops", "latency_b1_ms", "latency_b32_ms", "cpu"]], on=keys,
                       how="left")
    # dense points have no effective FLOPs in a sweep without prune runs: the pass counted them
    joined["flops_effective"] = joined["flops_effective"].fillna(joined.pop("flops"))
    return joined


def pareto(frame: pd.DataFrame, cost: str) -> pd.Series:
    """True for the points on the front of ``cost`` against seed-mean MSE: no other point is at most as costly
    and more accurate. Points without that cost are never on it."""
    ordered = frame[frame[cost].notna()].sort_values([cost, "mse"])
    # a point is on the front when it is more accurate than every point at most as costly (those before it)
    before = ordered["mse"].cummin().shift(fill_value=np.inf)
    front = ordered.index[ordered["mse"] < before]
    return pd.Series(frame.index.isin(front), index=frame.index)


@dataclass(frozen=True)
class Duel:
    """One point of the small-model ladder against the best large model (dense or pruned) at most as costly."""

    small: str  # "PatchTST d64"
    small_mse: float
    cost: float
    rival: str | None  # "Autoformer magnitude 0.107 +ft1", None when no large model is that cheap
    rival_mse: float | None
    margin: float  # the larger seed spread of the two points
    verdict: str  # "pruned" (the large model wins by more than the margin), "small", or "tie"


def _label(row: pd.Series) -> str:
    if row["method"] == "dense":
        return f"{row['model']} {row['size']}" if row["group"] == "small" else f"{row['model']} dense"
    tuned = f" +ft{int(row['finetune_epochs'])}" if row["finetune_epochs"] else ""
    variant = f" ({row['variant']})" if row["variant"] else ""
    return f"{row['model']} {row['method']}{variant} {row['target_density']:.3g}{tuned}"


def _spread(row: pd.Series) -> float:
    return float(row["hi"] - row["lo"]) if row["seeds"] > 1 else SINGLE_SEED_STAND_IN


def duels(frame: pd.DataFrame, cost: str = DECIDING_COST) -> list[Duel]:
    """Each small-model point against the most accurate large model whose ``cost`` is at most its own."""
    costed = frame[frame[cost].notna()]
    large = costed[costed["group"] != "small"]
    out = []
    for _, small in costed[costed["group"] == "small"].sort_values(cost).iterrows():
        cheaper = large[large[cost] <= small[cost]]
        if cheaper.empty:
            out.append(Duel(_label(small), float(small["mse"]), float(small[cost]), None, None, _spread(small),
                            "small"))
            continue
        rival = cheaper.loc[cheaper["mse"].idxmin()]
        margin = max(_spread(small), _spread(rival))
        gap = float(small["mse"] - rival["mse"])
        verdict = "pruned" if gap > margin else "small" if gap < -margin else "tie"
        out.append(Duel(_label(small), float(small["mse"]), float(small[cost]), _label(rival), float(rival["mse"]),
                        margin, verdict))
    return out


def verdict(results: list[Duel]) -> tuple[str, str]:
    """``confirmed`` when a large model wins at every ladder point, ``refuted`` when it wins at none, ``partly``
    otherwise, ``open`` without timed ladder points; and the evidence."""
    if not results:
        return "open", "no small-model point with a measured cost"
    wins = sum(duel.verdict == "pruned" for duel in results)
    evidence = "; ".join(
        f"{duel.small} {duel.small_mse:.3f} vs " + (f"{duel.rival} {duel.rival_mse:.3f}" if duel.rival else
                                                     "no large model as cheap") + f" ({duel.verdict})"
        for duel in results)
    state = "confirmed" if wins == len(results) else "refuted" if wins == 0 else "partly"
    return state, f"large model better at {wins} of {len(results)}: {evidence}"
