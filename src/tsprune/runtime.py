"""The ground floor: where and how code runs (device, seed, threads, the machine it ran on) and writing a file so that
a crash never leaves half of one. Every other module takes these from here.

torch is imported inside the functions that need it, so that the configuration layer, which writes JSON through
:func:`atomic_write`, stays importable without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tsprune.errors import TsPruneError

if TYPE_CHECKING:  # pragma: no cover
    import torch

INFERENCE_SEED = 0  # ProbSparse attention samples keys even in eval mode: every timed or compared pass uses this


# --------------------------------------------------------------------------------------------------- device


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; an explicit device that is not available is a clear error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TsPruneError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TsPruneError(f"device {name!r} requested but CUDA is not available here: use device cpu",
                           options=("device",))
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (a no-op on the CPU), so that a timer measures what it means to."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------------- randomness


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded_inference(device: torch.device, seed: int = INFERENCE_SEED) -> Iterator[None]:
    """``inference_mode`` on a forked RNG seeded with ``seed`` (CPU and the CUDA device), so a pass is reproducible
    and leaves the caller's random state as it was."""
    import torch

    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.inference_mode():
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


@contextlib.contextmanager
def evaluating(model: Any, device: torch.device, seed: int = INFERENCE_SEED) -> Iterator[None]:
    """``model`` in eval mode under :func:`seeded_inference`; its training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with seeded_inference(device, seed):
            yield
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------------------------------- threads


def configure_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count for the rest of the process (None leaves it)."""
    import torch

    check_threads(threads)
    if threads is not None:
        torch.set_num_threads(threads)


def check_threads(threads: int | None) -> None:
    """A thread count is None (leave torch's) or at least 1."""
    if threads is not None and threads < 1:
        raise TsPruneError(f"threads must be at least 1, got {threads}", options=("threads",))


@contextlib.contextmanager
def pinned_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``threads`` torch threads (None: as they are) and restore the count after; yields the
    count in use."""
    import torch

    check_threads(threads)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if threads is not None:
            torch.set_num_threads(previous)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def thread_budget(cores: int, workers: int) -> int:
    """Threads per run so that ``workers`` concurrent runs share ``cores`` without oversubscribing them."""
    return max(1, cores // workers)


# --------------------------------------------------------------------------------------------------- machine


def cpu_name() -> str:
    """The CPU model, e.g. ``AMD EPYC 7B13`` (from ``/proc/cpuinfo`` on Linux; elsewhere what ``platform`` knows,
    often only the architecture)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device | str) -> str:
    """The GPU's name for a CUDA device, the CPU model otherwise."""
    import torch

    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def environment(device: torch.device | str, threads: int | None = None) -> dict[str, Any]:
    """Where something ran: enough to tell whether two timings are comparable."""
    import torch

    device = torch.device(device)
    return {
        "device": str(device),
        "device_name": device_name(device),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# --------------------------------------------------------------------------------------------------- files


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` for a writer that needs a file name (safetensors, DuckDB); when the block
    succeeds it is fsynced and renamed over ``path``, and the folder fsynced (so the rename survives a power cut).
    On failure it is removed. A reader sees the old file or the new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def atomic_write(path: str | Path, payload: bytes | str) -> Path:
    """Write ``payload`` to ``path`` all or nothing (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload.encode() if isinstance(payload, str) else payload)
    return Path(path)


def fsync_folder(folder: Path) -> None:
    """Make renames inside ``folder`` durable (where the platform allows opening a folder)."""
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


@contextlib.contextmanager
def atomic_dir(path: str | Path, replace: bool = True) -> Iterator[Path]:
    """A staging folder for a writer that fills a whole directory (a run: weights, config, metrics). When the
    block succeeds the folder takes ``path``'s place; on failure it is removed and ``path`` is as it was.

    The staging folder is a hidden sibling (``.NAME.*``), so a crash leaves only a hidden folder, which the sweep
    store sweeps away. Linux has no portable atomic swap of two folders: an existing ``path`` is first renamed
    aside (hidden), then the new folder renamed in, then the old one deleted, so ``path`` is missing for the time
    between two renames and never half-written. ``replace`` False refuses an existing ``path``."""
    import shutil
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not replace:
        raise TsPruneError(f"{path} exists: choose another folder or allow overwriting it")
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield staging
        aside = None
        if path.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, aside / path.name)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_folder(path.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def atomic_write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    return atomic_write(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")
