"""Executors run the work of a sweep and hand every record back to the driver (``Reporter``), which alone writes the
store. ``local`` runs in this process or in a pool of spawned processes; ``ray`` (``ray_executor``) runs on a Ray
cluster. Both train a dense run before the prune runs that start from it.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, cast

from tsprune.errors import TsPruneError
from tsprune.sweep.failures import ENVIRONMENTAL, mark_failed
from tsprune.sweep.plan import DenseRun, PruneRun
from tsprune.sweep.tasks import execute_dense, execute_prune, execute_prunes, make_record, now_utc
from tsprune.sweep.work import (
    Executor, Reporter, Work, available_cores, check_counts, next_unit, settle_dense, thread_budget)


class LocalExecutor:
    """``workers`` 1: every run in this process, each dense run followed by its prune runs. More: a pool of spawned
    processes, never more runs handed out than there are workers. Each run uses ``threads`` torch threads
    (default ``cores // workers``)."""

    def __init__(self, workers: int | None = None, address: str | None = None, gpus_per_run: float = 0.0,
                 threads: int | None = None) -> None:
        if address is not None:
            raise TsPruneError("address is for the ray executor: set executor to 'ray'",
                               options=("address", "executor"))
        if gpus_per_run:
            raise TsPruneError("gpus_per_run is for the ray executor; the local executor uses the spec's device",
                               options=("gpus_per_run",))
        self.workers = workers or 1
        check_counts(self.workers, threads)
        self.threads = threads or thread_budget(available_cores(), self.workers)

    def run(self, work: Work, report: Reporter) -> None:
        if self.workers == 1:
            self._serial(work, report)
        else:
            self._pool(work, report)

    def _serial(self, work: Work, report: Reporter) -> None:
        self._prune_here(work.ready, work, report)
        for dense in work.dense:
            report.started(dense)
            record = execute_dense(dense, work.store.run_dir(dense.run_id), self.threads)
            self._prune_here(settle_dense(dense, record, work, report), work, report)

    def _prune_here(self, runs: list[PruneRun], work: Work, report: Reporter) -> None:
        """Prune ``runs`` here, engine twins as one unit (the later twins take the first one's pruning)."""
        queue: collections.deque[DenseRun | PruneRun] = collections.deque(runs)
        while queue:
            for index, run in enumerate(cast(list[PruneRun], next_unit(queue))):  # prune runs in, prune runs out
                report.started(run)
                report.finished(run, execute_prune(run, work.store.run_dir(run.parent_id), self.threads,
                                                   work.keep_dir(run), work.timed, twin_of_previous=index > 0))

    def _pool(self, work: Work, report: Reporter) -> None:
        # Prune runs go first (their dense run is loaded in some worker already); a finished dense run's prune
        # runs jump the queue so results arrive early and the worker caches stay warm. Engine twins (side by side
        # in the queue) go to one worker as one task: apart, each worker would prune and fine-tune them again.
        queue: collections.deque[DenseRun | PruneRun] = collections.deque([*work.ready, *work.dense])
        in_flight: dict[Future, list[DenseRun | PruneRun]] = {}
        pool = self._new_pool()
        try:
            while queue or in_flight:
                while queue and len(in_flight) < self.workers:
                    unit = next_unit(queue)
                    task, args = self._call(unit, work)
                    in_flight[pool.submit(task, *args)] = unit
                    for run in unit:
                        report.started(run)
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    if future not in in_flight:  # already settled as lost when another worker crashed
                        continue
                    unit = in_flight.pop(future)
                    try:
                        result = future.result()
                        records = result if isinstance(result, list) else [result]
                    except BrokenProcessPool:  # a worker died (killed, out of memory): fail what was in flight
                        records = [_crashed(run) for run in unit]
                        pool.shutdown(wait=False, cancel_futures=True)
                        pool = self._new_pool()
                        for lost, others in list(in_flight.items()):
                            in_flight.pop(lost)
                            for other in others:
                                self._settle(other, _crashed(other), work, report, queue)
                    for run, record in zip(unit, records):
                        self._settle(run, record, work, report, queue)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _settle(self, run: DenseRun | PruneRun, record: dict[str, Any], work: Work, report: Reporter,
                queue: collections.deque) -> None:
        if isinstance(run, DenseRun):
            queue.extendleft(reversed(settle_dense(run, record, work, report)))
        else:
            report.finished(run, record)

    def _call(self, unit: list[DenseRun | PruneRun], work: Work) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """The task that executes ``unit`` (a dense run, or prune runs that are engine twins) in a worker, and its
        arguments."""
        first = unit[0]
        if isinstance(first, DenseRun):
            return execute_dense, (first, work.store.run_dir(first.run_id), self.threads)
        runs = [run for run in unit if isinstance(run, PruneRun)]
        return execute_prunes, (runs, work.store.run_dir(first.parent_id), self.threads,
                                [work.keep_dir(run) for run in runs], work.timed)

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_exit_with_parent, initargs=(os.getpid(),))


def _crashed(run: DenseRun | PruneRun) -> dict[str, Any]:
    now = now_utc()
    record = make_record(run, "failed", {}, "WorkerCrashed: the worker process died (killed, or out of memory)", now,
                         now, 0.0, None)
    return mark_failed(record, ENVIRONMENTAL)


def _exit_with_parent(parent: int) -> None:
    """Pool initializer: leave when the driver is gone (``kill -9``), so no orphan keeps writing into the sweep."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _local(**options: Any) -> Executor:
    return LocalExecutor(**options)


def _ray(**options: Any) -> Executor:
    from tsprune.sweep.ray_executor import RayExecutor

    return RayExecutor(**options)


EXECUTORS: dict[str, Callable[..., Executor]] = {"local": _local, "ray": _ray}


def make_executor(name: str, **options: Any) -> Executor:
    """The executor ``name`` with ``workers``, ``address``, ``gpus_per_run`` and ``threads`` options."""
    if name not in EXECUTORS:
        raise TsPruneError(f"unknown executor {name!r}: use one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name](**options)
