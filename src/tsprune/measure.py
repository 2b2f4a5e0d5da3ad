"""Cost measurement used everywhere: parameters, FLOPs and latency of a forecaster on real windows.

FLOP conventions (``count_flops``)
----------------------------------
Counted at the operator level with PyTorch's ``FlopCounterMode`` during one inference forward pass, so a pruned
model's FLOPs follow from the shapes it really runs. One multiply-add is 2 FLOPs. Counted operators:

* ``mm``/``addmm``/``bmm``/``baddbmm`` (``Linear``, ``matmul``, ``einsum``) and convolutions: PyTorch's formulas.
  A product of *complex* tensors (FEDformer's Fourier blocks) costs 4x the real count: one complex multiply-add
  is 4 real multiplies and 4 real adds.
* Fused attention (every ``scaled_dot_product_attention`` kernel, CPU and CUDA): ``2*B*H*L*S*E`` for ``QK^T``
  plus ``2*B*H*L*S*Ev`` for the product with ``V``. Causal masks are not discounted (as upstream).
* FFTs: the standard radix-2 estimate, ``5 N log2 N`` real FLOPs per complex transform of length ``N``
  (``_fft_c2c``) and half that, ``2.5 N log2 N``, per real transform (``_fft_r2c``/``_fft_c2r``: an ``rfft`` is
  half a complex FFT), times the number of transforms. For a multi-dimensional FFT ``N`` is the product of the
  transformed lengths (row-column FFTs sum to the same ``N log2 N``). Frequency-domain layers are counted in
  their FFT form (``real_dft.fft_forms``) whichever equivalent form evaluation or an export runs (Autoformer
  evaluates short windows with Gram products, exports use real DFTs).

Not counted, as in most FLOP tables: elementwise and reduction ops (activations, norms, softmax outside fused
attention, residual adds, moving averages/pooling, ``topk``/``gather``), including elementwise *complex* products
and their sums, such as Autoformer's channel sum of ``rfft(q) * conj(rfft(k))`` (a ``linalg.vecdot``).

``flops_effective`` discounts zeros in the weights of ``Linear``/``Conv1d`` modules: a module whose weight has
density ``d`` is charged ``d`` times its counted FLOPs (what a sparse kernel would do). ``flops_dense_equivalent``
is the plain count: the dense model of the same architecture (same shapes).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from tsprune.errors import TsPruneError
from tsprune.models.layers.real_dft import fft_forms
from tsprune.runtime import (  # noqa: F401 - cpu_name, device_name: this module's API too
    cpu_name,
    device_name,
    environment,
    evaluating,
    pinned_threads,
    seeded_inference,
    synchronize,
)
from tsprune.sparse.engine import weight_density

if TYPE_CHECKING:
    from tsprune.data.dataset import ForecastData

aten = torch.ops.aten

# Informer's ProbSparse attention samples keys even in eval; a fixed seed on a forked RNG makes every measurement
# see the same samples without touching the caller's random state.
MEASURE_SEED = 0

# Modules whose FLOPs ``flops_effective`` discounts by weight density.
SPARSE_MODULES = (nn.Linear, nn.Conv1d)


# --------------------------------------------------------------------------------------------------- inputs


def example_inputs(
    data: ForecastData, batch_size: int, split: str = "test", device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The first ``batch_size`` real windows of ``split`` as ``(x_enc, x_mark_enc, x_dec, x_mark_dec)``.

    Windows repeat (0, 1, ..., n-1, 0, 1, ...) when the split has fewer than ``batch_size`` of them.
    """
    if batch_size < 1:
        raise TsPruneError(f"batch_size must be at least 1, got {batch_size}", options=("batch_size",))
    count = data.n_windows(split)
    if count == 0:
        raise TsPruneError(f"the {split!r} split has no complete window to measure on")
    batch = data.batch(split, torch.arange(batch_size) % count, device)
    return batch.x_enc, batch.x_mark_enc, batch.x_dec, batch.x_mark_dec


# --------------------------------------------------------------------------------------------------- params


