"""Timing kernels where the model runs them: capture each layer's real inputs, time candidate kernels in
alternation, and choose (a pure function of the timings, so the rule is testable without a clock)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from tsprune.runtime import evaluating, synchronize

SEED = 0  # Informer samples keys even in eval: every capture pass sees the same samples
MIN_SAMPLE_S = 1e-3  # each timing sample repeats a fast op until it lasts about this long
MAX_CALLS = 8  # inputs captured per layer (a layer called more often is timed on its first calls)

Key = tuple[str, int | None]  # (kernel, block): "dense", "pcsr", "csr", "bsr" (with its block), "zero" or "skip"


def device_of(model: nn.Module) -> torch.device:
    return next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))


def capture_inputs(model: nn.Module, layers: Mapping[str, nn.Module], inputs: Sequence[Tensor]
                   ) -> dict[str, list[Tensor]]:
    """The input tensors each of ``layers`` receives during one forward pass ``model(*inputs)`` (up to
    ``MAX_CALLS`` per layer), so kernels are timed on the shapes the model really runs."""
    seen: dict[str, list[Tensor]] = {name: [] for name in layers}

    def hook_for(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            if len(seen[name]) < MAX_CALLS:
                seen[name].append(args[0].detach().clone())
        return hook

    handles = [module.register_forward_pre_hook(hook_for(name)) for name, module in layers.items()]
    try:
        with evaluating(model, device_of(model), SEED):
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _sample(module: nn.Module, calls: Sequence[Tensor], number: int, device: torch.device) -> float:
    """Seconds per pass over ``calls`` (mean of ``number`` passes)."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(number):
        for x in calls:
            module(x)
    synchronize(device)
    return (time.perf_counter() - start) / number


def time_candidates(candidates: Mapping[Key, nn.Module], calls: Sequence[Tensor], repeats: int = 10,
                    warmup: int = 2, drop_factor: float = 2.0) -> dict[Key, float]:
    """Median milliseconds of each candidate over ``calls``, timed in alternation (one sample of each per round).

    Alternation keeps a load change on a shared machine from posing as a speedup. After the first third of the
    rounds a candidate slower than ``drop_factor`` x the fastest stops being timed: a hopeless BSR kernel on a big
    batch would otherwise dominate compile time. ``(dense, None)`` is never dropped.
    """
    device = calls[0].device
    samples: dict[Key, list[float]] = {key: [] for key in candidates}
    with torch.inference_mode():
        for _ in range(warmup):
            for module in candidates.values():
                _sample(module, calls, 1, device)
        first = min(_sample(module, calls, 1, device) for module in candidates.values())
        number = max(1, min(100, math.ceil(MIN_SAMPLE_S / max(first, 1e-9))))
        active = dict(candidates)
        for round_ in range(repeats):
            for key, module in active.items():
                samples[key].append(_sample(module, calls, number, device))
            if round_ + 1 == max(1, repeats // 3):
                best = min(statistics.median(samples[key]) for key in active)
                active = {key: module for key, module in active.items()
                          if key == ("dense", None) or statistics.median(samples[key]) <= drop_factor * best}
    return {key: statistics.median(values) * 1e3 for key, values in samples.items()}


def choose_kernel(timings_ms: Mapping[Key, float], min_speedup: float = 1.05) -> Key:
    """The fastest sparse ``(kernel, block)`` if it beats ``("dense", None)`` by ``min_speedup``, else dense.

    A pure function of the timings, so the rule is testable without a clock.
    """
    dense = timings_ms[("dense", None)]
    sparse = {key: ms for key, ms in timings_ms.items() if key[0] != "dense"}
    if not sparse:
        return ("dense", None)
    best = min(sparse, key=sparse.__getitem__)
    return best if dense >= min_speedup * sparse[best] else ("dense", None)
