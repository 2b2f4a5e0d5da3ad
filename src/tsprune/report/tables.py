"""From the sweep results table (one row per run) to the numbers the report shows.

Everything here is plain pandas and returns numeric frames; ``render`` formats them and ``figures`` plots them.
The selections (``done``, ``main_grid``, ``untuned``) are shared by both, so a figure and a table never disagree
about which runs they summarise.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import cast

import numpy as np
import pandas as pd

from tsprune.config import PruneConfig
from tsprune.errors import error_gist  # the report's name for it too (render uses tables.error_gist)
from tsprune.prune import methods

# Keys of one forecasting task: a table or panel never averages MSE across these.
TASK = ["model", "dataset", "pred_len"]
# Keys of one series: a curve, a table row or a legend entry per method *and* variant (the method options a grid
# set away from their defaults, e.g. "importance=taylor"), so DepGraph with L2 and with Taylor importance are two
# curves, never one average. ``series_labels`` names them; every grouping in the report uses these keys.
SERIES = ["method", "variant"]

NUMERIC_COLUMNS = (
    "pred_len", "seed", "train_fraction", "target_density", "finetune_epochs", "mse", "mae", "mse_raw", "mae_raw",
    "dense_mse", "dense_mae", "params", "nonzero_params", "params_dense", "density_prunable", "density_total",
    "flops", "flops_dense", "flops_ratio", "flops_effective", "flops_effective_ratio", "latency_ms",
    "latency_dense_ms", "speedup", "train_seconds", "prune_seconds", "wall_seconds", "epochs_run", "threads",
)
TEXT_COLUMNS = (
    "run_id", "parent_id", "kind", "status", "error", "model", "dataset", "size", "method", "variant", "recipe",
    "engine",
    "torch", "device", "git_rev", "tsprune_version",
)
ENVIRONMENT = ("torch", "threads", "device", "git_rev", "tsprune_version")

TOLERANCE = 0.05


def is_structured(method: str) -> bool:
    """Structured methods are drawn dashed and compared on real FLOPs, unstructured ones on effective FLOPs."""
    return methods.is_structured(method)


def text_groups(frame: pd.DataFrame, column: str) -> Iterator[tuple[str, pd.DataFrame]]:
    """``frame.groupby(column)`` over a text column such as ``model`` or ``method``, each value typed as the string
    it is (pandas types group keys as any scalar)."""
    for value, rows in frame.groupby(column):
        yield cast(str, value), rows


def variant_options(variant: object) -> list[tuple[str, str]]:
    """``"calibration_windows=4,importance=taylor"`` -> ``[("calibration_windows", "4"), ("importance", "taylor")]``;
    no variant (``""``, None, NaN) -> ``[]``."""
    if not isinstance(variant, str):
        return []
    return [(key, value) for key, _, value in (part.partition("=") for part in variant.split(",") if part)]


def _option_text(key: str, value: str) -> str:
    """A word names itself (``taylor``, ``layer``); a number or a switch needs its option (``damping=0.01``)."""
    word = re.fullmatch(r"[A-Za-z][\w-]*", value) is not None and value not in ("True", "False", "None")
    return value if word or not key else f"{key}={value}"


def series_label(method: str, variant: object) -> str:
    """``depgraph (taylor)`` for method depgraph with variant ``importance=taylor``; the method alone without one."""
    options = [_option_text(key, value) for key, value in variant_options(variant)]
    return f"{method} ({', '.join(options)})" if options else method


def series_labels(frame: pd.DataFrame) -> pd.Series:
    """Per row, the label of its series (:data:`SERIES`). Where a method also has other variants in ``frame``, its
    default variant is spelt out with the defaults of the options they set (``depgraph (l2)`` beside
    ``depgraph (taylor)``), so no label reads as if it were all of the method's runs."""
    methods_ = frame["method"].astype(object).where(frame["method"].notna(), "unknown")
    variants = frame["variant"] if "variant" in frame else pd.Series([None] * len(frame), index=frame.index)
    varied: dict[str, set[str]] = {}
    for method, variant in zip(methods_, variants):
        varied.setdefault(method, set()).update(key for key, _ in variant_options(variant))
    defaults = PruneConfig()

    def label(method: str, variant: object) -> str:
        if not variant_options(variant) and varied.get(method):
            variant = ",".join(f"{key}={getattr(defaults, key)}" for key in sorted(varied[method])
                               if hasattr(defaults, key))
        return series_label(method, variant)

    pairs = {(m, v if isinstance(v, str) else ""): "" for m, v in zip(methods_, variants)}
    labels = {pair: label(*pair) for pair in pairs}
    taken = pd.Series(list(labels.values())).value_counts()
    for (method, variant), text in labels.items():  # two variants shortened alike keep their full options
        if taken[text] > 1 and variant:
            labels[method, variant] = f"{method} ({variant.replace(',', ', ')})"
    return pd.Series([labels[m, v if isinstance(v, str) else ""] for m, v in zip(methods_, variants)],
                     index=frame.index, dtype=object)


