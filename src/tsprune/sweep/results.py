"""The results table of a sweep: one row per record (columns :data:`COLUMNS`), read from a sweep directory's
records (``sweep.store``) or from a table exported from one, queried with DuckDB and written atomically.

    SWEEP_DIR/results.parquet         the consolidated table, rewritten by DuckDB after each sweep run
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from tsprune.errors import TsPruneError
from tsprune.runtime import atomic_path
from tsprune.sweep.failures import failure_of
from tsprune.sweep.store import SweepStore, skipped_note

# Column -> pandas dtype of the results table, in display order.
COLUMNS: dict[str, str] = {
    "run_id": "str", "parent_id": "str", "kind": "str", "status": "str", "error": "str", "failure": "str",
    "model": "str", "dataset": "str", "pred_len": "Int64", "seed": "Int64", "size": "str",
    "train_fraction": "float64", "method": "str", "target_density": "float64", "finetune_epochs": "Int64",
    "engine": "str", "variant": "str", "recipe": "str",
    "mse": "float64", "mae": "float64", "mse_raw": "float64", "mae_raw": "float64", "dense_mse": "float64",
    "dense_mae": "float64", "params": "Int64", "nonzero_params": "Int64", "params_dense": "Int64",
    "density_prunable": "float64", "density_total": "float64", "flops": "Int64", "flops_dense": "Int64",
    "flops_ratio": "float64", "flops_effective": "Int64", "flops_effective_ratio": "float64",
    "latency_ms": "float64", "latency_dense_ms": "float64", "speedup": "float64", "latency_measured": "str",
    "emptied_layers": "Int64", "method_seconds": "float64",
    "train_seconds": "float64", "prune_seconds": "float64", "wall_seconds": "float64", "epochs_run": "Int64",
    "attempt": "Int64", "retries": "Int64", "node": "str", "config_json": "str", "torch": "str", "threads": "Int64",
    "device": "str", "host": "str",
    "git_rev": "str", "tsprune_version": "str", "started_at": "str", "finished_at": "str",
}
LABELS = ("model", "dataset", "pred_len", "seed", "size", "train_fraction", "method", "target_density",
          "finetune_epochs", "engine", "variant")
METRICS = ("mse", "mae", "mse_raw", "mae_raw", "dense_mse", "dense_mae", "params", "nonzero_params", "params_dense",
           "density_prunable", "density_total", "flops", "flops_dense", "flops_ratio", "flops_effective",
           "flops_effective_ratio", "latency_ms", "latency_dense_ms", "speedup", "emptied_layers", "method_seconds",
           "train_seconds", "prune_seconds", "epochs_run")
RUN_FIELDS = ("run_id", "parent_id", "kind", "status", "error", "failure", "wall_seconds", "attempt", "retries", "node",
              "torch", "threads", "device", "host", "git_rev", "tsprune_version", "started_at", "finished_at")


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One table row from one record; a dense row is its own baseline (density 1, FLOP ratio 1, speedup 1)."""
    metrics = record.get("metrics") or {}
    row: dict[str, Any] = {key: record.get(key) for key in RUN_FIELDS}
    row.update({key: (record.get("labels") or {}).get(key) for key in LABELS})
    row.update({key: metrics.get(key) for key in METRICS})
    row["failure"] = failure_of(record)  # older records: from their error text
    row["config_json"] = json.dumps(record.get("config"), sort_keys=True)
    row["recipe"] = _recipe(record.get("config"))
    if record.get("kind") == "prune":  # records written before recipes were labelled get their recipe variant here
        from tsprune.prune.recipes import with_recipe

        row["variant"] = with_recipe(row["variant"] or "", row["recipe"])
    # where the timing comes from: the measuring pass (a quiet machine; on the run's pruning made again when its
    # weights were gone) or the sweep itself (whatever else ran)
    timing_pass = metrics.get("latency_pass") or {}
    row["latency_measured"] = (("pass-repruned" if timing_pass.get("weights") == "repruned" else "pass")
                               if timing_pass else "sweep" if metrics.get("latency_ms")
                               else "deferred" if metrics.get("latency_deferred") else None)
    if record.get("kind") == "dense" and record.get("status") == "done":
        row.update(dense_mse=row["mse"], dense_mae=row["mae"], params_dense=row["params"],
                   nonzero_params=row["params"], density_prunable=1.0, density_total=1.0, flops_ratio=1.0,
                   flops_effective_ratio=1.0, speedup=1.0)
    return row


def _recipe(config: Any) -> str | None:
    """The recipe (``prune.recipes``) of a record's configuration: derived, so records older than recipes have one."""
    from tsprune.prune.recipes import recipe_of

    prune = config.get("prune") if isinstance(config, dict) else None
    return recipe_of(prune) if isinstance(prune, dict) else None


