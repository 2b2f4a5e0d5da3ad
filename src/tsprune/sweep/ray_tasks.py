"""What runs on a Ray worker node: the dense and prune tasks, in node-local scratch, and its clean-up
(:mod:`tsprune.sweep.ray_executor` is the driver)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tsprune.sweep.plan import DenseRun, PruneRun
from tsprune.sweep.store import RUN_FILES
from tsprune.sweep.tasks import execute_dense, execute_prune

SCRATCH_ENV = "TSPRUNE_SCRATCH"  # a node's scratch base folder (default: its temp folder)


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


def prune_task(runs: list[PruneRun], dense_files: dict[str, bytes], threads: int, keep: bool,
               timed: bool = True) -> list[dict[str, Any]]:
    """Prune from the dense run directory ``dense_files`` (resolved by Ray from the driver's ObjectRef): one run, or
    engine twins one after the other, which share one pruning, fine-tuning and evaluation in this worker. One
    result per run, in order."""
    started = time.time()
    _hide_gpus_unless_granted()
    scratch = scratch_root() / f"prune-{runs[0].run_id}"
    shutil.rmtree(scratch, ignore_errors=True)  # a lost attempt's leftovers
    dense = scratch / "dense"
    dense.mkdir(parents=True)
    for name, payload in dense_files.items():  # a worker that has this dense run cached will not read them
        (dense / name).write_bytes(payload)
    results = []
    try:
        for index, run in enumerate(runs):
            out = scratch / f"pruned-{run.run_id}" if keep else None
            record = execute_prune(run, dense, threads, out, timed, twin_of_previous=index > 0)
            files = _read_files(out) if out is not None and record["status"] == "done" else None
            results.append(_result(record, files, started))
            started = time.time()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return results


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
