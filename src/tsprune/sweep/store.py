"""The sweep directory: one JSON record per finished run and the dense run directories (the table over the records
is ``sweep.results``).

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tsprune.errors import TsPruneError
from tsprune.runtime import atomic_dir, atomic_write

RECORD_FORMAT = "tsprune-sweep-record/1"
RUN_FILES = ("model.safetensors", "config.json", "metrics.json")
WEIGHTS = RUN_FILES[0]  # what a record's weights_sha256 is the hash of
LOCKS = (".lock", ".measure.lock")  # hidden files that are no leftovers
_PID_TMP = re.compile(r"^\..+\.(\d+)\.tmp$")  # runtime.atomic_path's temporary names: .NAME.PID.tmp

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


