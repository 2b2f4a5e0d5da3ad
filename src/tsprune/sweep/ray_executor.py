"""Run a sweep on Ray: one task per run, each asking for its thread budget in CPUs and, for CUDA runs, a GPU or a
share of one (:func:`task_options`). Workers need tsprune installed (the same version) and the sweep's data files
at the same paths (the built-in datasets ship with the package).

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
  A task that raised (a bug, not a lost node) is not retried: its run fails.
- **The driver dying** ends its tasks (Ray ends a job's tasks with its driver). Running the same command again
  resumes like the local executor: runs with a record are skipped, the others run again, a dense training resuming
  from its last finished epoch if it lands on the node that held it.
- **Backlog.** The driver keeps about twice the cluster's run slots submitted (counted again as nodes come and go),
  the prune runs of finished dense runs first: results arrive early, dense bytes are freed family by family, and an
  autoscaler still sees waiting work.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tsprune.errors import TsPruneError, exception_record
from tsprune.sweep.cost import NodeShape, run_slots, wall_seconds
from tsprune.sweep.plan import DenseRun, Plan, PruneRun
from tsprune.sweep.store import RUN_FILES
from tsprune.sweep.tasks import execute_dense, execute_prune, make_record, now_utc, parent_failed
from tsprune.sweep.work import Reporter, Work, check_counts, gpus_for, run_device, thread_budget

MAX_ATTEMPTS = 3  # executions of one run, the first included, before a lost run is recorded failed
BACKLOG = 2  # runs kept submitted per run slot of the cluster
WAIT_S = 10.0  # how often the driver counts the cluster's slots again while it waits for results
CLEAN_WAIT_S = 60.0  # how long the driver waits for the nodes to clear scratch left by lost tasks
SCRATCH_ENV = "TSPRUNE_SCRATCH"  # a node's scratch base folder (default: its temp folder)

log = logging.getLogger(__name__)


# --- on a worker --------------------------------------------------------------------------------------------------


def scratch_root() -> Path:
    """This node's scratch folder: ``$TSPRUNE_SCRATCH`` (else the temp folder) ``/tsprune-sweep/<node id>``. The node
    id keeps it node-local even where nodes share a disk (simulated nodes, a shared /tmp)."""
    import ray

    base = os.environ.get(SCRATCH_ENV) or tempfile.gettempdir()
    return Path(base) / "tsprune-sweep" / ray.get_runtime_context().get_node_id()[:16]


def _read_files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in RUN_FILES}


def _hide_gpus_unless_granted() -> None:
    """A task granted no GPU runs on the CPU even on a GPU node: Ray 2.60 leaves the node's GPUs visible to it, and
    a device ``auto`` run would take one that another run was given."""
    import ray
    import torch

    if not ray.get_runtime_context().get_accelerator_ids().get("GPU") and not torch.cuda.is_initialized():
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def _result(record: dict[str, Any], files: dict[str, bytes] | None, started: float) -> dict[str, Any]:
    import ray

    return {"record": record, "files": files, "node": ray.get_runtime_context().get_node_id(),
            "window": [started, time.time()]}


def dense_task(run: DenseRun, threads: int) -> dict[str, Any]:
    """Train on the worker; return the record and, when done, the run directory's files."""
    started = time.time()
    _hide_gpus_unless_granted()
    folder = scratch_root() / f"dense-{run.run_id}"
    folder.mkdir(parents=True, exist_ok=True)  # up front: a run in progress shows on its node
    record = execute_dense(run, folder, threads)  # resumes a training a lost attempt left on this node
    files = _read_files(folder) if record["status"] == "done" else None
    shutil.rmtree(folder, ignore_errors=True)  # the driver stores it; prune tasks get it from Ray
    return _result(record, files, started)


def prune_task(run: PruneRun, dense_files: dict[str, bytes], threads: int, keep: bool,
               timed: bool = True) -> dict[str, Any]:
    """Prune from the dense run directory ``dense_files`` (resolved by Ray from the driver's ObjectRef)."""
    started = time.time()
    _hide_gpus_unless_granted()
    scratch = scratch_root() / f"prune-{run.run_id}"
    shutil.rmtree(scratch, ignore_errors=True)  # a lost attempt's leftovers
    dense, out = scratch / "dense", scratch / "pruned" if keep else None
    dense.mkdir(parents=True)
    for name, payload in dense_files.items():  # a worker that has this dense run cached will not read them
        (dense / name).write_bytes(payload)
    try:
        record = execute_prune(run, dense, threads, out, timed)
        files = _read_files(out) if out is not None and record["status"] == "done" else None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _result(record, files, started)


