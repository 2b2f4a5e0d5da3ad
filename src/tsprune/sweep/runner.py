"""Run a sweep: plan it, work out what the sweep directory still lacks, hand that to an executor, record every
outcome as it arrives, and refresh the results table.

Resuming is the same call again: a run with a record is skipped; a run without one — never started, or interrupted
by Ctrl-C, ``kill -9`` or a reboot — is done again, a dense training continuing from its last finished epoch. A
failed run is done again when its failure is environmental (out of disk or memory, a lost worker: see
:mod:`tsprune.sweep.failures`) and its record has fewer than ``ENVIRONMENTAL_ATTEMPTS`` attempts, or with
``retry_failed``. The outcome says how many runs of the spec are not done at the end, by failure class; when the
store itself cannot be written (a full disk) the sweep stops and says so (``SweepOutcome.stopped``).

A sweep directory moved to a new machine often keeps its records but not its weights (they are not committed).
``rebuild`` runs again every finished prune run whose weights the sweep keeps (``keep_pruned``) but this directory
lacks and that no measuring pass has timed yet, so the pass can time it, and the dense runs those need. A run already
timed by a pass needs no weights any more. Runs are deterministic for a seed, a thread count and a code version: the
new record says what the old one measured (``metrics.rebuilt``), so a rebuild that does not reproduce its record
shows. ``rebuild="dense"`` runs again only those dense runs: a measuring pass with ``reprune`` then times the prune
runs on their pruning made again from them, which costs seconds where a fine-tuning costs an epoch.

``defer_timing`` skips each prune run's own latency timing: a sweep that runs beside other work (or on several
workers) times under load, and its measuring pass (``tsprune sweep measure``) times every kept run again anyway. Its
records say ``latency_deferred`` until that pass; the timing was about a third of an untuned prune run's time. A
sparse-engine run leaves its compilation (which times kernels) to the pass too (``compile_deferred``).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from tsprune.config import write_json
from tsprune.errors import TsPruneError
from tsprune.sweep.cost import prune_seconds
from tsprune.sweep.executors import make_executor
from tsprune.sweep.failures import DETERMINISTIC, ENVIRONMENTAL, ENVIRONMENTAL_ATTEMPTS, failure_of, \
    retried_by_itself, to_retry
from tsprune.sweep.work import Work
from tsprune.sweep.plan import DenseRun, Plan, PruneRun, plan_sweep
from tsprune.sweep.progress import SweepProgress
from tsprune.sweep.spec import SweepSpec
from tsprune.sweep.store import StoreWriteError, SweepStore, run_dir_complete
from tsprune.sweep.results import write_results
from tsprune.sweep.tasks import parent_failed


@dataclass
class SweepOutcome:
    planned: int
    skipped: int  # recorded before this call
    done: int  # finished now
    failed: int  # failed now
    seconds: float
    results: Path
    failures: dict[str, int] = field(default_factory=dict)  # failed now, by failure class
    left: dict[str, int] = field(default_factory=dict)  # the spec's runs not done at the end: by class, "unrecorded"
    retry_next: int = 0  # of those, environmental failures the same command run again retries by itself
    stopped: str | None = None  # why the sweep stopped early (the store could not be written), or None

    @property
    def complete(self) -> bool:
        """Every planned run done and recorded."""
        return not any(self.left.values()) and self.stopped is None

    def summary_lines(self) -> list[str]:
        """What ``sweep run`` prints: this call's counts, then, when the spec is not done, what is left and what
        to do about it."""
        lines = [f"{self.done} run(s) done, {failed_text(self.failed, self.failures)}, {self.skipped} already "
                 f"recorded, in {self.seconds:.0f}s; results: {self.results}"]
        failed = sum(self.left.get(name, 0) for name in (DETERMINISTIC, ENVIRONMENTAL))
        unrecorded = self.left.get("unrecorded", 0)
        if self.complete:
            return lines
        advice = []
        if self.retry_next:
            advice.append(f"{self.retry_next} environmental failure(s) are retried by running the same command again")
        exhausted = self.left.get(ENVIRONMENTAL, 0) - self.retry_next
        if exhausted:
            advice.append(f"{exhausted} environmental failure(s) reached the limit of {ENVIRONMENTAL_ATTEMPTS} "
                          "attempts")
        if exhausted or self.left.get(DETERMINISTIC):
            advice.append("--retry-failed reruns failed runs of either class once their cause is fixed")
        if unrecorded:
            advice.append(f"running the same command again runs the {unrecorded} unrecorded run(s)")
        state = failed_text(failed, self.left) + (f", {unrecorded} not recorded" if unrecorded else "")
        lines.append(f"not complete: of the spec's {self.planned} runs, {state}: {'; '.join(advice)}")
        return lines


def failed_text(count: int, by_class: dict[str, int]) -> str:
    """``3 failed (1 deterministic, 2 environmental)``; a single class without its count: ``10 failed
    (environmental)``; ``0 failed``."""
    classes = [(name, by_class.get(name, 0)) for name in (DETERMINISTIC, ENVIRONMENTAL) if by_class.get(name)]
    if not count or not classes:
        return f"{count} failed"
    if len(classes) == 1:
        return f"{count} failed ({classes[0][0]})"
    return f"{count} failed ({', '.join(f'{n} {name}' for name, n in classes)})"


class StoreReporter:
    """The driver's side of an executor: writes each record (and any run files) and advances the progress. A
    record of a finished run whose directory is here gets the hash of its weights. An ``OSError`` while writing
    is a :class:`StoreWriteError`: the sweep stops (the run has no record, so it is done again next time)."""

    def __init__(self, store: SweepStore, records: dict[str, dict[str, Any]], progress: SweepProgress) -> None:
        self.store, self.records, self.progress = store, records, progress
        self.failures: collections.Counter[str] = collections.Counter()

    def started(self, run: DenseRun | PruneRun) -> None:
        self.progress.started(run)

    def finished(self, run: DenseRun | PruneRun, record: dict[str, Any], files: dict[str, bytes] | None = None) -> None:
        previous = self.records.get(run.run_id)
        record["attempt"] = (previous or {}).get("attempt", 0) + 1
        if previous is not None and previous.get("status") == "done" and record.get("status") == "done":
            record["metrics"] = {**record["metrics"], "rebuilt": rebuilt_against(previous, record)}
        try:
            if files:  # the run directory first: a record always vouches for files that are there
                self.store.write_run_files(run.run_id, files)
            if record.get("status") == "done":
                record.pop("weights_sha256", None)
                digest = self.store.weights_digest(run.run_id)
                if digest is not None:
                    record["weights_sha256"] = digest
            self.store.write_record(record)
        except OSError as exc:
            raise StoreWriteError(store_write_message(self.store, exc)) from exc
        self.records[run.run_id] = record
        failure = failure_of(record)
        if failure is not None:
            self.failures[failure] += 1
        self.progress.finished(record, run.labels.describe())


def store_write_message(store: SweepStore, exc: OSError) -> str:
    """One line for a store that could not be written."""
    where = f" writing {exc.filename}" if exc.filename else ""
    return (f"cannot write the sweep directory {store.root} ({exc.strerror or exc}{where}): free space or fix the "
            "disk, then run the same command again (recorded runs are kept; the others run again)")


def rebuilt_against(previous: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """What a rebuilt run's earlier record measured, and whether the rebuild reproduced its test error."""
    before, after = previous.get("metrics") or {}, record.get("metrics") or {}
    same = all(before.get(key) is not None and after.get(key) is not None
               and abs(float(after[key]) - float(before[key])) <= 1e-6 * max(1.0, abs(float(before[key])))
               for key in ("mse", "mae"))
    return {"mse_before": before.get("mse"), "mae_before": before.get("mae"), "reproduced": same,
            "git_rev_before": previous.get("git_rev"), "finished_before": previous.get("finished_at"),
            "threads_before": previous.get("threads")}


