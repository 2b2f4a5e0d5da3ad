"""Whole-model rewrites of a compiled model, each timed on the whole forward pass and kept only where faster.

:func:`choose_epilogues` folds the activation between a feed-forward block's two layers into the first layer's pcsr
kernel (appendix D.8 of ``csrc/sparse_linear.cpp``); :func:`choose_attention` runs attention over a few keys in
tsprune's fused op (:mod:`tsprune.sparse.attention`). Both return the plan entry that
:func:`tsprune.sparse.engine.apply_plan` replays. :func:`two_layer_blocks` finds the ``Linear -> activation ->
Linear`` blocks that these rewrites and the engine's dead-product rewrite work on.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tsprune.errors import TsPruneError
from tsprune.runtime import evaluating
from tsprune.sparse import attention as fused_attention
from tsprune.sparse import kernel as pcsr
from tsprune.sparse.layers import ACTIVATION_FNS, OWN_KERNEL, SparseLinear, ZeroLinear, identity
from tsprune.sparse.timing import SEED, device_of

__all__ = ["attention_usable", "choose_attention", "choose_epilogues", "epilogue_candidates", "fuse_epilogues",
           "two_layer_blocks", "unfuse_epilogues"]

ELEMENTWISE = (nn.GELU, nn.ReLU, nn.Dropout, nn.Identity)  # between two Linears: zero in, nothing out of it


def two_layer_blocks(model: nn.Module, kinds: tuple[type, ...] = (nn.Linear,)) -> Iterator[tuple[str, str]]:
    """``(first, second)`` names of every ``Linear -> activation -> Linear`` block: our ``FeedForward``
    (``linear1``/``linear2``) and ``nn.Sequential(Linear, GELU|ReLU|Dropout|Identity, Linear)`` (Crossformer).
    ``kinds``: what counts as a linear layer (also the sparse ones, once compiled)."""
    for name, block in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(getattr(block, "linear1", None), kinds) and isinstance(getattr(block, "linear2", None), kinds):
            yield prefix + "linear1", prefix + "linear2"
        elif (isinstance(block, nn.Sequential) and len(block) == 3 and isinstance(block[0], kinds)
              and isinstance(block[1], ELEMENTWISE) and isinstance(block[2], kinds)):
            yield prefix + "0", prefix + "2"


COMPILED_LINEAR = (nn.Linear, SparseLinear, ZeroLinear)  # a linear layer before or after compilation


def _time_rewrite(model: nn.Module, args: Sequence[Tensor], do: Callable[[], object], undo: Callable[[], object],
                  repeats: int, warmup: int) -> dict[str, float]:
    """Median ms of whole forward passes without (``"off"``) and with (``"on"``) an in-place rewrite, timed in
    alternation (one pass of each per round); the model is left without it."""
    samples: dict[str, list[float]] = {"off": [], "on": []}
    with torch.inference_mode(), evaluating(model, device_of(model), SEED):
        for round_ in range(warmup + repeats):
            for variant in ("off", "on"):
                (do if variant == "on" else undo)()
                start = time.perf_counter()
                model(*args)
                if round_ >= warmup:
                    samples[variant].append(time.perf_counter() - start)
    undo()
    return {variant: statistics.median(values) * 1e3 for variant, values in samples.items()}


def epilogue_candidates(model: nn.Module) -> dict[str, str]:
    """``{first layer: activation}`` of the two-layer blocks whose activation the first layer's kernel can apply:
    the first layer on tsprune's kernel, the activation exact GELU or ReLU (our ``FeedForward``'s function, or
    ``nn.GELU()``/``nn.ReLU()`` between Crossformer's two Linears), not yet folded."""
    found: dict[str, str] = {}
    for first_name, _ in two_layer_blocks(model, COMPILED_LINEAR):
        first = model.get_submodule(first_name)
        if isinstance(first, SparseLinear) and first.layout == OWN_KERNEL and first.activation is None:
            block = model.get_submodule(first_name.rpartition(".")[0])
            activation = _block_activation(block)
            if activation is not None:
                found[first_name] = activation
    return found


def _block_activation(block: nn.Module) -> str | None:
    if isinstance(block, nn.Sequential):
        middle = block[1]
        if isinstance(middle, nn.GELU) and middle.approximate == "none":
            return "gelu"
        return "relu" if isinstance(middle, nn.ReLU) else None
    function = getattr(block, "activation", None)
    return next((name for name, fn in ACTIVATION_FNS.items() if function is fn), None)