def _weights(model: nn.Module) -> Iterator[Tensor]:
    """Every parameter as the model uses it: for ``torch.nn.utils.prune`` reparametrisations (``weight_orig`` plus
    ``weight_mask``) the masked ``weight``, so pruned zeros are seen."""
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            masked = getattr(module, name[: -len("_orig")], None) if name.endswith("_orig") else None
            yield masked if isinstance(masked, Tensor) else param


def count_params(model: nn.Module) -> dict[str, int]:
    """``{"params", "nonzero_params"}``: parameter elements (a complex element counts once) and how many are
    nonzero. Shared parameters count once."""
    seen: set[int] = set()
    params = nonzero = 0
    for weight in _weights(model):
        if id(weight) in seen:
            continue
        seen.add(id(weight))
        params += weight.numel()
        nonzero += int(torch.count_nonzero(weight.detach()))
    return {"params": params, "nonzero_params": nonzero}


# --------------------------------------------------------------------------------------------------- FLOP formulas


def _fft_cost(shape: Sequence[int], dims: Sequence[int], per_point: float) -> int:
    """``per_point * N log2 N`` per transform over ``dims`` of the real-domain ``shape``, times the transforms."""
    n = math.prod(shape[d % len(shape)] for d in dims)
    if n < 2:
        return 0
    transforms = math.prod(shape) // n
    return round(per_point * n * math.log2(n) * transforms)