# What ``rebuild`` runs again: the unmeasured runs without their kept weights and their dense runs, or (for a
# measuring pass that prunes again) those dense runs alone.
REBUILD_MODES = ("kept", "dense")


def rebuild_mode(rebuild: bool | str | None) -> str | None:
    """``rebuild`` as one of :data:`REBUILD_MODES` (True: ``kept``), or None."""
    if rebuild in (None, False):
        return None
    mode = "kept" if rebuild is True else str(rebuild)
    if mode not in REBUILD_MODES:
        raise TsPruneError(f"rebuild must be one of {', '.join(REBUILD_MODES)}, got {rebuild!r}",
                           options=("rebuild",))
    return mode


def pending_work(plan: Plan, store: SweepStore, records: dict[str, dict[str, Any]], retry_failed: bool,
                 keep_pruned: bool, rebuild: bool | str | None = None
                 ) -> tuple[Work, list[tuple[PruneRun, dict[str, Any]]]]:
    """What is left of ``plan`` given the ``records``, plus the records to write at once (prune runs whose dense
    run failed and is not retried). ``rebuild``: also the finished prune runs whose kept weights are missing here and
    that a measuring pass has still to time, or (``"dense"``) only their dense runs (see the module doc)."""
    mode = rebuild_mode(rebuild)

    def unmeasured_without_weights(run_id: str) -> bool:
        record = records.get(run_id) or {}
        timed_by_pass = bool((record.get("metrics") or {}).get("latency_pass"))
        return (mode is not None and keep_pruned and record.get("status") == "done" and not timed_by_pass
                and not run_dir_complete(store.run_dir(run_id)))

    def todo(run_id: str) -> bool:
        record = records.get(run_id)
        if record is None:
            return True
        if record.get("status") != "done":
            return to_retry(record, retry_failed)
        return mode == "kept" and unmeasured_without_weights(run_id)

    work = Work(store, keep_pruned=keep_pruned)
    at_once: list[tuple[PruneRun, dict[str, Any]]] = []
    children = plan.children()
    for dense in plan.dense:
        # Longest first within a family (a family stays together: workers keep its dense run loaded), so the
        # fine-tunings start early instead of ending the sweep with one worker busy and the others idle.
        waiting = sorted((run for run in children.get(dense.run_id, []) if todo(run.run_id)), key=prune_seconds,
                         reverse=True)
        record = records.get(dense.run_id)
        finished = record is not None and record.get("status") == "done"
        if finished and store.dense_complete(dense.run_id):
            work.ready.extend(waiting)
        elif record is not None and not finished and not to_retry(record, retry_failed):
            at_once.extend((run, parent_failed(run, record)) for run in waiting)
        elif (not finished or waiting  # never done, to retry, or its weights gone but still needed
              or (mode == "dense" and any(unmeasured_without_weights(run.run_id)
                                          for run in children.get(dense.run_id, [])))):
            work.dense.append(dense)
            work.waiting[dense.run_id] = waiting
    return work, at_once


