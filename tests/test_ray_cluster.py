"""The Ray executor on a simulated multi-node cluster (``ray.cluster_utils.Cluster``: a head and two worker nodes of
one CPU each, every node a set of processes on this machine talking over loopback, each with its own scratch
folder): runs spread over the nodes within their thread budgets, a worker node lost mid-sweep, the driver killed
and restarted, no shared filesystem, GPU requests as data, and ``sweep plan --executor ray``. Every sweep's metrics
are compared with a local-executor run of the same spec. Every test on the cluster runs in `make test-heavy` (CI),
not in the 10-minute `make test`: the cluster alone takes ~30 s to start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import write_small_csv
from test_sweep import tiny_spec, write_spec
from typer.testing import CliRunner

from tsprune import api
from tsprune.cli import app
from tsprune.errors import TsPruneError
from tsprune.sweep import parse_spec, plan_sweep, run_sweep
from tsprune.sweep.cost import NodeShape, estimate, run_slots, wall_seconds
from tsprune.sweep.ray_cluster import check_fits, cluster_plan_lines, ray_threads, task_options
from tsprune.sweep.ray_executor import RayExecutor

ray = pytest.importorskip("ray")
runner = CliRunner()
LOOPBACK = "127.0.0.1"
# Ray resolves a loopback address to the machine's outward one unless this is 0; then every node binds to and dials
# loopback only. Nodes and the driver subprocess inherit it.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# Detect a killed node in ~2 s rather than Ray's default ~30 s (what a real cluster would see is the default).
FAST_HEALTH_CHECKS = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                      "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}
# Metrics that do not depend on timing: identical between executors for the same seed and thread count.
ACCURACY = ("mse", "mae", "mse_raw", "mae_raw", "params", "nonzero_params", "params_dense", "density_prunable",
            "density_total", "flops", "flops_dense", "flops_effective", "epochs_run", "dense_mse")


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory) -> Path:
    return write_small_csv(tmp_path_factory.mktemp("data"))


def cluster_spec(csv: Path, **overrides: Any) -> dict:
    """12 runs, all of which finish: 3 seeds x (1 dense + magnitude 0.5, 0.25 + depgraph 0.5), pruned runs kept
    (their weights come back through Ray too), on the CPU whatever TSPRUNE_TEST_DEVICE says."""
    spec = tiny_spec(csv, seeds=[0, 1, 2], methods={"magnitude": [0.5, 0.25], "depgraph": [0.5]},
                     finetune_epochs=[0], finetune_densities=None, keep_pruned=True, device="cpu")
    return {**spec, **overrides}


def planned_ids(spec: dict) -> set[str]:
    return {run.run_id for run in plan_sweep(parse_spec(spec)).runs()}


def read_records(sweep: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted((sweep / "records").glob("*.json"))}


@pytest.fixture(scope="module")
def local_reference(data_csv, tmp_path_factory) -> dict[str, dict]:
    """The records of the same spec on the local executor, one thread per run (as every run on the cluster)."""
    out = tmp_path_factory.mktemp("local")
    outcome = run_sweep(parse_spec(cluster_spec(data_csv)), out, threads=1, progress=False)
    assert (outcome.done, outcome.failed) == (12, 0)
    return read_records(out)


class SimulatedCluster:
    """A head and worker nodes of one CPU each, every node with its own scratch folder (``TSPRUNE_SCRATCH``). The
    head also declares one GPU (Ray takes a node's word for it), so GPU placement is tested without one."""

    def __init__(self, root: Path) -> None:
        from ray.cluster_utils import Cluster

        self.root, self.count = root, 0
        self.cluster = Cluster(initialize_head=True, head_node_args=self._node_args(
            num_gpus=1, include_dashboard=False, _system_config=FAST_HEALTH_CHECKS))
        self.head = self.cluster.head_node.node_id
        self.scratch: dict[str, Path] = {self.head: self.root / "scratch-0"}
        for _ in range(2):
            self.add_worker(wait=False)  # both start at once
        self.cluster.wait_for_nodes()

    def _node_args(self, **extra: Any) -> dict[str, Any]:
        scratch = self.root / f"scratch-{self.count}"
        scratch.mkdir(parents=True)
        self.count += 1
        return {"num_cpus": 1, "node_ip_address": LOOPBACK, "env_vars": {"TSPRUNE_SCRATCH": str(scratch)}, **extra}

    def add_worker(self, wait: bool = True, **extra: Any) -> Any:
        args = self._node_args(**extra)
        node = self.cluster.add_node(wait=wait, **args)
        self.scratch[node.node_id] = Path(args["env_vars"]["TSPRUNE_SCRATCH"])
        if wait:
            self.cluster.wait_for_nodes()
        return node

    @property
    def address(self) -> str:
        return self.cluster.address

    def worker(self, node_id: str) -> Any:
        return next(node for node in self.cluster.worker_nodes if node.node_id == node_id)

    def alive(self) -> set[str]:
        return {node["NodeID"] for node in ray.nodes() if node["Alive"]}

    def leftovers(self, node_ids: set[str]) -> list[Path]:
        """Files left in the scratch folders of ``node_ids``."""
        return [path for node_id in node_ids for path in self.scratch[node_id].rglob("*") if path.is_file()]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One simulated cluster for the module (starting one takes ~20 s here), the test process its first driver."""
    from ray._private import ray_constants

    saved_env = {key: os.environ.get(key) for key in LOOPBACK_ENV}
    os.environ.update(LOOPBACK_ENV)
    saved_flag, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False  # if Ray was imported
    if ray.is_initialized():
        ray.shutdown()
    simulated = SimulatedCluster(tmp_path_factory.mktemp("cluster"))
    ray.init(address=simulated.address, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        yield simulated
    finally:
        ray.shutdown()
        simulated.cluster.shutdown()
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_sweep(sweep: Path, spec: dict, reference: dict[str, dict]) -> dict[str, dict]:
    """Every planned run recorded exactly once, done, first attempt, with the local run's metrics; the store holds
    what the driver writes and nothing else."""
    records = read_records(sweep)
    assert set(records) == planned_ids(spec)  # one file per run id: nothing lost, nothing extra
    assert {record["status"] for record in records.values()} == {"done"}
    assert {record["attempt"] for record in records.values()} == {1}  # no run recorded twice
    for run_id, record in records.items():
        ours, theirs = record["metrics"], reference[run_id]["metrics"]
        assert ours["mse"] > 0 and ours["params"] > 0
        assert {key: ours.get(key) for key in ACCURACY} == {key: theirs.get(key) for key in ACCURACY}, run_id
    assert {path.name for path in (sweep / "runs").iterdir()} == set(records)  # dense and kept pruned directories
    assert {path.name for path in sweep.iterdir()} == {"records", "runs", "results.parquet", "spec.json", ".lock"}
    assert not [path for path in sweep.rglob(".*") if path.name != ".lock"]  # no staging left
    prune = next(run_id for run_id, record in records.items() if record["kind"] == "prune")
    assert api.load(sweep / "runs" / prune).metrics["mse"] == records[prune]["metrics"]["mse"]  # written from bytes
    return records


# --- pure: task options, GPUs, the cluster's slots and wall time --------------------------------------------------


def test_task_options_ask_gpus_only_for_cuda_runs(data_csv):
    plan = plan_sweep(parse_spec(cluster_spec(data_csv, device="cuda")))
    dense, prune = plan.dense[0], plan.prune[0]
    for run in (dense, prune):
        assert task_options(run, 2, 0.0) == {"num_cpus": 2, "num_gpus": 1.0, "max_retries": 0,
                                             "retry_exceptions": False}
        assert task_options(run, 1, 0.25)["num_gpus"] == 0.25  # four small runs share one GPU
        assert task_options(run, 1, 2)["num_gpus"] == 2
    cpu = plan_sweep(parse_spec(cluster_spec(data_csv))).dense[0]
    assert task_options(cpu, 1, 0.0)["num_gpus"] == 0  # never placed by its GPU, runs on CPU-only nodes too
    auto = plan_sweep(parse_spec(cluster_spec(data_csv, device="auto"))).prune[0]
    assert task_options(auto, 1, 0.0)["num_gpus"] == 0 and task_options(auto, 1, 0.5)["num_gpus"] == 0.5
    for run, gpus, message in ((cpu, 0.5, "needs device cuda"), (dense, 1.5, "must be a whole number"),
                               (dense, -1, "at least 0")):
        with pytest.raises(TsPruneError, match=message):
            task_options(run, 1, gpus)
    other = plan_sweep(parse_spec(cluster_spec(data_csv, device="cuda:1"))).dense[0]
    with pytest.raises(TsPruneError, match="sees only the GPU it was given"):
        task_options(other, 1, 0.0)


def test_cluster_slots_thread_budget_and_wall_time(data_csv):
    cpu_nodes = [NodeShape("a", LOOPBACK, 1), NodeShape("b", LOOPBACK, 1), NodeShape("c", LOOPBACK, 1)]
    gpu_nodes = [NodeShape("g", LOOPBACK, 8, 2), NodeShape("c", LOOPBACK, 16)]
    assert run_slots(cpu_nodes, 1) == 3 and run_slots(cpu_nodes, 2) == 0
    assert run_slots(gpu_nodes, 2) == 12 and run_slots(gpu_nodes, 2, 1.0) == 2 and run_slots(gpu_nodes, 1, 0.25) == 8
    assert run_slots([NodeShape("g", LOOPBACK, 8, 1)], 1, 1 / 3) == 3
    assert ray_threads(cpu_nodes, None, None) == 1 and ray_threads(gpu_nodes, 3, None) == 8  # 24 CPUs / 3, <= 8
    assert ray_threads(gpu_nodes, None, 4) == 4
    with pytest.raises(TsPruneError, match=r"no node of the Ray cluster \(3 nodes: 3 x \(1 CPU, 0 GPU\)\) has the 1 "
                                           r"CPU\(s\) and 1 GPU"):
        check_fits(cpu_nodes, {"num_cpus": 1, "num_gpus": 1.0})
    check_fits(gpu_nodes, {"num_cpus": 8, "num_gpus": 2.0})
    plan = plan_sweep(parse_spec(cluster_spec(data_csv)))
    cost = estimate(plan)
    assert wall_seconds(plan, 1) == pytest.approx(cost.dense_cpu_s + cost.prune_cpu_s)  # one slot: the sum
    three = wall_seconds(plan, 3)
    assert (cost.dense_cpu_s + cost.prune_cpu_s) / 3 <= three < wall_seconds(plan, 1)
    assert wall_seconds(plan, 100) == pytest.approx(wall_seconds(plan, 12))  # no more parallelism than runs
    lines = cluster_plan_lines(plan, None)  # no address: this machine as a local runtime, nothing started
    assert lines[0].startswith("a local Ray runtime: 1 node") and "0 of 12 runs are GPU tasks" in lines[1]
    assert "estimated wall time on it" in lines[2]


def test_plan_command_errors(data_csv, tmp_path):
    import socket

    path = str(write_spec(tmp_path, cluster_spec(data_csv)))
    with socket.socket() as probe:  # a loopback port nobody listens on once closed (Ray would retry for minutes)
        probe.bind((LOOPBACK, 0))
        closed = f"{LOOPBACK}:{probe.getsockname()[1]}"
    for args, message in ((["--address", "auto"], "--address and --gpus-per-run need --executor ray"),
                          (["--executor", "ray", "--address", closed], f"no Ray cluster answers at {closed}"),
                          (["--executor", "spark"], "unknown executor 'spark'"),
                          (["--executor", "ray", "--threads", "0"], "--threads must be at least 1"),
                          (["--executor", "ray", "--gpus-per-run", "0.5"], "needs device cuda")):
        result = runner.invoke(app, ["sweep", "plan", path, *args])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
        assert "dense trainings" not in result.output or closed not in message  # no address: refused before planning
    with pytest.raises(TsPruneError, match=f"no Ray cluster answers at {closed}"):
        RayExecutor(address=closed)  # `sweep run` makes its executor before planning


# --- on the simulated cluster -------------------------------------------------------------------------------------


@pytest.mark.heavy  # the cluster takes ~30 s to start: every test on it runs in make test-heavy (CI)
def test_sweep_spreads_over_nodes_within_their_budgets_without_a_shared_filesystem(cluster, data_csv,
                                                                                   local_reference, tmp_path):
    spec = cluster_spec(data_csv)
    sweep = tmp_path / "sweep"
    started = time.perf_counter()
    outcome = run_sweep(parse_spec(spec), sweep, executor="ray", progress=False)  # joins the fixture's runtime
    seconds = time.perf_counter() - started
    assert (outcome.done, outcome.failed) == (12, 0)
    records = check_sweep(sweep, spec, local_reference)
    nodes = {record["node"] for record in records.values()}
    assert nodes == cluster.alive()  # every node ran some
    assert {record["threads"] for record in records.values()} == {1}
    assert sum(record["retries"] for record in records.values()) == 0
    for node in nodes:  # one CPU per node: its runs never overlapped
        windows = sorted(record["task_window"] for record in records.values() if record["node"] == node)
        assert all(later[0] >= earlier[1] for earlier, later in zip(windows, windows[1:])), windows
    # no shared filesystem: some prune runs ran away from their dense run, on the dense weights Ray shipped
    assert any(record["node"] != records[record["parent_id"]]["node"] for record in records.values()
               if record["kind"] == "prune")
    # each node worked in its own scratch folder (and nowhere else), empty again now
    assert all((cluster.scratch[node] / "tsprune-sweep").is_dir() for node in nodes) and not cluster.leftovers(nodes)
    assert not any((Path(tempfile.gettempdir()) / "tsprune-sweep" / node[:16]).exists() for node in nodes)
    print(f"\n3-node sweep: {len(records)} runs, 0 retries, {seconds:.1f}s, runs per node "
          f"{sorted(sum(r['node'] == n for r in records.values()) for n in nodes)}")


@pytest.mark.heavy  # the cluster takes ~30 s to start: every test on it runs in make test-heavy (CI)
def test_engine_twins_are_one_task_on_the_cluster(cluster, data_csv, tmp_path):
    """A masked run and its sparse-engine twin go to one task, so one worker prunes and fine-tunes them once."""
    spec = cluster_spec(data_csv, seeds=[0], methods={"magnitude": [0.5]}, finetune_epochs=[0, 1],
                        finetune_densities=[0.5], engines=["dense", "sparse"])
    outcome = run_sweep(parse_spec(spec), tmp_path / "sweep", executor="ray", progress=False)
    prune = [record for record in read_records(tmp_path / "sweep").values() if record["kind"] == "prune"]
    assert (outcome.done, outcome.failed, len(prune)) == (5, 0, 4)
    pairs: dict[tuple, list[dict]] = {}
    for record in prune:
        pairs.setdefault((record["labels"]["target_density"], record["labels"]["finetune_epochs"]), []).append(record)
    for dense_engine, sparse_engine in (sorted(pair, key=lambda r: r["labels"]["engine"]) for pair in pairs.values()):
        assert dense_engine["node"] == sparse_engine["node"]
        assert not dense_engine["metrics"]["pruning_reused"] and sparse_engine["metrics"]["pruning_reused"]
        assert dense_engine["metrics"]["mse"] == sparse_engine["metrics"]["mse"]


@pytest.mark.heavy  # the cluster takes ~30 s to start: every test on it runs in make test-heavy (CI)
def test_plan_shows_the_cluster_and_run_refuses_what_no_node_fits(cluster, data_csv, tmp_path):
    result = runner.invoke(app, ["sweep", "plan", str(write_spec(tmp_path, cluster_spec(data_csv))), "--executor",
                                 "ray", "--address", cluster.address])
    assert result.exit_code == 0, result.output
    assert f"Ray cluster at {cluster.address}: 3 nodes: 2 x (1 CPU, 0 GPU), 1 x (1 CPU, 1 GPU)" in result.output
    assert ("each run asks 1 CPU(s) for 1 thread(s) and no GPU; 0 of 12 runs are GPU tasks; the cluster holds 3 "
            "run(s) at a time") in result.output and "estimated wall time on it: ~" in result.output
    spec = write_spec(tmp_path, cluster_spec(data_csv, device="cuda"))
    result = runner.invoke(app, ["sweep", "plan", str(spec), "--executor", "ray", "--address", cluster.address,
                                 "--gpus-per-run", "0.5"])
    assert result.exit_code == 0, result.output
    assert ("each run asks 1 CPU(s) for 1 thread(s) and 0.5 GPU; 12 of 12 runs are GPU tasks; the cluster holds 1 "
            "run(s) at a time") in result.output  # the GPU node has one CPU
    with pytest.raises(TsPruneError, match=r"no node of the Ray cluster \(3 nodes: .*\) has the 2 CPU\(s\) a run asks"):
        run_sweep(parse_spec(cluster_spec(data_csv)), tmp_path / "sweep", executor="ray", threads=2, progress=False)


def executing(scratch: Path) -> list[int]:
    """The worker processes executing a tsprune task on the node whose scratch folder is ``scratch``: Ray titles a
    worker ``ray::<task>`` while it runs one, and a node's workers inherit its TSPRUNE_SCRATCH."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if not (proc / "cmdline").read_bytes().startswith((b"ray::dense_task", b"ray::prune_task")):
                continue
            if f"TSPRUNE_SCRATCH={scratch}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except (OSError, ValueError):  # not a process, or gone meanwhile
            continue
    return pids


@pytest.mark.heavy
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the busy node's workers in /proc")
def test_a_worker_node_lost_mid_sweep(cluster, data_csv, local_reference, tmp_path):
    """A worker node dies while it executes a run: its worker is frozen (SIGSTOP, so that run cannot finish first)
    and the node's processes are SIGKILLed. The driver resubmits the lost run; every run ends done exactly once
    with the local run's metrics, and the retry is recorded."""
    spec = cluster_spec(data_csv)
    sweep = tmp_path / "sweep"
    outcome: dict[str, Any] = {}

    def drive() -> None:
        try:
            outcome["result"] = run_sweep(parse_spec(spec), sweep, executor="ray", progress=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            outcome["error"] = exc

    workers = {node.node_id for node in cluster.cluster.worker_nodes}
    started = time.perf_counter()
    driver = threading.Thread(target=drive)
    driver.start()
    victim = None
    deadline = time.monotonic() + 240
    while victim is None and driver.is_alive() and time.monotonic() < deadline:
        recorded = len(list((sweep / "records").glob("*.json"))) if (sweep / "records").is_dir() else 0
        busy = {node: executing(cluster.scratch[node]) for node in workers} if 1 <= recorded <= 8 else {}
        for node, pids in busy.items():
            if pids:
                victim = node
                for pid in pids:
                    os.kill(pid, signal.SIGSTOP)
                cluster.cluster.remove_node(cluster.worker(node), allow_graceful=False)
                for pid in pids:  # its raylet is gone; the frozen worker goes with its machine
                    os.kill(pid, signal.SIGKILL)
                break
        time.sleep(0.02)
    driver.join(timeout=300)
    seconds = time.perf_counter() - started
    try:
        assert victim is not None, "no worker node was seen executing a run while the sweep ran"
        assert "error" not in outcome and not driver.is_alive()
        assert (outcome["result"].done, outcome["result"].failed) == (12, 0)
        records = check_sweep(sweep, spec, local_reference)
        retried = {run_id: record for run_id, record in records.items() if record["retries"]}
        assert retried and all(record["node"] != victim for record in retried.values())
        assert all(record["lost"] and len(record["lost"]) == record["retries"] for record in retried.values())
        survivors = cluster.alive()
        assert victim not in survivors and not cluster.leftovers(survivors)  # only the dead node keeps scratch
        print(f"\nnode loss: {len(records)} runs, {sum(r['retries'] for r in records.values())} retried "
              f"({', '.join(sorted({e.split(':')[0] for r in retried.values() for e in r['lost']}))}), "
              f"{seconds:.1f}s")
    finally:
        if victim is not None:  # back to three nodes for the next test
            del cluster.scratch[victim]
            cluster.add_worker()


@pytest.mark.heavy
def test_driver_killed_mid_sweep_then_restarted(cluster, data_csv, local_reference, tmp_path):
    """The driver (``tsprune sweep run --executor ray --address``) is SIGKILLed once some records exist and run
    again against the same cluster and store: 0 runs lost, 0 duplicated, the local run's metrics."""
    spec = cluster_spec(data_csv)
    path, sweep = write_spec(tmp_path, spec), tmp_path / "sweep"
    command = [sys.executable, "-m", "tsprune.cli", "sweep", "run", str(path), "--dir", str(sweep), "--executor",
               "ray", "--address", cluster.address, "--no-progress"]
    env = {**os.environ, **LOOPBACK_ENV}
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 240
    while len(list((sweep / "records").glob("*.json"))) < 3 and time.monotonic() < deadline:
        assert process.poll() is None, "the sweep stopped before its third record"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    recorded = len(list((sweep / "records").glob("*.json")))
    assert 3 <= recorded < 12
    finished = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, env=env)
    seconds = time.perf_counter() - started
    assert finished.returncode == 0, finished.stderr
    assert f"{12 - recorded} run(s) done, 0 failed, {recorded} already recorded" in finished.stdout
    records = check_sweep(sweep, spec, local_reference)
    assert sum(record["retries"] for record in records.values()) == 0  # the killed driver's tasks died with it
    assert not cluster.leftovers(cluster.alive())  # the restarted driver cleared what the killed one's tasks left
    print(f"\ndriver kill: {len(records)} runs, {recorded} recorded before the kill, {12 - recorded} after the "
          f"restart, 0 retried, {seconds:.1f}s")


@pytest.mark.heavy  # last: the GPU tasks need a worker process of their own on the head (~15 s here)
def test_cuda_runs_go_only_to_gpu_nodes(cluster, data_csv, tmp_path):
    """CUDA runs asking half a GPU run on the head, the one node with a (simulated) GPU, and never on the CPU-only
    workers (without CUDA on this machine they fail there at once, which is fine: where they ran is the point)."""
    spec = cluster_spec(data_csv, device="cuda", methods={"magnitude": [0.5]})
    outcome = run_sweep(parse_spec(spec), tmp_path / "sweep", executor="ray", gpus_per_run=0.5, progress=False)
    assert outcome.done + outcome.failed == 6
    records = read_records(tmp_path / "sweep")
    ran = [record for record in records.values() if record.get("node")]  # prune runs of a failed one never start
    assert ran and {record["node"] for record in ran} == {cluster.head}
