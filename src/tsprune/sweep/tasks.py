"""What a worker does for one run — train a dense model, or prune one — and the record that describes the outcome.

These functions never raise for a run that fails: the failure (divergence, out-of-memory, an unreachable density,
any error) becomes a record with status ``failed`` and its class (:mod:`tsprune.sweep.failures`), so one bad run
never stops a sweep. Only an interrupt (Ctrl-C) propagates. Each worker process keeps the dense runs it last used,
with their measured baseline, so the prune runs of one dense model load and measure it once, and its last pruned
model, so a masked run and its sparse-engine twin prune, fine-tune and evaluate once.

Those caches live as long as the worker process, which on Ray outlives a task and a sweep (a cluster's workers run
the tasks of every driver). So a dense run is cached under its id *and the hash of its weights* (the same id
trained elsewhere, say with other threads, may differ in its last bits), and a pruning is reused only by the twin
that follows it in one unit of twins (``twin_of_previous``), never by a later task that happens to ask for the
same pruning: a task's records describe work done for it.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import platform
import subprocess
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tsprune._version import __version__
from tsprune.config import PruneConfig
from tsprune.errors import TsPruneError, exception_record
from tsprune.prune.pipeline import PrunedModel
from tsprune.run import Run, load_run
from tsprune.sweep.failures import DETERMINISTIC, classify, failure_of, mark_failed
from tsprune.sweep.plan import DenseRun, PruneRun
from tsprune.sweep.store import RECORD_FORMAT, WEIGHTS, file_digest, run_dir_complete

DENSE_CACHE_SIZE = 2  # dense runs (model + baseline) a worker keeps loaded
_DENSE: OrderedDict[tuple[str, str], Run] = OrderedDict()  # by (run id, weights hash)
_BASELINES: dict[tuple, dict[str, Any]] = {}
_PRUNED: PrunedModel | None = None  # the last pruning outcome, for its engine twin in the same unit


def _remember(pruned: PrunedModel) -> None:
    global _PRUNED
    pruned.model.cpu()  # each use copies it to the run's device
    _PRUNED = pruned


def execute_dense(run: DenseRun, out: Path, threads: int) -> dict[str, Any]:
    """Train ``run`` into ``out`` (resuming an interrupted training there) and return its record."""

    def work() -> dict[str, Any]:
        from tsprune.train import train_run
        from tsprune.runtime import configure_threads

        if run_dir_complete(out):  # trained earlier, the record was lost to an interruption
            return load_run(out).metrics
        configure_threads(threads)  # not in TrainConfig: the run's configuration must not depend on the workers
        return train_run(run.config, out=out, progress=False).metrics

    return _attempt(run, threads, work)


def execute_prune(run: PruneRun, dense_dir: Path, threads: int, keep: Path | None = None,
                  timed: bool = True, twin_of_previous: bool = False) -> dict[str, Any]:
    """Prune the dense run in ``dense_dir`` as ``run`` says; write the pruned run to ``keep`` when given. ``timed``
    False leaves its timing to the measuring pass. ``twin_of_previous``: ``run`` is the engine twin of the run
    this worker executed just before, in the same unit, and takes that run's pruning; otherwise it prunes anew."""
    global _PRUNED
    config = run.config if run.config.threads is not None else dataclasses.replace(run.config, threads=threads)
    if not twin_of_previous:
        _PRUNED = None  # never another task's pruning, whatever it was pruned from

    def work() -> dict[str, Any]:
        dense, baseline = _dense(run.parent_id, dense_dir, config)
        from tsprune.prune.pipeline import prune_model, prune_run, pruning_key

        # Engine twins (the plan puts them side by side, executors send them as one unit) prune, fine-tune and
        # evaluate once in a worker.
        key = pruning_key(dense, config)
        reused = _PRUNED is not None and _PRUNED.source_id == key
        if not reused:
            _remember(prune_model(dense, config, baseline=baseline))
        metrics = prune_run(dense, config, keep, overwrite=True, baseline=baseline, pruned=_PRUNED,
                            timed=timed).metrics
        return {**metrics, "pruning_reused": reused}  # True: its twin's pruning, fine-tuning and evaluation

    return _attempt(run, config.threads or threads, work)


