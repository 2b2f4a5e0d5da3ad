"""Informer's ProbSparse self-attention (Zhou et al., AAAI 2021), an inner mechanism for ``AttentionLayer``.

Only the ``u = factor * ceil(ln L_Q)`` "active" queries get full attention. Activity is the sparsity measurement
``M(q) = max_j(q k_j^T) - sum_j(q k_j^T) / L_K`` estimated on ``U = factor * ceil(ln L_K)`` randomly sampled keys
per query (one sample shared by the batch and heads, drawn again on every call, as in the official code). The lazy
queries output the mean of V (or, causal, the running sum of V up to their position, as the official code does).
Everything is batched over batch and heads with gather/scatter, out of place.
"""

from __future__ import annotations

import math

import torch
from torch import nn


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

    def __init__(self, causal: bool = False, factor: int = 5, scale: float | None = None) -> None:
        super().__init__()
        self.causal = causal
        self.factor = factor
        self.scale = scale

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, L, E], [B, H, S, E], [B, H, S, D]
        len_q, len_k, dim_e, dim_d = q.shape[2], k.shape[2], q.shape[3], v.shape[3]
        if self.causal and len_q != len_k:
            raise ValueError(f"causal ProbAttention needs as many queries as keys, got {len_q} and {len_k}")
        n_sample = _log_count(self.factor, len_k)
        n_top = _log_count(self.factor, len_q)

        # Sparsity measurement on sampled keys: sample[i] holds the key indices drawn for query i.
        sample = torch.randint(len_k, (len_q, n_sample), device=q.device)
        k_sample = k[:, :, sample]  # [B, H, L, U, E]
        qk_sample = torch.einsum("bhle,bhlue->bhlu", q, k_sample)
        sparsity = qk_sample.amax(dim=-1) - qk_sample.sum(dim=-1) / len_k  # [B, H, L]
        top = sparsity.topk(n_top, dim=-1, sorted=False).indices  # [B, H, u]

        # Full attention for the selected queries only.
        q_top = q.gather(2, top.unsqueeze(-1).expand(-1, -1, -1, dim_e))  # [B, H, u, E]
        scale = self.scale if self.scale is not None else 1.0 / math.sqrt(dim_e)
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
        return context.transpose(1, 2)  # [B, L, H, D]