def _fft_r2c_flop(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
    return _fft_cost(x_shape, dim, 2.5)


def _fft_c2r_flop(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
    # The input is the half spectrum; the transform length is the real output's.
    return _fft_cost(out_shape, dim, 2.5)


def _fft_c2c_flop(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
    return _fft_cost(x_shape, dim, 5.0)


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """The CPU fused attention kernel, which upstream has no formula for: ``[B, H, L, E] x [B, H, S, E]``."""
    batch, heads, length, head_dim = query_shape
    source, value_dim = key_shape[-2], value_shape[-1]
    return 2 * batch * heads * length * source * (head_dim + value_dim)


def _complex_aware(real_formula: Callable[..., int]) -> Callable[..., int]:
    """Upstream matmul formula, times 4 when the operands are complex.

    Formulas normally see only shapes (``FlopCounterMode`` wraps them with ``shape_wrapper``), which hides the
    dtype. A formula carrying ``_get_raw = True`` is called with the tensors themselves; upstream's registered
    formulas are already shape-wrapped, so they accept those tensors as they are.
    """

    def formula(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
        flops = real_formula(*args, out_val=out_val, **kwargs)
        is_complex = any(isinstance(a, Tensor) and a.is_complex() for a in args)
        return 4 * flops if is_complex else flops

    formula._get_raw = True  # type: ignore[attr-defined]
    return formula


def flop_formulas() -> dict[Any, Callable[..., int]]:
    """The ``custom_mapping`` added to ``FlopCounterMode``'s built-in formulas (see the module docstring)."""
    formulas: dict[Any, Callable[..., int]] = {
        aten._fft_r2c: _fft_r2c_flop,
        aten._fft_c2r: _fft_c2r_flop,
        aten._fft_c2c: _fft_c2c_flop,
        aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    }
    for op in (aten.mm, aten.addmm, aten.bmm, aten.baddbmm):
        formulas[op] = _complex_aware(flop_registry[op])
    return formulas


# --------------------------------------------------------------------------------------------------- running


def _device_of(inputs: Sequence[Tensor]) -> torch.device:
    return next((t.device for t in inputs if isinstance(t, Tensor)), torch.device("cpu"))


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Parameters temporarily not requiring grad.

    The FLOP counter's module tracker hooks autograd on every module input that requires grad; a parameter passed
    as a module input (Crossformer's routers) has no autograd node under inference mode and would make it fail.
    """
    flags = [(param, param.requires_grad) for param in model.parameters()]
    try:
        for param, _ in flags:
            param.requires_grad_(False)
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def _module_aliases(model: nn.Module) -> dict[str, nn.Module]:
    """``FlopCounterMode``'s per-module keys -> modules.

    Its module tracker names the called model by its class and children by ``<Class>.<qualified name>``; a module
    registered under several names gets one of them, so every alias is listed.
    """
    root = type(model).__name__
    return {f"{root}.{name}" if name else root: module for name, module in model.named_modules(remove_duplicate=False)}


def count_flops(model: nn.Module, inputs: Sequence[Tensor]) -> dict[str, Any]:
    """FLOPs of one inference forward pass ``model(*inputs)`` at the batch size of ``inputs``.

    Returns ``flops`` (= ``flops_dense_equivalent``), ``flops_effective`` (weight zeros of ``Linear``/``Conv1d``
    discounted), ``flops_by_operator`` (``"aten.bmm"`` -> FLOPs) and ``flops_by_module`` (qualified name of each
    ``Linear``/``Conv1d`` that ran -> its FLOPs).
    """
    counter = FlopCounterMode(display=False, custom_mapping=flop_formulas())
    with _frozen(model), fft_forms(model), evaluating(model, _device_of(inputs), MEASURE_SEED), counter:
        model(*inputs)
    counts = counter.get_flop_counts()
    total = counter.get_total_flops()
    by_operator = {str(op): int(flops) for op, flops in counts.get("Global", {}).items()}

    names = {id(module): name for name, module in model.named_modules()}
    aliases = _module_aliases(model)
    by_module: dict[str, int] = defaultdict(int)
    for key, per_op in counts.items():
        module = aliases.get(key)
        if isinstance(module, SPARSE_MODULES):
            by_module[names[id(module)]] += int(sum(per_op.values()))

    saved = sum((1.0 - weight_density(model.get_submodule(name))) * flops for name, flops in by_module.items())
    return {
        "flops": int(total),
        "flops_dense_equivalent": int(total),
        "flops_effective": round(total - saved),
        "flops_by_operator": by_operator,
        "flops_by_module": dict(by_module),
    }


def measure_latency(
    model: nn.Module, inputs: Sequence[Tensor], repeats: int = 20, warmup: int = 3, threads: int | None = None
) -> dict[str, Any]:
    """Wall-clock time of ``model(*inputs)`` in inference mode: ``warmup`` untimed passes, then ``repeats`` timed.

    ``threads`` pins ``torch.set_num_threads`` for the measurement (restored afterwards). Returns the median, 25th
    and 75th percentiles and IQR in milliseconds, with the batch size, thread count, device and torch version.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    device = _device_of(inputs)
    times = []
    with pinned_threads(threads) as used, evaluating(model, device, MEASURE_SEED):
        for _ in range(warmup):
            model(*inputs)
        for _ in range(repeats):
            synchronize(device)  # queued work must not leak into this pass
            start = time.perf_counter()
            model(*inputs)
            synchronize(device)
            times.append(time.perf_counter() - start)
    return _summary(times, inputs, used, device)


# Seconds of untimed passes before each timed pass when another runtime's thread pool is in the loop. Worker
# threads spin after a pass, waiting for more work: measured on a 2-core AMD EPYC (Zen 3), ONNX Runtime's pool kept
# about one core busy for 40-50 ms after a pass (Crossformer at batch 32, Transformer at batch 1), PyTorch's OpenMP
# pool for under 10 ms. On two cores the model timed next shares them with that spin: in one alternating loop,
# eager PyTorch took 295 ms and tsprune's sparse engine 137 ms per Crossformer pass at batch 32, against 272 and
# 102 ms timed alone. Running the model itself for this long first puts it in the steady state a deployed forecaster
# serving requests is in: its caches warm, its own pool awake, the previous engine's spin over. (Sleeping instead was
# up to 27% slower at batch 1 on a virtual machine: cold caches, idle cores lent away; docs/concepts/measurement.md.)
REWARM_S = 0.06


def compare_latency(
    models: Mapping[str, nn.Module], inputs: Sequence[Tensor], repeats: int = 20, warmup: int = 3,
    threads: int | None = None, rewarm_s: float = 0.0,
) -> dict[str, dict[str, Any]]:
    """Latency of several models on the same inputs, timed in alternation (pass 1 of each, pass 2 of each, ...).

    On a shared or thermally drifting machine, timing one model after the other lets a load change masquerade as
    a speedup; interleaved passes see the same conditions, so their ratio is the honest one. The order turns
    round on every other repeat (A B, B A, A B, ...): a model timed right after another one may find the caches
    and the allocator as that one left them, so no model should always be the one that goes first or follows a
    given model. With ``rewarm_s > 0``, every timed pass follows untimed passes of the same model, at least
    one and until ``rewarm_s`` seconds have passed (:data:`REWARM_S` when ONNX Runtime or another runtime with its own
    thread pool is in the loop), so each model is timed in its own steady state. Same fields as
    :func:`measure_latency` per model.
    """
    if repeats < 1 or warmup < 0 or rewarm_s < 0:
        raise ValueError(f"need repeats >= 1, warmup >= 0 and rewarm_s >= 0, got {repeats}, {warmup} and {rewarm_s}")
    device = _device_of(inputs)
    times: dict[str, list[float]] = {name: [] for name in models}
    with pinned_threads(threads) as used, contextlib.ExitStack() as stack:
        for model in models.values():
            stack.enter_context(evaluating(model, device, MEASURE_SEED))
        for _ in range(warmup):
            for model in models.values():
                model(*inputs)
        forward = list(models.items())
        backward = forward[::-1]
        for repeat in range(repeats):
            for name, model in forward if repeat % 2 == 0 else backward:
                if rewarm_s > 0:
                    _run_for(model, inputs, device, rewarm_s)
                synchronize(device)
                start = time.perf_counter()
                model(*inputs)
                synchronize(device)
                times[name].append(time.perf_counter() - start)
    return {name: _summary(values, inputs, used, device) for name, values in times.items()}


def _run_for(model: nn.Module, inputs: Sequence[Tensor], device: torch.device, seconds: float) -> None:
    """Untimed passes of ``model``: at least one, until ``seconds`` have passed."""
    start = time.perf_counter()
    while True:
        model(*inputs)
        synchronize(device)
        if time.perf_counter() - start >= seconds:
            return


def _summary(times: list[float], inputs: Sequence[Tensor], threads: int, device: torch.device) -> dict[str, Any]:
    levels = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    p25, median, p75 = (torch.tensor(times, dtype=torch.float64).quantile(levels) * 1e3).tolist()
    return {"median_ms": median, "p25_ms": p25, "p75_ms": p75, "iqr_ms": p75 - p25, "repeats": len(times),
            "batch_size": int(inputs[0].shape[0]), "threads": threads, "device": str(device),
            "torch": torch.__version__}


# --------------------------------------------------------------------------------------------------- everything


@contextmanager
def _placed(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Run on ``device``, then move the model back where it was."""
    home = next((t.device for t in (*model.parameters(), *model.buffers())), device)
    moved = home != device
    if moved:
        model.to(device)
    try:
        yield
    finally:
        if moved:
            model.to(home)


def measure(
    model: nn.Module,
    data: ForecastData,
    batch_sizes: Sequence[int] = (1, 32),
    device: torch.device | str = "cpu",
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    latency: bool = True,
) -> dict[str, Any]:
    """Parameters, FLOPs and latency of ``model`` on the first real test windows of ``data``.

    FLOPs are per forward pass at **batch size 1** (``flops_batch_size``); they scale linearly with the batch.
    Latency is measured at each of ``batch_sizes`` (``latency["32"]`` etc.); ``latency_ms`` is the median at the
    largest one (``None`` with ``latency=False``). The model runs on ``device`` and is moved back afterwards.
    """
    device = torch.device(device)
    with _placed(model, device):
        flops = count_flops(model, example_inputs(data, 1, device=device))
        timings: dict[str, dict[str, Any]] = {}
        if latency:
            for size in batch_sizes:
                inputs = example_inputs(data, size, device=device)
                timings[str(size)] = measure_latency(model, inputs, repeats, warmup, threads)
    return {
        **count_params(model),
        "flops": flops["flops"],
        "flops_dense_equivalent": flops["flops_dense_equivalent"],
        "flops_effective": flops["flops_effective"],
        "flops_batch_size": 1,
        "flops_by_operator": flops["flops_by_operator"],
        "latency": timings,
        "latency_ms": timings[str(max(batch_sizes))]["median_ms"] if timings else None,
        "environment": environment(device, threads),
    }
