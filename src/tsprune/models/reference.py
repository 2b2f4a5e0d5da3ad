"""Straightforward "reference layout" versions of our optimised layers, as the common research code bases write them.

They compute the same function as the layers in ``layers/`` and exist for two reasons: equivalence tests pin our
vectorised versions against them, and ``benchmarks/train_speed.py --layouts ours,reference`` measures what the
optimisations buy. ``reference_layout(model)`` returns a copy of a model with every optimised piece swapped for its
reference version (same weights):

* attention: explicit ``softmax(QK^T / sqrt(E))`` with dropout on the weights instead of the fused SDPA kernel;
* Auto-Correlation: one ``torch.roll`` (training) or ``gather`` (inference) per top-k delay, in the reference's
  ``[B, H, E, L]`` layout, instead of one FFT-domain aggregation;
* ProbSparse attention: the sampled keys gathered into a ``[B, H, L_Q, U, E]`` tensor (the official code's
  layout, whose backward is a slow scatter-add) instead of sampled entries of one ``Q K^T`` GEMM;
* Fourier blocks: a Python loop over the kept modes instead of one einsum;
* moving average: ``torch.cat`` end padding + ``AvgPool1d`` instead of ``F.pad(replicate)``;
* feed-forward: two kernel-size-1 ``Conv1d`` with transposes instead of two ``Linear``.

Nothing here is used by training or pruning.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from tsprune.models.layers.attention import AttentionLayer, FullAttention
from tsprune.models.layers.autocorrelation import AutoCorrelation
from tsprune.models.layers.decomposition import MovingAverage
from tsprune.models.layers.feedforward import FeedForward
from tsprune.models.layers.fourier import FourierBlock, FourierCrossAttention
from tsprune.models.layers.prob_attention import ProbAttention


class ReferenceAttention(nn.Module):
    """``q [B, L, H, E], k [B, S, H, E], v [B, S, H, D] -> [B, L, H, D]`` written out with einsum and softmax."""

    def __init__(self, causal: bool, dropout: float, scale: float | None) -> None:
        super().__init__()
        self.causal, self.scale = causal, scale
        self.dropout = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scale = self.scale if self.scale is not None else 1.0 / math.sqrt(q.shape[-1])
        scores = torch.einsum("blhe,bshe->bhls", q, k) * scale
        if self.causal:
            mask = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=q.device).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1))
        return torch.einsum("bhls,bshd->blhd", weights, v)


class ReferenceProbAttention(ProbAttention):
    """ProbSparse attention that always scores through the gathered sampled keys, as the official code does."""

    @staticmethod
    def _full_scores(len_k: int, n_sample: int, dim_e: int) -> bool:
        return False


class ReferenceAutoCorrelation(nn.Module):
    """The reference's Auto-Correlation: ``[B, H, E, L]`` layout, one roll/gather per delay."""

    def __init__(self, factor: int, channels: int | None = None) -> None:
        super().__init__()
        self.factor, self.channels = factor, channels

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        length, source = q.shape[1], k.shape[1]
        if length > source:
            zeros = torch.zeros_like(q[:, : length - source])
            k, v = torch.cat([k, zeros], dim=1), torch.cat([v, zeros], dim=1)
        else:
            k, v = k[:, :length], v[:, :length]
        q_ft = torch.fft.rfft(q.permute(0, 2, 3, 1).contiguous(), dim=-1)
        k_ft = torch.fft.rfft(k.permute(0, 2, 3, 1).contiguous(), dim=-1)
        corr = torch.fft.irfft(q_ft * torch.conj(k_ft), n=length, dim=-1)  # [B, H, E, L]
        values = v.permute(0, 2, 3, 1).contiguous()
        if self.channels is None:
            mean_value = corr.mean(dim=1).mean(dim=1)  # [B, L]
        else:
            mean_value = corr.sum(dim=(1, 2)) / self.channels
        top_k = max(1, min(length, int(self.factor * math.log(length))))
        aggregated = torch.zeros_like(values)
        if self.training:
            index = torch.topk(mean_value.mean(dim=0), top_k, dim=-1)[1]
            weights = torch.softmax(torch.stack([mean_value[:, index[i]] for i in range(top_k)], dim=-1), dim=-1)
            for i in range(top_k):
                aggregated = aggregated + torch.roll(values, -int(index[i]), -1) * weights[:, i].view(-1, 1, 1, 1)
        else:
            batch, heads, channels, _ = values.shape
            init = torch.arange(length, device=values.device).view(1, 1, 1, -1).expand(batch, heads, channels, -1)
            top, delay = torch.topk(mean_value, top_k, dim=-1)
            weights = torch.softmax(top, dim=-1)
            doubled = values.repeat(1, 1, 1, 2)
            for i in range(top_k):
                index = init + delay[:, i].view(-1, 1, 1, 1)
                aggregated = aggregated + torch.gather(doubled, -1, index) * weights[:, i].view(-1, 1, 1, 1)
        return aggregated.permute(0, 3, 1, 2)