def series_groups(frame: pd.DataFrame) -> Iterator[tuple[str, str, pd.DataFrame]]:
    """``(method, label, rows)`` per series (:data:`SERIES`) of a prepared ``frame``, in method and variant order."""
    for key, rows in frame.groupby([*SERIES, "series"], sort=True):
        method, _, label = cast(tuple[str, str, str], key)  # text columns
        yield method, label, rows


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with every column the report reads, numbers as floats and blanks filled with the sweep's defaults.

    Old or partial tables (a missing column, ``None`` for a dense row's method, no size) then need no special
    case anywhere else.
    """
    out = frame.copy().reset_index(drop=True)
    for column in NUMERIC_COLUMNS:
        out[column] = pd.to_numeric(out[column], errors="coerce") if column in out else np.nan
        out[column] = out[column].astype(float)
    for column in TEXT_COLUMNS:
        values = out[column] if column in out else pd.Series([None] * len(out), index=out.index, dtype=object)
        out[column] = values.astype(object).where(values.notna(), None)
    kind = out["kind"].fillna(out["method"].map(lambda m: "dense" if m == "dense" else None)).fillna("prune")
    out["kind"] = kind.astype(object)
    out["method"] = out["method"].fillna(out["kind"].map(lambda k: "dense" if k == "dense" else "unknown"))
    dense = out["kind"] == "dense"
    out.loc[dense, "target_density"] = out.loc[dense, "target_density"].fillna(1.0)
    out["finetune_epochs"] = out["finetune_epochs"].fillna(0.0)
    out["train_fraction"] = out["train_fraction"].fillna(1.0)
    out["size"] = out["size"].fillna("default")
    out["dataset"] = out["dataset"].fillna("?")
    out["model"] = out["model"].fillna("?")
    out["engine"] = out["engine"].fillna("dense")
    out["variant"] = out["variant"].fillna("")  # no variant: the method at its defaults
    out["series"] = series_labels(out)
    out["status"] = out["status"].fillna("unknown").astype(str).str.lower()
    return out


# --------------------------------------------------------------------------------------------------- selections


def done(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs that finished; failed ones only appear in the failed-runs table."""
    return frame[frame["status"] == "done"]


def accuracy_view(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows for accuracy figures and tables: a sparse-engine run repeats the MSE of its dense-engine twin (same
    parent, method and variant, density and fine-tuning), so it is dropped where that twin exists and kept where it
    is alone."""
    twin_keys = ["parent_id", *SERIES, "target_density", "finetune_epochs"]
    sparse = frame["engine"] != "dense"
    if not sparse.any():
        return frame
    twins = frame.loc[~sparse & (frame["kind"] == "prune"), twin_keys].drop_duplicates()
    has_twin = frame[twin_keys].merge(twins.assign(_twin=True), on=twin_keys, how="left")["_twin"].fillna(False)
    return frame[~(sparse & has_twin.to_numpy(dtype=bool))]


def main_size(frame: pd.DataFrame) -> str | None:
    """The model size most runs use (the first listed on a tie): the size of the pruning grid."""
    sizes = frame["size"].dropna()
    return None if sizes.empty else str(sizes.value_counts(sort=False).idxmax())


def main_fraction(frame: pd.DataFrame) -> float:
    """The largest training fraction: the pruning grid trains on all the data it has."""
    fractions = frame["train_fraction"].dropna()
    return float(fractions.max()) if not fractions.empty else 1.0


def main_grid(frame: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows at the main size and the largest train fraction, chosen on ``reference`` (default: ``frame``).

    Pass the whole table as ``reference`` when ``frame`` is already filtered, so the grid stays the same.
    """
    reference = frame if reference is None else reference
    size, fraction = main_size(reference), main_fraction(reference)
    keep = (frame["size"] == size) & np.isclose(frame["train_fraction"], fraction)
    return frame[keep]


def untuned(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Dense rows plus the pruned rows with the fewest fine-tuning epochs (0 unless every run was fine-tuned).

    Returns the rows and that epoch count, so a title can say when "before fine-tuning" is not available.
    """
    pruned = frame["kind"] == "prune"
    epochs = frame.loc[pruned, "finetune_epochs"]
    least = float(epochs.min()) if not epochs.empty else 0.0
    return frame[~pruned | (frame["finetune_epochs"] == least)], int(least)


def grid_description(frame: pd.DataFrame) -> str:
    """One line saying which runs the main-grid figures and tables use."""
    return f"model size '{main_size(frame) or '?'}', {main_fraction(frame):.0%} of the training data"


def density_x(frame: pd.DataFrame) -> pd.Series:
    """Fraction of *all* parameters kept (non-zero), so masked and shrunk models compare on what they keep."""
    return frame["density_total"].fillna(frame["target_density"])


def flops_reduction(frame: pd.DataFrame) -> pd.Series:
    """Dense FLOPs over pruned FLOPs: real FLOPs for structured methods, non-zero-weight FLOPs for unstructured."""
    structured = frame["method"].map(is_structured).astype(bool)
    ratio = frame["flops_ratio"].where(structured, frame["flops_effective_ratio"])
    return 1.0 / ratio.where(ratio > 0)


# --------------------------------------------------------------------------------------------------- tables


def best_within(frame: pd.DataFrame, tolerance: float = TOLERANCE) -> pd.DataFrame:
    """Per task and method, the lowest target density whose seed-mean MSE is within ``tolerance`` of dense.

    The dense MSE is the seed mean of the pruned runs' own ``dense_mse`` (their parents), falling back to the
    dense rows of the grid. Densities are not assumed monotone: the lowest qualifying one wins. A method where no
    density qualifies keeps one row with a blank density, so "nothing kept accuracy" is visible.
    """
    grid, _ = untuned(main_grid(accuracy_view(done(frame)), frame))
    grid = grid[grid["mse"].notna()]
    dense_ref = grid[grid["kind"] == "dense"].groupby(TASK, dropna=False)["mse"].mean().rename("dense_ref")
    pruned = grid[grid["kind"] == "prune"]
    columns = TASK + [*SERIES, "series", "target_density", "density_total", "mse", "dense_mse", "mse_change",
                      "speedup", "flops_ratio", "flops_effective_ratio", "runs"]
    if pruned.empty:
        return pd.DataFrame(columns=columns)
    stats = (pruned.groupby(TASK + [*SERIES, "series", "target_density"], dropna=False)
             .agg(density_total=("density_total", "mean"), mse=("mse", "mean"), dense_mse=("dense_mse", "mean"),
                  speedup=("speedup", "mean"), flops_ratio=("flops_ratio", "mean"),
                  flops_effective_ratio=("flops_effective_ratio", "mean"), runs=("mse", "size"))
             .reset_index().join(dense_ref, on=TASK))
    stats["dense_mse"] = stats["dense_mse"].fillna(stats["dense_ref"])
    stats["mse_change"] = stats["mse"] / stats["dense_mse"] - 1.0
    stats["ok"] = stats["mse"] <= (1.0 + tolerance) * stats["dense_mse"]
    rows: list[dict] = []
    series = TASK + [*SERIES, "series"]  # the label follows from the keys; grouped by too, to keep it
    for key, group in stats.groupby(series, dropna=False, sort=True):
        good = group[group["ok"]]
        if good.empty:
            rows.append(dict(zip(series, key)))
        else:
            rows.append(good.loc[cast(int, good["target_density"].idxmin())].to_dict())  # a label of a reset index
    return pd.DataFrame(rows).reindex(columns=columns)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Seed means per task, method, target density and fine-tuning on the main grid: the sweep in one table."""
    grid = main_grid(done(frame), frame)
    keys = TASK + [*SERIES, "series", "engine", "target_density", "finetune_epochs"]
    columns = keys + ["mse", "density_total", "flops_ratio", "flops_effective_ratio", "speedup", "runs"]
    if grid.empty:
        return pd.DataFrame(columns=columns)
    table = (grid.groupby(keys, dropna=False)
             .agg(mse=("mse", "mean"), density_total=("density_total", "mean"), flops_ratio=("flops_ratio", "mean"),
                  flops_effective_ratio=("flops_effective_ratio", "mean"), speedup=("speedup", "mean"),
                  runs=("mse", "size"))
             .reset_index())
    table["_dense_last"] = table["method"] != "dense"
    order = TASK + ["_dense_last", "method", "series", "engine", "target_density", "finetune_epochs"]
    table = table.sort_values(order, ascending=[key != "target_density" for key in order])
    return table.drop(columns="_dense_last").reset_index(drop=True)[columns]


def compute(frame: pd.DataFrame) -> pd.DataFrame:
    """What the runs cost: per model, grid, run kind and device, the runs, their summed wall hours and thread-hours.

    ``grid`` is "main" for the pruning grid's size and training fraction and "size x data" for the other dense
    and pruned runs. Thread-hours weigh each run's wall time by its thread count: core-hours when each run had its
    threads' cores to itself, an upper bound when parallel workers shared cores. Runs in parallel workers overlap in
    real time, so the wall hours of a row are the sum over its runs, not the time the sweep took. A last row
    ("all") sums the table. Runs without a wall time (failed before recording one) count as runs only.

    Wall time is what each record measured: the process that finished the run. Two kinds of run did work that
    this does not see, and ``training_hours`` (the summed ``train_seconds``: every epoch, in whichever process
    ran it) shows it: a training resumed after a stopped process (its earlier processes' epochs), and a dense run
    copied into the sweep (the demo's shipped checkpoints: seconds of wall time, their training done elsewhere).
    """
    keys = ["model", "grid", "kind", "device"]
    columns = keys + ["runs", "wall_hours", "thread_hours", "training_hours"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    grid_keys = main_grid(frame).index
    rows = frame.assign(grid=np.where(frame.index.isin(grid_keys), "main", "size x data"),
                        device=frame["device"].fillna("?"), wall_hours=frame["wall_seconds"] / 3600,
                        thread_hours=frame["wall_seconds"] * frame["threads"].fillna(1.0) / 3600,
                        training_hours=frame["train_seconds"] / 3600)
    sums = {name: (name, "sum") for name in ("wall_hours", "thread_hours", "training_hours")}
    table = rows.groupby(keys, dropna=False).agg(runs=("run_id", "size"), **sums).reset_index()
    table = table.sort_values(["model", "grid", "kind"]).reset_index(drop=True)
    total = {"model": "all", "grid": "", "kind": "", "device": distinct(rows["device"]), "runs": len(rows),
             **{name: rows[name].sum() for name in sums}}
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)[columns]


def failed(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs that did not finish, with the gist of their error (the last line of a traceback)."""
    columns = ["run_id", "status", "model", "dataset", "pred_len", "size", *SERIES, "series", "target_density",
               "seed", "error"]
    rows = frame[frame["status"] != "done"]
    table = rows.reindex(columns=columns).copy()
    table["error"] = rows["error"].map(error_gist)
    return table.reset_index(drop=True)


def header(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """Counts and the environment the runs recorded, as (label, value) pairs for the top of the report."""
    counts = frame["status"].value_counts()
    other = int(len(frame) - counts.get("done", 0) - counts.get("failed", 0))
    runs = f"{len(frame)} ({counts.get('done', 0)} done, {counts.get('failed', 0)} failed"
    runs += f", {other} other)" if other else ")"
    pairs = [("Runs", runs)]
    for column, label in (("model", "Models"), ("dataset", "Datasets"), ("pred_len", "Horizons"),
                          ("series", "Methods"), ("size", "Model sizes"), ("train_fraction", "Train fractions")):
        pairs.append((label, distinct(frame[column])))
    pairs.append(("Main grid", grid_description(frame)))
    pairs.extend((column, distinct(frame[column])) for column in ENVIRONMENT)
    return pairs


def distinct(values: pd.Series, limit: int = 6) -> str:
    """The distinct non-blank values in order of appearance, e.g. ``"2.13.0, 2.12.1"``; "—" when none."""
    seen = [format_value(v) for v in pd.unique(values.dropna())]
    if not seen:
        return "—"
    more = f" (+{len(seen) - limit} more)" if len(seen) > limit else ""
    return ", ".join(seen[:limit]) + more


def format_value(value: object) -> str:
    """Whole floats print as integers (``96.0`` is a horizon of 96, ``2.0`` two threads)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)