def clean_scratch(names: list[str]) -> int:
    """Remove this node's scratch folders ``names`` (left by lost tasks) and the node's folder once empty."""
    root, removed = scratch_root(), 0
    for name in names:
        if (root / name).exists():
            shutil.rmtree(root / name, ignore_errors=True)
            removed += 1
    with contextlib.suppress(OSError):
        root.rmdir()
    return removed


# --- on the driver ------------------------------------------------------------------------------------------------


def import_ray() -> Any:
    try:
        import ray
    except ImportError:  # an install extra (tests simulate its absence)
        raise TsPruneError("the ray executor needs Ray, an install extra: pip install 'tsprune[ray]' (or "
                           "'ray==2.60.0')") from None
    return ray


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a ``HOST:PORT`` (or ``ray://HOST:PORT``) nobody listens on: Ray itself would retry for minutes."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local" or a form Ray parses itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise TsPruneError(f"no Ray cluster answers at {address} ({exc.strerror or type(exc).__name__}): start "
                           "the cluster (ray start) or check the address", options=("address",)) from None


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[Any]:
    """Ray, initialised: the runtime this process already has, else ``address``, shut down again on leaving. None
    means ``$RAY_ADDRESS`` where Ray's job tools set it, else a new local runtime: never, as Ray's own default
    would, whatever cluster happens to run on this machine (a sweep joins a cluster only when told to)."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        if address is not None:
            check_reachable(address)
        try:
            ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False,
                     log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise TsPruneError(f"cannot start or reach Ray at {address or 'a local runtime'}: "
                               f"{' '.join(str(exc).split())[:300]}", options=("address",)) from None
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def alive_nodes(ray: Any) -> list[NodeShape]:
    """The cluster's live nodes with the CPUs and GPUs Ray counts on them."""
    return [NodeShape(node["NodeID"], str(node.get("NodeManagerAddress", "?")), float(node["Resources"].get("CPU", 0)),
                      float(node["Resources"].get("GPU", 0))) for node in ray.nodes() if node.get("Alive")]


def ray_threads(nodes: list[NodeShape], workers: int | None, threads: int | None) -> int:
    """Threads (and CPUs asked) per run: ``threads``, else the cluster's CPUs // ``workers`` (default: one run per
    CPU), never more than the largest node has (a run never spans nodes)."""
    if threads is not None:
        return threads
    total = int(sum(node.cpus for node in nodes)) or 1
    largest = max((int(node.cpus) for node in nodes), default=total)
    return max(1, min(largest, thread_budget(total, workers or total)))


def task_options(run: DenseRun | PruneRun, threads: int, gpus_per_run: float) -> dict[str, Any]:
    """The Ray options of ``run``'s task. Ray never places a task asking a GPU on a node without one; ``max_retries``
    0 because the driver resubmits lost runs itself (see the module's notes)."""
    return {"num_cpus": threads, "num_gpus": gpus_for(run_device(run), gpus_per_run), "max_retries": 0,
            "retry_exceptions": False}


def describe_nodes(nodes: list[NodeShape]) -> str:
    """``3 nodes: 2 x (1 CPU, 0 GPU), 1 x (8 CPU, 1 GPU)``: nodes grouped by shape."""
    shapes = collections.Counter((node.cpus, node.gpus) for node in nodes)
    groups = ", ".join(f"{count} x ({cpus:g} CPU, {gpus:g} GPU)" for (cpus, gpus), count in sorted(shapes.items()))
    return f"{len(nodes)} node{'s' * (len(nodes) != 1)}: {groups or 'none alive'}"