def execute_prunes(runs: list[PruneRun], dense_dir: Path, threads: int, keeps: list[Path | None],
                   timed: bool = True) -> list[dict[str, Any]]:
    """Engine twins one after the other in this worker (:func:`execute_prune` each), so they share one pruning,
    fine-tuning and evaluation; their records in order."""
    return [execute_prune(run, dense_dir, threads, keep, timed, twin_of_previous=index > 0)
            for index, (run, keep) in enumerate(zip(runs, keeps))]


def parent_failed(run: PruneRun, parent: dict[str, Any]) -> dict[str, Any]:
    """The record of a prune run that cannot start because its dense run failed; its failure class is the dense
    run's (an environmental one is retried with it)."""
    now = now_utc()
    record = make_record(run, "failed", {}, f"dense run failed: {parent.get('error') or 'unknown error'}", now, now,
                         0.0, None)
    return mark_failed(record, failure_of(parent) or DETERMINISTIC)


def _dense(run_id: str, folder: Path, config: PruneConfig) -> tuple[Run, dict[str, Any]]:
    """The dense run and its baseline at ``config``'s measurement settings, from this worker's cache (keyed by the
    run id and the hash of the weights in ``folder``: another copy of the run with other weights is loaded)."""
    from tsprune.prune.pipeline import dense_baseline

    cached = (run_id, file_digest(folder / WEIGHTS))
    if cached not in _DENSE:
        _DENSE[cached] = load_run(folder)
        while len(_DENSE) > DENSE_CACHE_SIZE:
            evicted, _ = _DENSE.popitem(last=False)
            for key in [key for key in _BASELINES if key[0] == evicted]:
                del _BASELINES[key]
    _DENSE.move_to_end(cached)
    dense = _DENSE[cached]
    key = (cached, tuple(config.batch_sizes), config.threads, config.device)
    if key not in _BASELINES:
        _BASELINES[key] = dense_baseline(dense, config)
    return dense, _BASELINES[key]


def _attempt(run: DenseRun | PruneRun, threads: int, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started, clock = now_utc(), time.perf_counter()
    failure = None
    try:
        metrics, status, error, trace = work(), "done", None, None
    except Exception as exc:  # noqa: BLE001 - a failed run is a result; Ctrl-C (BaseException) still stops
        metrics, status, error, failure = {}, "failed", exception_record(exc), classify(exc)
        trace = None if isinstance(exc, TsPruneError) else traceback.format_exc(limit=8)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # an out-of-memory run must not starve the next one
    record = make_record(run, status, metrics, error, started, now_utc(), time.perf_counter() - clock, threads)
    if trace:
        record["traceback"] = trace
    return record if failure is None else mark_failed(record, failure)


def make_record(run: DenseRun | PruneRun, status: str, metrics: dict[str, Any], error: str | None, started: str,
                finished: str, wall_seconds: float, threads: int | None) -> dict[str, Any]:
    """A run's record: what it was (labels, full configuration), what came out, and where and when it ran."""
    config = run.identity()
    if isinstance(run, PruneRun):
        config["dense"] = run.parent.identity()["config"]
    environment = metrics.get("environment") or {}
    requested = run.config.train.device if isinstance(run, DenseRun) else run.config.device
    return {
        "format": RECORD_FORMAT, "run_id": run.run_id, "parent_id": run.parent_id, "kind": run.kind,
        "status": status, "error": error, "labels": dataclasses.asdict(run.labels), "config": config,
        "metrics": metrics, "started_at": started, "finished_at": finished, "wall_seconds": wall_seconds,
        "attempt": 1, "threads": environment.get("threads", threads), "device": metrics.get("device") or requested,
        "torch": torch.__version__, "host": platform.node(), "git_rev": git_revision(),
        "tsprune_version": __version__,
    }


def now_utc() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@functools.cache
def git_revision() -> str:
    """The git commit of the tsprune source in use: asked of git in a checkout, read from ``_commit.py`` in a
    ``git archive`` export (how long sweeps run from a frozen copy), else the version."""
    package = Path(__file__).resolve().parents[1]
    if "site-packages" not in package.parts:
        try:
            found = subprocess.run(["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True,
                                   timeout=10, check=False)
            if found.returncode == 0 and found.stdout.strip():
                return found.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    from tsprune._commit import COMMIT

    return __version__ if COMMIT.startswith("$") else COMMIT
