"""Run a sweep on Ray: one task per run, each asking for its thread budget in CPUs (and GPUs when asked).

A prune task takes its dense task's result as an argument (an ObjectRef), so Ray orders them; that result carries
the dense run directory as bytes, so workers need no shared filesystem. Workers keep scratch copies in their own
temp folder (a dense training killed mid-way resumes there when retried on the same node). Results come back to
the driver, which alone writes the sweep directory. Workers need tsprune installed (the same version).
"""

from __future__ import annotations

import collections
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tsprune.errors import TsPruneError
from tsprune.sweep.work import Reporter, Work, check_counts, thread_budget
from tsprune.sweep.plan import DenseRun, PruneRun
from tsprune.sweep.store import RUN_FILES
from tsprune.sweep.tasks import describe_error, execute_dense, execute_prune, make_record, now_utc, parent_failed


def _scratch(name: str) -> Path:
    return Path(tempfile.gettempdir()) / "tsprune-sweep" / name


def _read_files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in RUN_FILES}


def dense_task(run: DenseRun, threads: int) -> dict[str, Any]:
    """Train on the worker; return the record and, when done, the run directory's files."""
    folder = _scratch(f"dense-{run.run_id}")
    record = execute_dense(run, folder, threads)
    files = None
    if record["status"] == "done":
        files = _read_files(folder)
        shutil.rmtree(folder, ignore_errors=True)  # the driver stores it; prune tasks get it from Ray
    return {"record": record, "files": files}


def prune_task(run: PruneRun, parent: dict[str, Any], threads: int, keep: bool) -> dict[str, Any]:
    """Prune from the dense result ``parent`` (resolved by Ray from the dense task's ObjectRef)."""
    if parent["record"]["status"] != "done":
        return {"record": parent_failed(run, parent["record"]), "files": None}
    scratch = _scratch(f"prune-{run.run_id}")
    shutil.rmtree(scratch, ignore_errors=True)
    dense, out = scratch / "dense", scratch / "pruned" if keep else None
    dense.mkdir(parents=True)
    for name, payload in parent["files"].items():  # a worker that has this dense run cached will not read them
        (dense / name).write_bytes(payload)
    try:
        record = execute_prune(run, dense, threads, out)
        files = _read_files(out) if out is not None and record["status"] == "done" else None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"record": record, "files": files}


class RayExecutor:
    """``address`` None starts a local Ray runtime; ``auto`` or ``ray://HOST:PORT`` joins a cluster. ``workers``
    (default: one per cluster CPU) sets the thread budget of each run, cluster CPUs // workers, unless ``threads``
    is given; each task asks Ray for that many CPUs."""

    def __init__(self, workers: int | None = None, address: str | None = None, gpus_per_run: float = 0.0,
                 threads: int | None = None) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:  # an install extra (tests simulate its absence)
            raise TsPruneError("the ray executor needs Ray, an install extra: pip install 'tsprune[ray]' (or "
                               "'ray==2.60.0')") from None
        check_counts(workers, threads)
        if gpus_per_run < 0:
            raise TsPruneError(f"gpus_per_run must be at least 0, got {gpus_per_run}", options=("gpus_per_run",))
        self.workers, self.address, self.gpus, self.threads = workers, address, gpus_per_run, threads

    def run(self, work: Work, report: Reporter) -> None:
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise TsPruneError(f"cannot start or reach Ray at {self.address or 'a local runtime'}: "
                                   f"{' '.join(str(exc).split())[:300]}") from None
        try:
            self._run(ray, work, report, self._threads(ray))
        finally:
            if started_here:
                ray.shutdown()

    def _threads(self, ray: Any) -> int:
        if self.threads is not None:
            return self.threads
        total = int(ray.cluster_resources().get("CPU", 1))
        largest = max((int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")),
                      default=total)
        return max(1, min(largest, thread_budget(total, self.workers or total)))

    def _run(self, ray: Any, work: Work, report: Reporter, threads: int) -> None:
        options = {"num_cpus": threads, "num_gpus": self.gpus}
        train = ray.remote(dense_task).options(**options)
        prune = ray.remote(prune_task).options(**options)
        pending: dict[Any, DenseRun | PruneRun] = {}
        parents: dict[str, Any] = {}
        for dense in work.dense:
            parents[dense.run_id] = ref = train.remote(dense, threads)
            pending[ref] = dense
        for parent_id in {run.parent_id for run in work.ready}:  # done earlier: ship the stored directory
            parents[parent_id] = ray.put({"record": {"status": "done"}, "files": work.store.read_run_files(parent_id)})
        for waiting in [*work.ready, *(child for children in work.waiting.values() for child in children)]:
            pending[prune.remote(waiting, parents[waiting.parent_id], threads, work.keep_pruned)] = waiting
        for run in pending.values():
            report.started(run)
        children = collections.Counter(run.parent_id for run in pending.values() if isinstance(run, PruneRun))
        settled: dict[str, dict[str, Any]] = {}
        while pending:
            refs = list(pending)
            ray.wait(refs, num_returns=1)
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in done:
                if ref in pending:  # not already settled as the parent of an earlier one
                    run = self._settle(ray, ref, pending, parents, settled, report)
                    parent_id = run.parent_id if isinstance(run, PruneRun) else run.run_id
                    children[parent_id] -= isinstance(run, PruneRun)
                    if children[parent_id] <= 0:
                        parents.pop(parent_id, None)  # lets Ray free the dense run's bytes

    def _settle(self, ray: Any, ref: Any, pending: dict, parents: dict, settled: dict,
                report: Reporter) -> DenseRun | PruneRun:
        """Report the run behind the finished ``ref`` (its dense parent first, if still unreported)."""
        run = pending.pop(ref)
        if isinstance(run, PruneRun) and parents.get(run.parent_id) in pending:
            self._settle(ray, parents[run.parent_id], pending, parents, settled, report)
        try:
            result = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - a crashed worker or lost node fails this run, not the sweep
            parent = settled.get(run.parent_id) if isinstance(run, PruneRun) else None
            record = parent_failed(run, parent) if parent and parent["status"] != "done" else make_record(
                run, "failed", {}, describe_error(exc), now_utc(), now_utc(), 0.0, None)
            result = {"record": record, "files": None}
        settled[run.run_id] = result["record"]
        report.finished(run, result["record"], result["files"])  # writes the files before the record
        return run
