"""The sweep directory: one JSON record per finished run, the dense run directories, and a table over the records.

    SWEEP_DIR/records/<run_id>.json   written atomically (temp file, fsync, rename) by the driver only
    SWEEP_DIR/runs/<run_id>/          dense run directories (resumable training), pruned ones with keep_pruned
    SWEEP_DIR/results.parquet         the consolidated table, rewritten by DuckDB after each sweep run

Records are the source of truth: a record is there completely or not at all, so a sweep killed at any moment
resumes by redoing exactly the runs that have no record. A record that cannot be read (cut short by a full disk, a
copy gone wrong) counts as missing: its run is done again, and the commands that read records say they skipped it.
A finished run whose directory the sweep keeps has the SHA-256 of its weights in its record (``weights_sha256``),
so ``tsprune sweep check`` can tell a run directory changed after its record was written.

Every write goes through a hidden temporary name and a rename (``runtime.atomic_path``, ``runtime.atomic_dir``):
a kill leaves the old file and a hidden leftover (``.NAME.PID.tmp``, ``.NAME.*``), which :meth:`SweepStore.prepare`
removes. An ``OSError`` while writing the store (a full disk) is a :class:`StoreWriteError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from tsprune.errors import TsPruneError
from tsprune.runtime import atomic_dir, atomic_path, atomic_write
from tsprune.sweep.failures import failure_of

RECORD_FORMAT = "tsprune-sweep-record/1"
RUN_FILES = ("model.safetensors", "config.json", "metrics.json")
WEIGHTS = RUN_FILES[0]  # what a record's weights_sha256 is the hash of
LOCKS = (".lock", ".measure.lock")  # hidden files that are no leftovers
_PID_TMP = re.compile(r"^\..+\.(\d+)\.tmp$")  # runtime.atomic_path's temporary names: .NAME.PID.tmp

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


class StoreWriteError(TsPruneError):
    """The sweep directory could not be written (out of space, an I/O error): the sweep stops; what was written
    before is intact, and the same command run again once the disk is fixed resumes."""


class SweepStore:
    """Reads and writes one sweep directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.records_dir = self.root / "records"
        self.runs_dir = self.root / "runs"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the directory for one sweep process (released by the OS even on ``kill -9``)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                message = f"another sweep is running in {self.root}: wait for it or use another --dir"
                raise TsPruneError(message) from None
            yield

    def busy(self) -> bool:
        """Whether a sweep or a measuring pass holds this directory now (tested without creating anything)."""
        for name in LOCKS:
            if not (self.root / name).is_file():
                continue
            with open(self.root / name) as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(handle, fcntl.LOCK_UN)
        return False

    def prepare(self) -> None:
        """Create the folders and remove what an interrupted writer left behind (:meth:`leftovers`)."""
        self.records_dir.mkdir(parents=True, exist_ok=True)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.leftovers():
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

    def leftovers(self) -> list[Path]:
        """What interrupted writers left behind: temporary files (``.NAME.PID.tmp``, in the directory, records/ and
        each run directory) whose process is gone, and staging folders in runs/ (``.NAME.*``)."""
        found = list(self.runs_dir.glob(".*")) if self.runs_dir.is_dir() else []
        temporary = [*self.root.glob(".*.tmp"), *self.records_dir.glob(".*.tmp")] if self.root.is_dir() else []
        for folder in self.runs_dir.glob("[!.]*") if self.runs_dir.is_dir() else []:
            temporary += folder.rglob(".*.tmp")  # a run's files, and its training state
        found += [path for path in temporary if path.is_file() and not _writer_alive(path)]
        return sorted(set(found))

    def scan(self) -> tuple[dict[str, dict[str, Any]], dict[Path, str]]:
        """Every readable record by run id, and every unreadable record file with why it cannot be read (an
        unreadable record counts as missing: its run is done again)."""
        found: dict[str, dict[str, Any]] = {}
        unreadable: dict[Path, str] = {}
        for path in sorted(self.records_dir.glob("*.json")) if self.records_dir.is_dir() else []:
            record, problem = read_record(path)
            if record is None:
                unreadable[path] = problem
            else:
                found[path.stem] = record
        return found, unreadable

    def records(self) -> dict[str, dict[str, Any]]:
        """Every readable record by run id (an unreadable one counts as missing: its run is redone)."""
        return self.scan()[0]

    def write_record(self, record: dict[str, Any]) -> Path:
        path = self.records_dir / f"{record['run_id']}.json"
        atomic_write(path, json.dumps(record, indent=1) + "\n")
        return path

    def weights_digest(self, run_id: str) -> str | None:
        """The SHA-256 of a complete run directory's weights, or None when the directory is not complete here."""
        folder = self.run_dir(run_id)
        return file_digest(folder / WEIGHTS) if run_dir_complete(folder) else None

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def dense_complete(self, run_id: str) -> bool:
        return run_dir_complete(self.run_dir(run_id))

    def read_run_files(self, run_id: str) -> dict[str, bytes]:
        return {name: (self.run_dir(run_id) / name).read_bytes() for name in RUN_FILES}

    def reuse_dense(self, run_ids: list[str], source: str | Path) -> int:
        """Take finished dense runs from another sweep directory ``source``: each of ``run_ids`` this store has no
        record of, done there with its directory complete, gets that directory and record here (hard links where
        the filesystem allows, else copies). The same id is the same configuration, so nothing is retrained.
        Returns how many were taken; ``source`` is only read."""
        other = SweepStore(source)
        if not other.records_dir.is_dir():
            raise TsPruneError(f"{other.root} is not a sweep directory (no records/): check reuse_dense",
                               options=("reuse_dense",))
        theirs, ours = other.records(), self.records()
        taken = 0
        for run_id in run_ids:
            record = theirs.get(run_id)
            if (run_id in ours or record is None or record.get("kind") != "dense" or record.get("status") != "done"
                    or not other.dense_complete(run_id)):
                continue
            with atomic_dir(self.run_dir(run_id)) as staging:
                for name in RUN_FILES:
                    try:
                        os.link(other.run_dir(run_id) / name, staging / name)
                    except OSError:  # another filesystem, or links not allowed
                        shutil.copyfile(other.run_dir(run_id) / name, staging / name)
            digest = self.weights_digest(run_id)  # the files here, whatever the other record says
            self.write_record({**record, "reused_from": str(other.root), "weights_sha256": digest})  # after them
            taken += 1
        return taken

    def write_run_files(self, run_id: str, files: dict[str, bytes]) -> Path:
        """Write a run directory received as bytes (from a remote worker) via a staging folder and a rename."""
        with atomic_dir(self.run_dir(run_id)) as staging:
            for name, payload in files.items():
                (staging / name).write_bytes(payload)
        return self.run_dir(run_id)