def _fill_dense_costs(frame: pd.DataFrame) -> pd.DataFrame:
    """Dense rows take the dense FLOPs and latency their prune runs measured (the median over them)."""
    done = frame[(frame["kind"] == "prune") & (frame["status"] == "done")]
    if done.empty:
        return frame
    by_parent = done.groupby("parent_id").agg(flops=("flops_dense", "first"),
                                              latency=("latency_dense_ms", "median"))
    dense = (frame["kind"] == "dense") & frame["run_id"].isin(by_parent.index)
    parents = frame.loc[dense, "run_id"]
    for column in ("flops", "flops_dense", "flops_effective"):
        frame.loc[dense, column] = parents.map(by_parent["flops"]).astype("Int64").to_numpy()
    for column in ("latency_ms", "latency_dense_ms"):
        frame.loc[dense, column] = parents.map(by_parent["latency"]).to_numpy()
    return frame


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame([flatten(record) for record in records], columns=list(COLUMNS))
    frame = frame.astype(COLUMNS)
    return _fill_dense_costs(frame).sort_values(["kind", "model", "dataset", "pred_len", "size", "train_fraction",
                                                 "seed", "method", "finetune_epochs", "target_density"],
                                                ascending=[True] * 9 + [False], ignore_index=True)


Warn = Callable[[str], None]  # told, in one line, about records a reader skipped


def load_results(sweep_dir: str | Path, warn: Warn | None = None) -> pd.DataFrame:
    """The sweep's results: one row per recorded run (columns :data:`COLUMNS`), read from its records; ``warn`` is
    told about unreadable records, which are left out."""
    store = SweepStore(sweep_dir)
    if not store.records_dir.is_dir():
        raise TsPruneError(f"{sweep_dir} is not a sweep directory (no records/ folder): run `tsprune sweep run`")
    records, unreadable = store.scan()
    if unreadable and warn is not None:
        warn(skipped_note(store, unreadable))
    return records_frame(list(records.values()))


def read_results(source: str | Path, warn: Warn | None = None) -> pd.DataFrame:
    """The results of a sweep directory, or a results table exported from one (``.parquet`` or ``.csv``)."""
    path = Path(source)
    if path.is_dir():
        return load_results(path, warn)
    if not path.is_file():
        raise TsPruneError(f"{path} is not a sweep directory or a results table (not found): give a sweep directory "
                           "or a results .parquet/.csv file")
    import duckdb

    reader = "read_parquet" if path.suffix.lower() == ".parquet" else "read_csv_auto"
    try:
        relation = duckdb.sql(f"SELECT * FROM {reader}('{_sql_string(path)}')")
        if relation is None:  # only a statement without a result gives none; a SELECT always has one
            raise TypeError("no result")
        frame = relation.df()
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise TsPruneError(f"{path} is not a readable results table ({type(exc).__name__}): export one with "
                           "`tsprune results DIR --export FILE.parquet`") from None
    missing = [column for column in ("run_id", "kind", "status", "model", "mse") if column not in frame]
    if missing:
        raise TsPruneError(f"{path} is not a tsprune results table (no {', '.join(missing)} column)")
    if "recipe" not in frame and "config_json" in frame:  # exported before recipes: derived as a sweep does
        frame["recipe"] = [_recipe(json.loads(text)) if isinstance(text, str) else None
                           for text in frame["config_json"]]
    return frame


def query(sweep_dir: str | Path, sql: str, warn: Warn | None = None) -> pd.DataFrame:
    """Run DuckDB ``sql`` over a view named ``runs`` holding :func:`load_results`."""
    import duckdb

    connection = duckdb.connect()
    connection.register("runs", load_results(sweep_dir, warn))
    try:
        return connection.sql(sql).df()
    except duckdb.Error as exc:
        raise TsPruneError(f"query failed: {' '.join(str(exc).split())}") from None
    finally:
        connection.close()


EXPORT_FORMATS = {".parquet": "(FORMAT parquet)", ".csv": "(FORMAT csv, HEADER)"}


def export(sweep_dir: str | Path, path: str | Path, warn: Warn | None = None) -> Path:
    """Write the results table to ``path`` (``.parquet`` or ``.csv``) with DuckDB, atomically."""
    return write_table(load_results(sweep_dir, warn), path)


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` to ``path`` (``.parquet`` or ``.csv``) with DuckDB, atomically: DuckDB writes a hidden
    temporary sibling, which is fsynced and renamed over ``path`` only once complete, so a kill or a full disk
    while writing leaves the old file as it was (:func:`tsprune.runtime.atomic_path`)."""
    import duckdb

    path = Path(path)
    options = EXPORT_FORMATS.get(path.suffix.lower())
    if options is None:
        raise TsPruneError(f"cannot export to {path.name}: use a .parquet or .csv file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = duckdb.connect()
    try:
        connection.register("runs", frame)
        with atomic_path(path) as tmp:
            connection.execute(f"COPY runs TO '{_sql_string(tmp)}' {options}")
    except duckdb.IOException as exc:  # a full disk, as the OSError it is
        raise OSError(f"cannot write {path}: {' '.join(str(exc).split())}") from exc
    finally:
        connection.close()
    return path


def _sql_string(path: Path) -> str:
    return str(path).replace("'", "''")


def write_results(sweep_dir: str | Path) -> Path:
    """Refresh ``SWEEP_DIR/results.parquet`` from the records."""
    return export(sweep_dir, Path(sweep_dir) / "results.parquet")
