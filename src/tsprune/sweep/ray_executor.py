"""Run a sweep on Ray: one task per run (engine twins: one task for both), each asking for its thread budget in CPUs
and, for CUDA runs, a GPU or a share of one (:func:`task_options`). Workers need tsprune installed (the same
version) and the sweep's data files at the same paths (the built-in datasets ship with the package).

What the executor relies on, and what it does itself:

- **No shared filesystem.** A dense task returns its run directory as bytes; the driver writes it into the sweep
  directory and puts those bytes into Ray for the prune tasks that start from it. Workers write only to their own
  node's scratch folder (:func:`scratch_root`: the node id is part of the path), never to the sweep directory.
- **Only the driver writes the store**, one record per run, after the run's files. Records are keyed by run id and
  written atomically, so nothing a worker does (or a retried one) can duplicate or corrupt a record.
- **A lost task** (its worker or node died, or the node holding its result did): tasks run with ``max_retries=0``
  and the driver resubmits the run, up to :data:`MAX_ATTEMPTS` executions in all, and records how many were lost
  (``retries``, and their errors in ``lost``). The driver does this rather than Ray because Ray's own retries are
  invisible to it (they could not be counted), and Ray's lineage reconstruction would silently train a dense run
  again to rebuild a result lost with its node. The dense bytes a prune task needs are owned by the driver (its
  ``ray.put``, on the driver's node), so losing the node that trained a model loses nothing its prune runs need.
  A task that raised (a bug, not a lost node) is not resubmitted: its run fails, classified by what it raised
  (:mod:`tsprune.sweep.failures`); a run lost :data:`MAX_ATTEMPTS` times fails as environmental, which the next
  ``sweep run`` retries by itself.
- **The driver dying** ends its tasks (Ray ends a job's tasks with its driver). Running the same command again
  resumes like the local executor: runs with a record are skipped, the others run again, a dense training resuming
  from its last finished epoch if it lands on the node that held it.
- **Backlog.** The driver keeps about twice the cluster's run slots submitted (counted again as nodes come and go),
  the prune runs of finished dense runs first: results arrive early, dense bytes are freed family by family, and an
  autoscaler still sees waiting work.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

from tsprune.errors import exception_record
from tsprune.sweep.failures import ENVIRONMENTAL, classify, mark_failed
from tsprune.sweep.plan import DenseRun, PruneRun
from tsprune.sweep.ray_cluster import (
    alive_nodes, check_fits, check_reachable, connected, describe_nodes,
    import_ray, ray_threads, task_options)
from tsprune.sweep.ray_tasks import clean_scratch, dense_task, prune_task
from tsprune.sweep.cost import run_slots
from tsprune.sweep.tasks import make_record, now_utc, parent_failed
from tsprune.sweep.work import Reporter, Work, check_counts, gpus_for, next_unit, run_device

MAX_ATTEMPTS = 3  # executions of one run, the first included, before a lost run is recorded failed
BACKLOG = 2  # runs kept submitted per run slot of the cluster
WAIT_S = 10.0  # how often the driver counts the cluster's slots again while it waits for results
CLEAN_WAIT_S = 60.0  # how long the driver waits for the nodes to clear scratch left by lost tasks

log = logging.getLogger(__name__)

class RayExecutor:
    """``address`` None starts a local Ray runtime; ``auto`` or ``HOST:PORT`` (``ray://HOST:PORT`` through Ray
    Client) joins a cluster. ``workers`` (default: one per cluster CPU) sets the thread budget of each run, cluster
    CPUs // workers, unless ``threads`` is given; each task asks Ray for that many CPUs, and CUDA runs for
    ``gpus_per_run`` GPUs (default 1; a fraction shares one GPU among runs)."""

    def __init__(self, workers: int | None = None, address: str | None = None, gpus_per_run: float = 0.0,
                 threads: int | None = None) -> None:
        import_ray()
        check_counts(workers, threads)
        gpus_for("auto", gpus_per_run)  # a negative or fractional-above-one count fails before Ray starts
        if address is not None:
            check_reachable(address)  # before the sweep is planned, not after
        self.workers, self.address, self.gpus, self.threads = workers, address, gpus_per_run, threads

    def run(self, work: Work, report: Reporter) -> None:
        runs: list[DenseRun | PruneRun] = [*work.ready, *work.dense, *(child for children in work.waiting.values()
                                                                         for child in children)]
        if not runs:
            return
        gpus = {gpus_for(run_device(run), self.gpus) for run in runs}  # a device Ray cannot honour fails here
        with connected(self.address) as ray:
            nodes = alive_nodes(ray)
            threads = ray_threads(nodes, self.workers, self.threads)
            for asked in gpus:
                check_fits(nodes, {"num_cpus": threads, "num_gpus": asked})
            _RaySweep(ray, work, report, threads, self.gpus, max(gpus)).run()


class _RaySweep:
    """One call's bookkeeping on the driver: runs queued, in flight and lost, and the dense bytes put into Ray."""

    def __init__(self, ray: Any, work: Work, report: Reporter, threads: int, gpus_per_run: float,
                 gpu_request: float) -> None:
        self.ray, self.work, self.report, self.threads, self.gpus = ray, work, report, threads, gpus_per_run
        self.gpu_request = gpu_request  # what a slot needs of a GPU (every run of a sweep shares its device)
        self.starved = False  # said that no node can run a task, until one can again
        self.train, self.prune, self.clean = ray.remote(dense_task), ray.remote(prune_task), ray.remote(clean_scratch)
        self.queue: collections.deque[DenseRun | PruneRun] = collections.deque([*work.ready, *work.dense])
        self.in_flight: dict[Any, list[DenseRun | PruneRun]] = {}  # a dense run, or prune runs that are twins
        self.lost: dict[str, list[str]] = collections.defaultdict(list)
        self.payloads: dict[str, Any] = {}  # dense run id -> ObjectRef of its files, while prune runs need them
        waiting = [child for children in work.waiting.values() for child in children]
        self.children_left = collections.Counter(run.parent_id for run in [*work.ready, *waiting])
        runs: list[DenseRun | PruneRun] = [*work.ready, *work.dense, *waiting]
        self.scratch = [f"{run.kind}-{run.run_id}" for run in runs]  # the folders the tasks of these runs use
        self.submitted: set[str] = set()

    def run(self) -> None:
        while self.queue or self.in_flight:
            self._submit()
            refs = list(self.in_flight)
            done, _ = self.ray.wait(refs, num_returns=1, timeout=WAIT_S)
            if done:
                done, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in done:
                self._settle(self.in_flight.pop(ref), ref)
        self._clean()

    def _submit(self) -> None:
        nodes = alive_nodes(self.ray)
        slots = run_slots(nodes, self.threads, self.gpu_request)
        if not slots and not self.starved:
            log.warning("tsprune: no live Ray node can run a task now (%s); waiting for one to join",
                        describe_nodes(nodes))
        self.starved = not slots
        while self.queue and len(self.in_flight) < max(1, BACKLOG * slots):
            unit = next_unit(self.queue)  # engine twins go as one task, as with the local pool
            first = unit[0]
            options = task_options(first, self.threads, self.gpus)  # twins differ only in their engine
            if isinstance(first, DenseRun):
                ref = self.train.options(**options).remote(first, self.threads)
            else:
                ref = self.prune.options(**options).remote(unit, self._payload(first.parent_id), self.threads,
                                                           self.work.keep_pruned, self.work.timed)
            self.in_flight[ref] = unit
            for run in unit:
                if run.run_id not in self.submitted:  # a resubmitted run is not started twice
                    self.submitted.add(run.run_id)
                    self.report.started(run)

    def _payload(self, parent_id: str) -> Any:
        if parent_id not in self.payloads:  # a dense run done in an earlier call: ship its stored directory
            self.payloads[parent_id] = self.ray.put(self.work.store.read_run_files(parent_id))
        return self.payloads[parent_id]

    def _settle(self, unit: list[DenseRun | PruneRun], ref: Any) -> None:
        results = self._outcome(unit, ref)
        if results is None:  # lost, queued again
            return
        for run, result in zip(unit, results, strict=True):
            self._settle_run(run, result)

    def _settle_run(self, run: DenseRun | PruneRun, result: dict[str, Any]) -> None:
        record = result["record"]
        record.update(node=result.get("node"), task_window=result.get("window"), retries=len(self.lost[run.run_id]))
        if self.lost[run.run_id]:
            record["lost"] = self.lost[run.run_id]
        self.report.finished(run, record, result["files"])  # writes the files before the record
        if isinstance(run, DenseRun):
            children = self.work.waiting.pop(run.run_id, [])
            if record["status"] == "done" and children:
                self.payloads[run.run_id] = self.ray.put(result["files"])
                self.queue.extendleft(reversed(children))  # ahead of the other dense runs
            for child in children if record["status"] != "done" else []:
                self.report.finished(child, parent_failed(child, record))
        else:
            self.children_left[run.parent_id] -= 1
            if self.children_left[run.parent_id] <= 0:
                self.payloads.pop(run.parent_id, None)  # lets Ray free the dense run's bytes

    def _outcome(self, unit: list[DenseRun | PruneRun], ref: Any) -> list[dict[str, Any]] | None:
        """The task's results, one per run of ``unit``; None when it was lost and is queued again; failed records
        when it raised or was lost :data:`MAX_ATTEMPTS` times."""
        exceptions = self.ray.exceptions
        try:
            result = self.ray.get(ref)
            return result if isinstance(result, list) else [result]
        except exceptions.RayTaskError as exc:  # the task itself raised: not resubmitted now; classified by cause
            cause = getattr(exc, "cause", None) or exc
            return [self._failed(run, exception_record(cause), classify(cause)) for run in unit]
        except exceptions.RayError as exc:  # its worker or node died, or its result was lost with a node
            error = exception_record(exc, limit=300)
            for run in unit:
                self.lost[run.run_id].append(error)
            attempts = len(self.lost[unit[0].run_id])
            names = ", ".join(run.run_id for run in unit)
            if attempts < MAX_ATTEMPTS:
                log.warning("tsprune: run %s lost (%s); resubmitted, attempt %d of %d", names, error, attempts + 1,
                            MAX_ATTEMPTS)
                self.queue.extendleft(reversed(unit))  # together again, twins side by side
                return None
            return [self._failed(run, f"lost {attempts} times (worker or node died), last: {error}", ENVIRONMENTAL)
                    for run in unit]

    def _failed(self, run: DenseRun | PruneRun, error: str, failure: str) -> dict[str, Any]:
        now = now_utc()
        record = mark_failed(make_record(run, "failed", {}, error, now, now, 0.0, None), failure)
        return {"record": record, "files": None}

    def _clean(self) -> None:
        """Ask every live node to remove the scratch this call's runs may have left there (a lost task's, or one
        killed with an earlier driver); best effort, bounded in time."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        refs = [self.clean.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            node.node_id, soft=False)).remote(self.scratch) for node in alive_nodes(self.ray)]
        self.ray.wait(refs, num_returns=len(refs), timeout=CLEAN_WAIT_S)


# --- planning -----------------------------------------------------------------------------------------------------