def check_fits(nodes: list[NodeShape], options: dict[str, Any]) -> None:
    """Refuse a sweep no live node can run a task of (Ray would leave it waiting forever)."""
    cpus, gpus = options["num_cpus"], options["num_gpus"]
    if not run_slots(nodes, cpus, gpus):
        asked = f"{cpus} CPU(s)" + (f" and {gpus:g} GPU" if gpus else "")
        hint = ("add a node with a GPU, or run on the CPU (spec device cpu, no gpus_per_run)" if gpus
                else "lower threads or workers")
        raise TsPruneError(f"no node of the Ray cluster ({describe_nodes(nodes)}) has the {asked} a run asks for: "
                           f"{hint}", options=("threads", "workers", "gpus_per_run"))


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
        self.in_flight: dict[Any, DenseRun | PruneRun] = {}
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
            run = self.queue.popleft()
            options = task_options(run, self.threads, self.gpus)
            if isinstance(run, DenseRun):
                ref = self.train.options(**options).remote(run, self.threads)
            else:
                ref = self.prune.options(**options).remote(run, self._payload(run.parent_id), self.threads,
                                                           self.work.keep_pruned, self.work.timed)
            self.in_flight[ref] = run
            if run.run_id not in self.submitted:  # a resubmitted run is not started twice
                self.submitted.add(run.run_id)
                self.report.started(run)

    def _payload(self, parent_id: str) -> Any:
        if parent_id not in self.payloads:  # a dense run done in an earlier call: ship its stored directory
            self.payloads[parent_id] = self.ray.put(self.work.store.read_run_files(parent_id))
        return self.payloads[parent_id]

    def _settle(self, run: DenseRun | PruneRun, ref: Any) -> None:
        result = self._outcome(run, ref)
        if result is None:  # lost, queued again
            return
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

    def _outcome(self, run: DenseRun | PruneRun, ref: Any) -> dict[str, Any] | None:
        """The task's result; None when it was lost and is queued again; a failed record when it raised or was lost
        :data:`MAX_ATTEMPTS` times."""
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ref)
        except exceptions.RayTaskError as exc:  # the task itself raised: the same on every try, so not retried
            return self._failed(run, exception_record(getattr(exc, "cause", None) or exc))
        except exceptions.RayError as exc:  # its worker or node died, or its result was lost with a node
            error = exception_record(exc, limit=300)
            self.lost[run.run_id].append(error)
            attempts = len(self.lost[run.run_id])
            if attempts < MAX_ATTEMPTS:
                log.warning("tsprune: run %s lost (%s); resubmitted, attempt %d of %d", run.run_id, error,
                            attempts + 1, MAX_ATTEMPTS)
                self.queue.appendleft(run)
                return None
            return self._failed(run, f"lost {attempts} times (worker or node died), last: {error}")

    def _failed(self, run: DenseRun | PruneRun, error: str) -> dict[str, Any]:
        now = now_utc()
        return {"record": make_record(run, "failed", {}, error, now, now, 0.0, None), "files": None}

    def _clean(self) -> None:
        """Ask every live node to remove the scratch this call's runs may have left there (a lost task's, or one
        killed with an earlier driver); best effort, bounded in time."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        refs = [self.clean.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            node.node_id, soft=False)).remote(self.scratch) for node in alive_nodes(self.ray)]
        self.ray.wait(refs, num_returns=len(refs), timeout=CLEAN_WAIT_S)


# --- planning -----------------------------------------------------------------------------------------------------


def cluster_nodes(address: str | None) -> tuple[list[NodeShape], str]:
    """The nodes a sweep with ``address`` would run on, and where they are: the cluster's (connecting to it), or
    this machine's cores and GPUs for a local runtime (without starting one)."""
    if address is not None:
        with connected(address) as ray:
            return alive_nodes(ray), f"Ray cluster at {address}"
    import torch

    from tsprune.runtime import available_cores

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [NodeShape("local", "this machine", float(available_cores()), float(gpus))], "a local Ray runtime"


def cluster_plan_lines(plan: Plan, address: str | None, workers: int | None = None, threads: int | None = None,
                       gpus_per_run: float = 0.0) -> list[str]:
    """What ``tsprune sweep plan --executor ray`` adds: the cluster's resources, the tasks' requests, how many runs
    it holds at once and the wall time the cost model gives for it."""
    check_counts(workers, threads)
    runs = plan.runs()
    asked = [gpus_for(run_device(run), gpus_per_run) for run in runs]  # before connecting: a bad device fails fast
    gpus, gpu_tasks = max(asked, default=0.0), sum(value > 0 for value in asked)
    nodes, where = cluster_nodes(address)
    size = ray_threads(nodes, workers, threads)
    slots = run_slots(nodes, size, gpus)
    lines = [f"{where}: {describe_nodes(nodes)}; {sum(n.cpus for n in nodes):g} CPUs, "
             f"{sum(n.gpus for n in nodes):g} GPUs in all",
             f"each run asks {size} CPU(s) for {size} thread(s) and " + (f"{gpus:g} GPU" if gpus else "no GPU") +
             f"; {gpu_tasks} of {len(runs)} runs are GPU tasks; the cluster holds {slots} run(s) at a time"]
    if not slots:
        lines.append("no live node can run one: `tsprune sweep run` would refuse this cluster")
    else:
        lines.append(f"estimated wall time on it: ~{_duration(wall_seconds(plan, slots, size))} (the cost model's "
                     f"per-run times over {size} thread(s), list-scheduled on {slots} slot(s); as rough as the "
                     "CPU-minutes" + ("; calibrated on CPUs, so GPU runs should take less)" if gpus else ")"))
    return lines


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} minutes"
    if seconds < 72 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:,.1f} days"