def run_dir_complete(folder: Path) -> bool:
    """A finished run directory: all its files there and no training state left to resume."""
    return all((folder / name).is_file() for name in RUN_FILES) and not (folder / "training_state").exists()


def file_digest(path: Path) -> str:
    """The SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_record(path: Path) -> tuple[dict[str, Any] | None, str]:
    """The record in ``path``, or None and why it is not one (truncated JSON, another format, another run's)."""
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        size = path.stat().st_size if path.exists() else 0
        return None, f"not valid JSON ({size} bytes: truncated or corrupt)"
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or type(exc).__name__})"
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return None, f"not a {RECORD_FORMAT} record"
    if record.get("run_id") != path.stem:
        return None, f"holds run {record.get('run_id')!r}, not the run its name says"
    return record, ""


def _writer_alive(path: Path) -> bool:
    """Whether the process that named the temporary file ``path`` (``.NAME.PID.tmp``) still runs here."""
    match = _PID_TMP.match(path.name)
    pid = int(match.group(1)) if match else 0
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # a process of another user
    return True


def skipped_note(store: SweepStore, unreadable: dict[Path, str]) -> str:
    """One line saying which unreadable records a reader skipped, and what to do."""
    first, reason = next(iter(unreadable.items()))
    more = f" and {len(unreadable) - 1} more" if len(unreadable) > 1 else ""
    return (f"skipped {len(unreadable)} unreadable record(s) in {store.records_dir} ({first.name}: {reason}{more}); "
            f"`tsprune sweep check {store.root}` lists them and `tsprune sweep run` runs them again")


# --- the table ----------------------------------------------------------------------------------------------------


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