def fuse_epilogues(model: nn.Module, layers: Mapping[str, str]) -> None:
    """Fold each block's activation into its first layer (``{first layer: activation}``), in place: the layer
    applies it (the pcsr kernel as it stores its output) and the block's own activation becomes the identity."""
    for name, activation in layers.items():
        first = model.get_submodule(name)
        block = model.get_submodule(name.rpartition(".")[0])
        if not isinstance(first, SparseLinear) or _block_activation(block) != activation:
            raise TsPruneError(f"cannot fold a {activation} into layer {name!r}: it is not a sparse layer followed "
                               "by that activation")
        first.activation = activation
        if isinstance(block, nn.Sequential):
            block[1] = nn.Identity()
        else:
            setattr(block, "activation", identity)  # FeedForward's activation is a plain function attribute


def unfuse_epilogues(model: nn.Module) -> dict[str, str]:
    """Undo :func:`fuse_epilogues` everywhere, in place; returns what was folded."""
    undone: dict[str, str] = {}
    for first_name, _ in list(two_layer_blocks(model, COMPILED_LINEAR)):
        first = model.get_submodule(first_name)
        if isinstance(first, SparseLinear) and first.activation is not None:
            block = model.get_submodule(first_name.rpartition(".")[0])
            activation, first.activation = first.activation, None
            if isinstance(block, nn.Sequential):
                block[1] = nn.GELU() if activation == "gelu" else nn.ReLU()
            else:
                setattr(block, "activation", ACTIVATION_FNS[activation])
            undone[first_name] = activation
    return undone


def choose_epilogues(model: nn.Module, args: Sequence[Tensor], repeats: int = 10, warmup: int = 2,
                     timed: bool = True) -> dict[str, Any] | None:
    """Fold feed-forward activations into the kernel (:func:`fuse_epilogues`, in place) if the whole forward pass
    measures faster that way (fused median below separate: the fold only removes work, so no ``min_speedup``
    margin; ``timed=False``: folded without timing). Returns the plan entry ``{"kernel": "fused" | "separate",
    "layers": {...}, "ms": {...}}``, ``None`` if nothing can fold."""
    layers = epilogue_candidates(model)
    if not layers:
        return None
    ms = _time_rewrite(model, args, lambda: fuse_epilogues(model, layers), lambda: unfuse_epilogues(model),
                       repeats, warmup) if timed else {}
    keep = not timed or ms["on"] < ms["off"]  # less work by construction: kept unless it measures slower
    if keep:
        fuse_epilogues(model, layers)
    return {"kernel": "fused" if keep else "separate", "layers": layers,
            **({"ms": {"separate": ms["off"], "fused": ms["on"]}} if ms else {})}


def attention_usable(model: nn.Module) -> bool:
    """Whether the fused attention op can run ``model``: float32 on CPU, and the kernel library builds here."""
    parameter = next(model.parameters(), None)
    return (parameter is None or (parameter.device.type == "cpu" and parameter.dtype == torch.float32)) \
        and pcsr.available()


def choose_attention(model: nn.Module, args: Sequence[Tensor], min_speedup: float = 1.05, repeats: int = 10,
                     warmup: int = 2, timed: bool = True) -> dict[str, Any] | None:
    """Fuse ``model``'s short attention (in place) if the whole forward pass measures faster that way.

    The candidates are every plain ``FullAttention``; the two variants (torch's path, the fused op) are timed in
    alternation on ``args``, whole passes, and the fused one is kept only if ``torch_ms >= min_speedup *
    fused_ms`` (``timed=False``: kept without timing). Returns the plan entry ``{"kernel": "fused" | "torch",
    "modules": [...], "ms": {...}}``, or ``None`` when there is nothing to fuse or the op cannot run here."""
    names = [name for name in fused_attention.fusable(model) if name]
    if not names or not attention_usable(model):
        return None
    ms: dict[str, float] = {}
    if timed:
        timing = _time_rewrite(model, args, lambda: fused_attention.fuse(model, names),
                               lambda: fused_attention.unfuse(model), repeats, warmup)
        ms = {"torch": timing["off"], "fused": timing["on"]}
    keep = not timed or ms["torch"] >= min_speedup * ms["fused"]
    if keep:
        fused_attention.fuse(model, names)
    return {"kernel": "fused" if keep else "torch", "modules": names, **({"ms": ms} if ms else {})}