class ReferenceFourierBlock(nn.Module):
    """FourierBlock with the reference's loop over kept modes (same weight and mode buffer as ``block``)."""

    index: torch.Tensor

    def __init__(self, block: FourierBlock) -> None:
        super().__init__()
        self.weight = block.weight
        self.register_buffer("index", block.index)

    def forward(self, q: torch.Tensor, k: torch.Tensor | None = None, v: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, heads, _ = q.shape
        x_ft = torch.fft.rfft(q.float().permute(0, 2, 3, 1), dim=-1)
        out_ft = torch.zeros(batch, heads, self.weight.shape[2], length // 2 + 1, dtype=x_ft.dtype, device=q.device)
        for slot, mode in enumerate(self.index.tolist()):
            out_ft[:, :, :, slot] = torch.einsum("bhi,hio->bho", x_ft[:, :, :, mode], self.weight[:, :, :, slot])
        return torch.fft.irfft(out_ft, n=length).permute(0, 3, 1, 2).to(q.dtype)


class ReferenceFourierCrossAttention(nn.Module):
    """FourierCrossAttention with the reference's per-mode copy loops (``k`` doubles as values, tanh activation)."""

    index_q: torch.Tensor
    index_kv: torch.Tensor

    def __init__(self, block: FourierCrossAttention) -> None:
        super().__init__()
        if block.activation != "tanh":
            raise ValueError("the reference layout covers the tanh activation only")
        self.weight, self.norm = block.weight, block.norm
        self.register_buffer("index_q", block.index_q)
        self.register_buffer("index_kv", block.index_kv)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, heads, dim = q.shape
        xq_ft = torch.fft.rfft(q.float().permute(0, 2, 3, 1), dim=-1)
        xk_ft = torch.fft.rfft(k.float().permute(0, 2, 3, 1), dim=-1)
        index_q, index_kv = self.index_q.tolist(), self.index_kv.tolist()
        xq = torch.zeros(batch, heads, dim, len(index_q), dtype=xq_ft.dtype, device=q.device)
        for i, j in enumerate(index_q):
            xq[..., i] = xq_ft[..., j]
        xk = torch.zeros(batch, heads, xk_ft.shape[2], len(index_kv), dtype=xk_ft.dtype, device=q.device)
        for i, j in enumerate(index_kv):
            xk[..., i] = xk_ft[..., j]
        qk = torch.einsum("bhex,bhey->bhxy", xq, xk).tanh()
        qkv = torch.einsum("bhxy,bhey->bhex", qk, xk)
        mixed = torch.einsum("bhex,heox->bhox", qkv, self.weight)
        out_ft = torch.zeros(batch, heads, mixed.shape[2], length // 2 + 1, dtype=xq_ft.dtype, device=q.device)
        for i, j in enumerate(index_q):
            out_ft[..., j] = mixed[..., i]
        return torch.fft.irfft(out_ft / self.norm, n=length).permute(0, 3, 1, 2).to(q.dtype)


class ReferenceMovingAverage(nn.Module):
    """Moving average with the ends repeated by ``torch.cat`` and an ``AvgPool1d``: ``[B, L, C] -> [B, L, C]``."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.back = (kernel_size - 1) // 2
        self.front = kernel_size - 1 - self.back
        self.pool = nn.AvgPool1d(kernel_size, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        front = x[:, :1].repeat(1, self.front, 1)
        end = x[:, -1:].repeat(1, self.back, 1)
        padded = torch.cat([front, x, end], dim=1)
        return self.pool(padded.permute(0, 2, 1)).permute(0, 2, 1)


class ReferenceFeedForward(nn.Module):
    """Two kernel-size-1 convolutions over ``[B, C, L]`` (the reference's FFN), weights copied from ``ff``."""

    def __init__(self, ff: FeedForward) -> None:
        super().__init__()
        self.conv1 = _conv_from_linear(ff.linear1)
        self.conv2 = _conv_from_linear(ff.linear2)
        self.dropout, self.activation = ff.dropout, ff.activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.activation(self.conv1(x.transpose(-1, 1))))
        return self.dropout(self.conv2(y).transpose(-1, 1))


def _conv_from_linear(linear: nn.Linear) -> nn.Conv1d:
    conv = nn.Conv1d(linear.in_features, linear.out_features, 1, bias=linear.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.unsqueeze(-1))
        if linear.bias is not None and conv.bias is not None:  # conv has a bias exactly when linear does
            conv.bias.copy_(linear.bias)
    return conv.to(linear.weight.device)


def _reference_inner(inner: nn.Module) -> nn.Module | None:
    if isinstance(inner, FullAttention):
        return ReferenceAttention(inner.causal, inner.dropout, inner.scale)
    if isinstance(inner, AutoCorrelation):
        return ReferenceAutoCorrelation(inner.factor, inner.channels)
    if isinstance(inner, FourierBlock):
        return ReferenceFourierBlock(inner)
    if isinstance(inner, FourierCrossAttention):
        return ReferenceFourierCrossAttention(inner)
    if isinstance(inner, ProbAttention):
        return ReferenceProbAttention(inner.causal, inner.factor, inner.scale, inner.layout)
    return None


def reference_layout(model: nn.Module) -> nn.Module:
    """A copy of ``model`` computing the same function with the reference layouts of its layers."""
    model = copy.deepcopy(model)
    swapped: dict[int, nn.Module] = {}  # a block shared by several layers (FEDformer) stays shared
    for module in list(model.modules()):
        if isinstance(module, AttentionLayer):
            if id(module.inner) not in swapped:
                replacement = _reference_inner(module.inner)
                swapped[id(module.inner)] = replacement if replacement is not None else module.inner
            module.inner = swapped[id(module.inner)]
        for name, child in list(module.named_children()):
            if isinstance(child, MovingAverage):
                setattr(module, name, ReferenceMovingAverage(child.kernel_size))
            elif isinstance(child, FeedForward):
                setattr(module, name, ReferenceFeedForward(child))
    return model
