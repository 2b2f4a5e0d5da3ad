"""What every executor shares: the work left to do, the driver's reporter, thread budgets, the GPUs a run asks a
cluster for, and settling a finished dense run (its prune runs become ready, or fail with it). Below the
executors, so ``local`` and ``ray`` import it and not each other."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tsprune.errors import TsPruneError
from tsprune.runtime import available_cores, thread_budget  # noqa: F401 - the executors' thread budget
from tsprune.sweep.plan import DenseRun, PruneRun
from tsprune.sweep.store import SweepStore
from tsprune.sweep.tasks import parent_failed


@dataclass
class Work:
    """What is left to do: dense runs to train, prune runs ready now (their dense run is done) and prune runs
    waiting for a dense run of this sweep."""

    store: SweepStore
    dense: list[DenseRun] = field(default_factory=list)
    ready: list[PruneRun] = field(default_factory=list)
    waiting: dict[str, list[PruneRun]] = field(default_factory=dict)
    keep_pruned: bool = False
    timed: bool = True  # False: prune runs take no timings; the measuring pass times the kept models later

    def keep_dir(self, run: PruneRun) -> Path | None:
        return self.store.run_dir(run.run_id) if self.keep_pruned else None


class Reporter(Protocol):
    def started(self, run: DenseRun | PruneRun) -> None: ...

    def finished(self, run: DenseRun | PruneRun, record: dict[str, Any],
                 files: dict[str, bytes] | None = None) -> None: ...


class Executor(Protocol):
    def run(self, work: Work, report: Reporter) -> None: ...


def check_counts(workers: int | None, threads: int | None) -> None:
    for option, value in (("workers", workers), ("threads", threads)):
        if value is not None and value < 1:
            raise TsPruneError(f"{option} must be at least 1, got {value}", options=(option,))


def run_device(run: DenseRun | PruneRun) -> str:
    """The device a run's configuration asks for (``auto``, ``cpu``, ``cuda`` or ``cuda:N``)."""
    return run.config.train.device if isinstance(run, DenseRun) else run.config.device


def gpus_for(device: str, gpus_per_run: float) -> float:
    """The GPUs one run asks a Ray cluster for: a ``cuda`` run ``gpus_per_run`` (1 when unset; a fraction lets
    several small runs share one GPU), an ``auto`` run ``gpus_per_run`` (0: it runs on the CPU), a ``cpu`` run none.
    Ray remaps the GPUs it grants to ``cuda:0``, so ``cuda:N`` with N > 0 is refused."""
    if gpus_per_run < 0:
        raise TsPruneError(f"gpus_per_run must be at least 0, got {gpus_per_run}", options=("gpus_per_run",))
    if gpus_per_run > 1 and gpus_per_run != int(gpus_per_run):
        raise TsPruneError(f"gpus_per_run above 1 must be a whole number (Ray shares only fractions of one GPU), "
                           f"got {gpus_per_run}", options=("gpus_per_run",))
    if device == "cpu":
        if gpus_per_run:
            raise TsPruneError(f"gpus_per_run {gpus_per_run:g} needs device cuda (or auto) in the spec; its device "
                               "is cpu", options=("gpus_per_run",))
        return 0.0
    if device.startswith("cuda"):
        if device not in ("cuda", "cuda:0"):
            raise TsPruneError(f"device {device!r}: on Ray each run sees only the GPU it was given, as cuda:0; set "
                               "the spec's device to cuda")  # a spec key, not an option: no options
        return gpus_per_run or 1.0
    return gpus_per_run  # auto


def settle_dense(run: DenseRun, record: dict[str, Any], work: Work, report: Reporter) -> list[PruneRun]:
    """Report a finished dense run; return its prune runs, or record them failed when it failed."""
    report.finished(run, record)
    children = work.waiting.pop(run.run_id, [])
    if record["status"] == "done":
        return children
    for child in children:
        report.finished(child, parent_failed(child, record))
    return []


def next_unit(queue: collections.deque[DenseRun | PruneRun]) -> list[DenseRun | PruneRun]:
    """The next task's runs, taken off ``queue``: a dense run alone, or a prune run with the engine twins that
    follow it (the plan puts them side by side). Every executor sends twins as one task: apart, two workers would
    each prune, fine-tune and evaluate the same model."""
    first = queue.popleft()
    unit: list[DenseRun | PruneRun] = [first]
    if isinstance(first, PruneRun):
        while queue and isinstance(queue[0], PruneRun) and first.twin_of(queue[0]):
            unit.append(queue.popleft())
    return unit