def run_sweep(spec: SweepSpec, sweep_dir: str | Path, executor: str = "local", workers: int | None = None,
              address: str | None = None, retry_failed: bool = False, gpus_per_run: float = 0.0,
              threads: int | None = None, progress: bool = True, console: Console | None = None,
              reuse_dense: str | Path | None = None, rebuild: bool | str | None = None,
              defer_timing: bool = False) -> SweepOutcome:
    """Run (or resume) ``spec`` in ``sweep_dir`` and return counts; records land in ``sweep_dir/records``.

    ``workers`` runs at a time, each with ``threads`` torch threads (default: cores // workers). ``reuse_dense``:
    another sweep directory whose finished dense runs of the same configuration are taken instead of training them
    (:meth:`SweepStore.reuse_dense`). ``rebuild``: run again the finished runs whose kept weights are missing,
    or with ``"dense"`` only their dense runs (see the module doc). ``defer_timing``: prune runs take no timings of
    their own (the spec must keep its pruned models, for the measuring pass to time).
    """
    if defer_timing and not spec.keep_pruned:
        raise TsPruneError("defer_timing needs a spec with keep_pruned: true (the measuring pass times the kept "
                           "pruned models)", options=("defer_timing",))
    rebuild = rebuild_mode(rebuild)
    runner = make_executor(executor, workers=workers, address=address, gpus_per_run=gpus_per_run, threads=threads)
    plan = plan_sweep(spec)
    store = SweepStore(sweep_dir)
    started = time.perf_counter()
    with store.lock():
        try:
            store.prepare()
            write_json(store.root / "spec.json", spec.to_dict())  # the latest spec run here, for the record
            if reuse_dense is not None:
                store.reuse_dense([run.run_id for run in plan.dense], reuse_dense)
        except OSError as exc:
            raise StoreWriteError(store_write_message(store, exc)) from None
        records = store.records()
        work, at_once = pending_work(plan, store, records, retry_failed, spec.keep_pruned, rebuild)
        work.timed = not defer_timing
        todo = len(work.dense) + len(work.ready) + sum(map(len, work.waiting.values())) + len(at_once)
        in_flight = "running" if executor == "local" else "submitted"
        stopped = None
        with SweepProgress(todo, len(plan) - todo, progress, console, in_flight) as bar:
            reporter = StoreReporter(store, records, bar)
            try:
                for run, record in at_once:
                    reporter.finished(run, record)
                runner.run(work, reporter)
            except StoreWriteError as exc:
                stopped = str(exc)
            finally:
                results, unwritten = refresh_results(store)
    left, retry_next = what_is_left(plan, records)
    return SweepOutcome(len(plan), len(plan) - todo, bar.done, bar.failed, time.perf_counter() - started, results,
                        failures=dict(reporter.failures), left=left, retry_next=retry_next,
                        stopped=stopped or unwritten)


def refresh_results(store: SweepStore) -> tuple[Path, str | None]:
    """Rewrite ``results.parquet`` from the records; when it cannot be written, the old one stays (it is written
    atomically) and the second value says so."""
    path = store.root / "results.parquet"
    try:
        return write_results(store.root), None
    except OSError as exc:
        return path, (f"{path} not refreshed ({exc.strerror or exc}): the records are complete; once there is room, "
                      f"`tsprune results {store.root} --export {path}` writes it")


def what_is_left(plan: Plan, records: dict[str, dict[str, Any]]) -> tuple[dict[str, int], int]:
    """The planned runs not done in ``records``: counts by failure class and ``unrecorded``; and how many of them
    the same command run again retries by itself."""
    left: collections.Counter[str] = collections.Counter()
    retry_next = 0
    for run in plan.runs():
        record = records.get(run.run_id)
        if record is None:
            left["unrecorded"] += 1
        elif record.get("status") != "done":
            left[failure_of(record) or DETERMINISTIC] += 1
            retry_next += retried_by_itself(record)
    return dict(left), retry_next
