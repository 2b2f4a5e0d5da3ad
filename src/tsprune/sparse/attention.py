"""Attention over a few keys in one C++ op: the sparse engine's answer to Crossformer's non-GEMM time.

:class:`FullAttention` over at most ``SHORT_KEYS`` keys (Crossformer's segments, routers and channels) runs in CPU
inference as two batched GEMMs and a softmax on ``[B, H, L, E]`` views, and the GEMMs first copy q, k, v (and then
the output) into head-major order. ``torch.ops.tsprune.short_attention`` (``csrc/short_attention.cpp``, appendix
there) reads ``q [B, L, H, E]``, ``k``/``v [B, S, H, E]`` where the projections left them and writes the output once,
``[B, L, H, E]`` contiguous. :class:`FusedAttention` is a ``FullAttention`` that takes this op where it applies and
the parent's path everywhere else (training, dropout, CUDA, other dtypes, more keys); the engine swaps it in where it
measures faster (:func:`tsprune.sparse.engine.compile_sparse`). It has no parameters: state dicts are unchanged.

The op lives in the sparse kernel's library (built on first use, :mod:`tsprune.sparse.kernel`); its fake, registered
here, lets ``torch.compile`` and ``torch.export`` (the pt2 package) trace it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from tsprune.models.layers.attention import SHORT_KEYS, FullAttention
from tsprune.sparse import kernel

__all__ = ["FusedAttention", "fusable", "fuse", "fused", "short_attention", "unfuse"]

OP = "tsprune::short_attention"
MAX_KEYS = 32  # the C++ op's limit (kMaxKeys: at most 4 vectors of scores); torch's path takes longer key lists
_state = {"fake": False}


def _short_attention_fake(q: Tensor, k: Tensor, v: Tensor, scale: float, causal: bool = False,
                          simd: bool = True) -> Tensor:
    """What the op returns from metadata alone: a new contiguous ``[B, L, H, Ev]`` float32 tensor; the C++ checks
    that need no data are repeated, so a bad call fails when it is traced."""
    def check(ok: bool | torch.SymBool, what: str) -> None:
        torch._check(ok, lambda: f"tsprune short attention: {what}")

    check(q.dim() == 4 and k.dim() == 4 and v.dim() == 4, "q, k, v must be 4-D [batch, length, heads, features]")
    check(q.dtype == k.dtype == v.dtype == torch.float32, "q, k, v must be float32")
    check(k.shape[0] == q.shape[0] and v.shape[0] == q.shape[0] and k.shape[2] == q.shape[2]
          and v.shape[2] == q.shape[2] and k.shape[3] == q.shape[3] and v.shape[1] == k.shape[1],
          "q [B, L, H, E], k [B, S, H, E] and v [B, S, H, Ev] do not match")
    check(k.shape[1] >= 1, "at least one key")
    check(k.shape[1] <= MAX_KEYS, f"at most {MAX_KEYS} keys")
    return q.new_empty(q.shape[0], q.shape[1], q.shape[2], v.shape[3])


def _register_fake() -> None:
    if not _state["fake"] and hasattr(torch.ops.tsprune, "short_attention"):
        torch.library.register_fake(OP, _short_attention_fake)
        _state["fake"] = True


def short_attention(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None, causal: bool = False, *,
                    simd: bool = True) -> Tensor:
    """``softmax(q kᵀ · scale) v`` per batch and head: ``q [B, L, H, E]``, ``k [B, S, H, E]``, ``v [B, S, H, Ev]``
    (float32 CPU, 1 <= S <= ``MAX_KEYS``) -> ``[B, L, H, Ev]``; ``scale`` defaults to ``E ** -0.5``, ``causal``
    masks keys after the query (top-left aligned, as SDPA). ``simd=False`` forces the portable loop (tests)."""
    if not kernel.available():
        raise kernel.KernelUnavailable(f"tsprune kernels unavailable ({kernel.reason()})")
    _register_fake()
    return torch.ops.tsprune.short_attention(q, k, v, q.shape[-1] ** -0.5 if scale is None else scale, causal, simd)


class FusedAttention(FullAttention):
    """A :class:`FullAttention` that runs short CPU inference through ``tsprune::short_attention``.

    ``q [B, L, H, E]``, ``k [B, S, H, E]``, ``v [B, S, H, Ev]`` -> ``[B, L, H, Ev]``, the same function as the parent.
    """

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        keys = k.shape[1]
        if (not self.training or self.dropout == 0.0) and not torch.is_grad_enabled() and keys <= SHORT_KEYS \
                and keys <= MAX_KEYS \
                and q.device.type == "cpu" and q.dtype == k.dtype == v.dtype == torch.float32:
            scale = self.scale if self.scale is not None else q.shape[-1] ** -0.5
            return torch.ops.tsprune.short_attention(q, k, v, scale, self.causal, True)
        return super().forward(q, k, v)

    @classmethod
    def of(cls, attention: FullAttention) -> FusedAttention:
        fused = cls(causal=attention.causal, dropout=attention.dropout, scale=attention.scale)
        fused.train(attention.training)
        return fused


def fusable(model: nn.Module) -> dict[str, FullAttention]:
    """``{name: module}`` of the plain :class:`FullAttention` modules of ``model`` (none already fused), each once."""
    return {name: module for name, module in model.named_modules() if type(module) is FullAttention}


def fused(model: nn.Module) -> dict[str, FusedAttention]:
    """``{name: module}`` of the :class:`FusedAttention` modules of ``model``."""
    return {name: module for name, module in model.named_modules() if isinstance(module, FusedAttention)}


def _swap(model: nn.Module, names: list[str], make: Callable[[Any], nn.Module]) -> None:
    for name in names:
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, attr, make(getattr(owner, attr)))


def fuse(model: nn.Module, names: list[str] | None = None) -> list[str]:
    """Swap ``names`` (default: every :func:`fusable` module) for :class:`FusedAttention`, in place; the names.
    Needs the kernel library (:func:`tsprune.sparse.kernel.available`); the caller checks."""
    names = list(fusable(model)) if names is None else names
    _register_fake()
    _swap(model, names, FusedAttention.of)
    return names


def unfuse(model: nn.Module) -> list[str]:
    """Swap every :class:`FusedAttention` back for a plain :class:`FullAttention`, in place; the names."""
    names = list(fused(model))

    def plain(fused: FusedAttention) -> FullAttention:
        attention = FullAttention(causal=fused.causal, dropout=fused.dropout, scale=fused.scale)
        attention.train(fused.training)
        return attention

    _swap(model, names, plain)
    return names


if hasattr(torch.ops.tsprune, "short_attention"):  # loaded before this module was imported: give it its fake
    _register_fake()
