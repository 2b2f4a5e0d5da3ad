"""Informer's ProbSparse self-attention (Zhou et al., AAAI 2021), an inner mechanism for ``AttentionLayer``.

Only the ``u = factor * ceil(ln L_Q)`` "active" queries get full attention. Activity is the sparsity measurement
``M(q) = max_j(q k_j^T) - sum_j(q k_j^T) / L_K`` estimated on ``U = factor * ceil(ln L_K)`` randomly sampled keys
per query (one sample shared by the batch and heads, drawn again on every call, as in the official code). The lazy
queries output the mean of V (or, causal, the running sum of V up to their position, as the official code does).
Everything is batched over batch and heads with gather/scatter, out of place.

The official code gathers the sampled keys into a ``[B, H, L_Q, U, E]`` tensor and multiplies; the backward of that
gather is a scatter-add which dominated Informer's training step (0.6 s of one 96-step attention call, fwd + bwd, at
batch 32 on 2 cores). Whenever the full score matrix ``[B, H, L_Q, L_K]`` is no larger than that gathered tensor
(``L_K <= U * E``: every look-back up to ~1300 steps at the default sizes), we compute ``Q K^T`` once with a GEMM and
*gather the same sampled entries* from it, and reuse its rows for the selected queries: the same dot products, the
same sample and selection, 4.7-23x faster for fwd + bwd (L = 720 ... 48). Longer inputs keep the sampled gather,
whose memory is smaller.

``layout="tslib"`` (the default) is the model the study ran and every published Informer baseline comes from: the
study's code (the FEDformer repository), the Autoformer repository (whose paper's table gives the 0.865 on ETTh1/96
we compare with) and the Time-Series-Library all have ProbAttention return its context as ``[B, H, L, D]``, and
their attention layer flattens it with ``view(B, L, -1)`` as if it were ``[B, L, H, D]``. Output row ``l`` then
holds ``H`` consecutive positions of one head (slot ``s = l * H + k`` of the row reads head ``s // L``, position
``s % L``), not position ``l`` of every head. Column ``k * D + d`` always carries value dim ``d``, whatever ``D``
is, which is what lets structured pruning remove the same value dims from every head (``prune/structured.py``).
The official Informer code flattened every layer this way until April 2021 (Informer2020 issue #100) and still
does in the decoder's self-attention (``mix=True``). ``"paper"`` is the paper's attention: position ``l`` of
every head in row ``l``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tsprune.config import PROB_LAYOUTS


def _log_count(factor: int, length: int) -> int:
    """``factor * ceil(ln length)`` clipped to ``[1, length]`` (the reference clips above; ln 1 = 0 needs the floor)."""
    if length <= 1:
        return 1
    return max(1, min(length, factor * math.ceil(math.log(length))))


class ProbAttention(nn.Module):
    """ProbSparse attention: ``q [B, L, H, E], k [B, S, H, E], v [B, S, H, D] -> [B, L, H, D]``.

    ``causal=True`` is the decoder's masked version (needs ``L == S``): a selected query at position ``i`` attends
    to keys ``<= i`` and an unselected one outputs ``sum_{j <= i} v_j``. The sparsity estimate itself uses unmasked
    sampled scores, as in the reference. Scale defaults to ``1/sqrt(E)``. The reference defines but never applies
    attention dropout, so there is none here.
    """

    def __init__(self, causal: bool = False, factor: int = 5, scale: float | None = None,
                 layout: str = PROB_LAYOUTS[0]) -> None:
        super().__init__()
        if layout not in PROB_LAYOUTS:
            raise ValueError(f"layout must be one of {PROB_LAYOUTS}, got {layout!r}")
        self.causal = causal
        self.factor = factor
        self.scale = scale
        self.layout = layout

    @staticmethod
    def _full_scores(len_k: int, n_sample: int, dim_e: int) -> bool:
        """Score through the full ``Q K^T`` when it is no larger than the gathered sampled keys (see module doc)."""
        return len_k <= n_sample * dim_e

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, L, E], [B, H, S, E], [B, H, S, D]
        len_q, len_k, dim_e, dim_d = q.shape[2], k.shape[2], q.shape[3], v.shape[3]
        if self.causal and len_q != len_k:
            raise ValueError(f"causal ProbAttention needs as many queries as keys, got {len_q} and {len_k}")
        n_sample = _log_count(self.factor, len_k)
        n_top = _log_count(self.factor, len_q)

        # Sparsity measurement on sampled keys: sample[i] holds the key indices drawn for query i.
        sample = torch.randint(len_k, (len_q, n_sample), device=q.device)
        full = self._full_scores(len_k, n_sample, dim_e)
        if full:
            qk = q @ k.transpose(-2, -1)  # [B, H, L, S]
            qk_sample = qk.gather(-1, sample.expand(*qk.shape[:2], -1, -1))  # [B, H, L, U]
        else:
            qk_sample = torch.einsum("bhle,bhlue->bhlu", q, k[:, :, sample])  # via [B, H, L, U, E]
        sparsity = qk_sample.amax(dim=-1) - qk_sample.sum(dim=-1) / len_k  # [B, H, L]
        top = sparsity.topk(n_top, dim=-1, sorted=False).indices  # [B, H, u]

        # Full attention for the selected queries only.
        scale = self.scale if self.scale is not None else 1.0 / math.sqrt(dim_e)
        if full:
            scores = qk.gather(2, top.unsqueeze(-1).expand(-1, -1, -1, len_k)) * scale  # [B, H, u, S]
        else:
            q_top = q.gather(2, top.unsqueeze(-1).expand(-1, -1, -1, dim_e))  # [B, H, u, E]
            scores = torch.einsum("bhue,bhse->bhus", q_top, k) * scale
        if self.causal:
            future = torch.arange(len_k, device=q.device) > top.unsqueeze(-1)  # [B, H, u, S]
            scores = scores.masked_fill(future, float("-inf"))
        selected = torch.softmax(scores, dim=-1) @ v  # [B, H, u, D]

        # Lazy queries: the mean of V (or its running sum when causal); selected rows are overwritten.
        if self.causal:
            context = v.cumsum(dim=2)
        else:
            context = v.mean(dim=2, keepdim=True).expand(-1, -1, len_q, -1)
        context = context.scatter(2, top.unsqueeze(-1).expand(-1, -1, -1, dim_d), selected.to(context.dtype))
        if self.layout == "tslib":  # [B, H, L, D] memory read as [B, L, H, D] (module doc)
            return context.reshape(context.shape[0], len_q, context.shape[1], dim_d)
        return context.transpose(1, 2)  # [B, L, H, D]
