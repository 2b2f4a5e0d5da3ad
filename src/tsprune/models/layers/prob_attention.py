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

For ONNX export the sampling can be frozen: :func:`freeze_sampling` runs one pass under tsprune's seeded inference
(``runtime.evaluating``, as evaluation and prediction run) and stores the very indices each ``ProbAttention``
drew there (``frozen_sample``, a non-persistent buffer: not in the state dict, moved by ``.to``). A frozen module
uses them instead of drawing, so its output equals the seeded evaluation of the unfrozen model exactly, and the
exported graph holds them as constants (else it would get an ONNX random op and differ on every run). The indices
depend only on the query and key lengths, not on the batch, so one capture serves every batch size;
:func:`unfreeze_sampling` restores the random draw.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tsprune.config import PROB_LAYOUTS
from tsprune.errors import TsPruneError
from tsprune.runtime import INFERENCE_SEED, evaluating


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

    ``frozen_sample [L, U]`` (long, for ``frozen_len_k`` keys; None = draw at random on every call) replaces the
    random sample when set (module doc; :func:`freeze_sampling`).
    """

    frozen_sample: torch.Tensor | None

    def __init__(self, causal: bool = False, factor: int = 5, scale: float | None = None,
                 layout: str = PROB_LAYOUTS[0]) -> None:
        super().__init__()
        if layout not in PROB_LAYOUTS:
            raise ValueError(f"layout must be one of {PROB_LAYOUTS}, got {layout!r}")
        self.causal = causal
        self.factor = factor
        self.scale = scale
        self.layout = layout
        # Not persistent: checkpoints stay as they were, and a frozen copy is a property of one export, not of the
        # weights. A buffer, so .to(device) carries it.
        self.register_buffer("frozen_sample", None, persistent=False)
        self.frozen_len_k: int | None = None
        self._drawn: list[tuple[torch.Tensor, int]] | None = None  # set by freeze_sampling while it captures

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
        sample = self._sample(len_q, len_k, n_sample, q.device)
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

    def _sample(self, len_q: int, len_k: int, n_sample: int, device: torch.device) -> torch.Tensor:
        """The sampled key indices ``[len_q, n_sample]``: the frozen ones if set (checked against the lengths),
        else a fresh draw (recorded while :func:`freeze_sampling` captures)."""
        frozen = self.frozen_sample
        if frozen is not None:
            if tuple(frozen.shape) != (len_q, n_sample) or self.frozen_len_k != len_k:
                raise TsPruneError(
                    f"this ProbAttention's key sample was frozen for {frozen.shape[0]} queries and {self.frozen_len_k} "
                    f"keys but is called with {len_q} queries and {len_k} keys: freeze_sampling again with inputs of "
                    "the lengths the model will see, or unfreeze_sampling")
            return frozen
        sample = torch.randint(len_k, (len_q, n_sample), device=device)
        if self._drawn is not None:
            self._drawn.append((sample, len_k))
        return sample


def freeze_sampling(model: nn.Module, example_inputs: tuple[torch.Tensor, ...] | list[torch.Tensor],
                    device: torch.device | str, seed: int = INFERENCE_SEED) -> int:
    """Fix the key samples of every ``ProbAttention`` in ``model`` to those a seeded evaluation draws.

    Runs ``model(*example_inputs)`` once in eval mode under ``runtime.evaluating(model, device, seed)`` (the seeded
    RNG tsprune's evaluation uses; the caller's random state and the model's training flag are left as they were)
    and stores each module's draw as its ``frozen_sample``. Any batch size gives the same indices, and the frozen
    model then serves any batch size at the example's lengths (others are refused with a ``TsPruneError``).
    Returns the number of modules frozen (0 for a model without ProbSparse attention, which is left untouched).
    """
    modules = {name: m for name, m in model.named_modules() if isinstance(m, ProbAttention)}
    if not modules:
        return 0
    unfreeze_sampling(model)  # capture the random draw, not a previous freeze
    for module in modules.values():
        module._drawn = []
    try:
        with evaluating(model, torch.device(device), seed):
            model(*example_inputs)
        drawn = {name: module._drawn or [] for name, module in modules.items()}
    finally:
        for module in modules.values():
            module._drawn = None
    for name, module in modules.items():
        if len(drawn[name]) != 1:
            raise TsPruneError(f"ProbAttention {name!r} ran {len(drawn[name])} times in one forward pass; its sampling "
                               "can only be frozen when it runs exactly once")
        sample, len_k = drawn[name][0]
        # Cloned outside inference mode: an inference tensor cannot be saved for backward or traced as a constant.
        module.frozen_sample = sample.clone()
        module.frozen_len_k = len_k
    return len(modules)


def unfreeze_sampling(model: nn.Module) -> int:
    """Drop the frozen key samples of every ``ProbAttention`` in ``model`` (random draws again); returns how many
    modules were frozen."""
    count = 0
    for module in model.modules():
        if isinstance(module, ProbAttention):
            count += module.frozen_sample is not None
            module.frozen_sample = None
            module.frozen_len_k = None
    return count
