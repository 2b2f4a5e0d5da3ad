"""Multi-head attention shared by the forecasters.

``AttentionLayer`` owns the query/key/value/output projections and reshapes to heads; the *inner* mechanism
(full attention here, ProbSparse, auto-correlation or a Fourier block elsewhere) maps
``q [B, L, H, E], k [B, S, H, E], v [B, S, H, D] -> [B, L, H, D]`` and is swappable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# At or below this many keys, CPU inference runs attention as two batched GEMMs and a softmax: the fused SDPA
# kernel's per-(batch x head) overhead then dominates (Crossformer attends over 7-10 segments or routers in
# thousands of tiny problems: 2-4x slower through SDPA at batch 32, 2 threads). Training keeps SDPA, faster there.
SHORT_KEYS = 32


class FullAttention(nn.Module):
    """Scaled dot-product attention over all positions (fused kernel, same math as softmax(QK^T/sqrt(E))V)."""

    def __init__(self, causal: bool = False, dropout: float = 0.0, scale: float | None = None) -> None:
        super().__init__()
        self.causal = causal
        self.dropout = dropout
        self.scale = scale

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # SDPA wants [B, H, L, E]; the transposes are views, SDPA handles the strides.
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        if dropout == 0.0 and k.shape[-2] <= SHORT_KEYS and q.device.type == "cpu" and not torch.is_grad_enabled():
            return self._short_attention(q, k, v).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=self.causal, scale=self.scale)
        return out.transpose(1, 2)

    def _short_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``softmax(QK^T * scale) V`` on ``[B, H, L, E]`` views, with SDPA's causal convention (top-left aligned)."""
        scale = self.scale if self.scale is not None else q.shape[-1] ** -0.5
        scores = (q @ k.transpose(-2, -1)) * scale
        if self.causal:
            future = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        return torch.softmax(scores, dim=-1) @ v


class AttentionLayer(nn.Module):
    """Projections around an inner attention mechanism: ``[B, L, d_model] x [B, S, d_model] -> [B, L, d_model]``."""

    def __init__(self, inner: nn.Module, d_model: int, n_heads: int, d_keys: int | None = None,
                 d_values: int | None = None) -> None:
        super().__init__()
        d_keys = d_keys or d_model // n_heads
        d_values = d_values or d_model // n_heads
        self.inner = inner
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_keys * n_heads)
        self.key = nn.Linear(d_model, d_keys * n_heads)
        self.value = nn.Linear(d_model, d_values * n_heads)
        self.out = nn.Linear(d_values * n_heads, d_model)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                repeat_queries: int = 1) -> torch.Tensor:
        """``repeat_queries``: the keys' batch is ``repeat_queries`` copies of the queries' batch (``queries``
        stands for ``queries.repeat(repeat_queries, 1, 1)``); the queries are projected once, then repeated."""
        batch, length, source, heads = keys.shape[0], queries.shape[1], keys.shape[1], self.n_heads
        q = self.project_queries(queries, repeat_queries).view(batch, length, heads, -1)
        k = self.key(keys).view(batch, source, heads, -1)
        v = self.value(values).view(batch, source, heads, -1)
        out = self.inner(q, k, v)
        return self.out(out.reshape(batch, length, -1))

    def project_queries(self, queries: torch.Tensor, repeat_queries: int = 1) -> torch.Tensor:
        """``query(queries)``, ``[B, L, d_model] -> [B * repeat_queries, L, H*E]``: projected once, then repeated."""
        q = self.query(queries)
        return q.repeat(repeat_queries, 1, 1) if repeat_queries > 1 else q
