"""The Ray cluster as the driver sees it: connecting, its nodes, what a run asks of them, and the plan shown for
it (:mod:`tsprune.sweep.ray_executor` runs sweeps on it)."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from tsprune.errors import TsPruneError
from tsprune.sweep.cost import NodeShape, run_slots, wall_seconds
from tsprune.sweep.plan import DenseRun, Plan, PruneRun
from tsprune.sweep.work import check_counts, gpus_for, run_device, thread_budget


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
