"""Crossformer (Zhang & Yan, ICLR 2023): cross-dimension dependency for multivariate forecasting.

The series is cut per channel into segments (Dimension-Segment-Wise embedding), giving a 2-D array of vectors
``[batch, channels D, segments, d_model]``. Two-Stage Attention mixes it along time (within each channel) and then
across channels through a few learnable routers; a hierarchical encoder merges adjacent segments scale by scale, and
each decoder layer predicts the future segments from one encoder scale; the forecast is the sum of those predictions.

Every stage folds the axis it does not attend over into the batch, so nothing loops over channels or segments.
Calendar features and ``x_dec`` are not used.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tsprune.config import ModelConfig
from tsprune.errors import TsPruneError
from tsprune.models.base import Forecaster
from tsprune.models.layers.attention import AttentionLayer, FullAttention


def _mlp(d_in: int, d_hidden: int) -> nn.Sequential:
    """Position-wise two-layer MLP with GELU, ``[..., d_in] -> [..., d_in]``."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_in))


def _attention(d_model: int, n_heads: int, dropout: float) -> AttentionLayer:
    # The reference applies dropout to the attention weights with the model's dropout rate.
    return AttentionLayer(FullAttention(causal=False, dropout=dropout), d_model, n_heads)


class TwoStageAttention(nn.Module):
    """TSA layer, ``[B, D, L, d_model] -> [B, D, L, d_model]`` (D channels, L segments).

    Cross-time stage: self-attention over the L segments of each channel (channels folded into the batch).
    Cross-dimension stage: per segment, ``n_routers`` learnable routers gather from all D channels (sender) and the
    channels read the routers back (receiver): O(D * n_routers) instead of O(D^2) (segments folded into the batch).
    """

    def __init__(self, seg_num: int, n_routers: int, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.time_attention = _attention(d_model, n_heads, dropout)
        self.dim_sender = _attention(d_model, n_heads, dropout)
        self.dim_receiver = _attention(d_model, n_heads, dropout)
        self.routers = nn.Parameter(torch.randn(seg_num, n_routers, d_model))  # [L, n_routers, d_model]
        self.dropout = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.norm4 = nn.LayerNorm(d_model)
        self.mlp1 = _mlp(d_model, d_ff)
        self.mlp2 = _mlp(d_model, d_ff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, dims, segs, d_model = x.shape
        # Cross-time stage on [B*D, L, d_model].
        t = x.reshape(batch * dims, segs, d_model)
        t = self.norm1(t + self.dropout(self.time_attention(t, t, t)))
        t = self.norm2(t + self.dropout(self.mlp1(t)))
        # Cross-dimension stage on [B*L, D, d_model]; segment l of every sample uses router set l.
        s = t.reshape(batch, dims, segs, d_model).transpose(1, 2).reshape(batch * segs, dims, d_model)
        # Row b*L + l holds router set l. ``repeat`` rather than ``expand``: dependency tracers (Torch-Pruning) read
        # an expand as a grouped-query-attention head repeat. Without gradients (inference, and no tracer) the
        # routers' query projection is computed once and repeated: the same rows, B times less work.
        if torch.is_grad_enabled():
            routers = self.routers.repeat(batch, 1, 1)  # [B*L, n_routers, d_model]
            buffer = self.dim_sender(routers, s, s)  # [B*L, n_routers, d_model]
        else:
            buffer = self.dim_sender(self.routers, s, s, repeat_queries=batch)
        received = self.dim_receiver(s, buffer, buffer)  # [B*L, D, d_model]
        s = self.norm3(s + self.dropout(received))
        s = self.norm4(s + self.dropout(self.mlp2(s)))
        return s.reshape(batch, segs, dims, d_model).transpose(1, 2)


class SegmentMerging(nn.Module):
    """Merge ``win_size`` adjacent segments: ``[B, D, L, d_model] -> [B, D, ceil(L / win_size), d_model]``.

    When L is not a multiple of ``win_size`` the last ``pad`` segments are repeated at the end (as the reference).
    """

    def __init__(self, d_model: int, win_size: int) -> None:
        super().__init__()
        self.win_size = win_size
        self.norm = nn.LayerNorm(win_size * d_model)
        self.proj = nn.Linear(win_size * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        segs = x.shape[2]
        pad = -segs % self.win_size
        if pad:
            # Gather along the segment axis rather than torch.cat on it: the reference's padding
            # (segments L-pad..L-1 appended in order) without a concat that tracers read as a channel concat.
            # (clamped for the degenerate case of fewer segments than the padding, where the reference fails).
            index = torch.arange(segs + pad, device=x.device)
            x = x.index_select(2, torch.where(index < segs, index, (index - pad).clamp(min=0)))
        # Merged segment j = [seg j*w, seg j*w+1, ..., seg j*w+w-1] along the features: a channel concat of w
        # strided views, so each d_model feature keeps one slot per window position.
        x = torch.cat([x[:, :, i :: self.win_size] for i in range(self.win_size)], dim=-1)
        return self.proj(self.norm(x))


class ScaleBlock(nn.Module):
    """One encoder scale: optional segment merging, then one TSA layer (the paper's block depth 1)."""

    def __init__(self, merge: bool, seg_num: int, config: ModelConfig) -> None:
        super().__init__()
        self.merge = SegmentMerging(config.d_model, config.win_size) if merge else None
        self.tsa = TwoStageAttention(
            seg_num, config.n_routers, config.d_model, config.n_heads, config.d_ff, config.dropout
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merge is not None:
            x = self.merge(x)
        return self.tsa(x)


class DecoderLayer(nn.Module):
    """TSA over the decoder segments, cross-attention to one encoder scale, and a per-segment prediction.

    ``x [B, D, L_out, d_model]``, ``cross [B, D, L_in, d_model]`` ->
    ``(x [B, D, L_out, d_model], prediction [B, D, L_out, seg_len])``.
    """

    def __init__(self, out_seg_num: int, config: ModelConfig) -> None:
        super().__init__()
        d_model = config.d_model
        self.self_attention = TwoStageAttention(
            out_seg_num, config.n_routers, d_model, config.n_heads, config.d_ff, config.dropout
        )
        self.cross_attention = _attention(d_model, config.n_heads, config.dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = _mlp(d_model, d_model)  # the reference's decoder MLP is d_model wide, not d_ff
        self.predict = nn.Linear(d_model, config.seg_len)

    def forward(self, x: torch.Tensor, cross: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.self_attention(x)
        batch, dims, segs, d_model = x.shape
        q = x.reshape(batch * dims, segs, d_model)
        # Each channel attends to its own encoder segments (the encoder width may differ after structured pruning).
        kv = cross.reshape(batch * dims, cross.shape[2], cross.shape[3])
        q = self.norm1(q + self.dropout(self.cross_attention(q, kv, kv)))
        q = self.norm2(q + self.mlp(q))
        out = q.reshape(batch, dims, segs, d_model)
        return out, self.predict(out)


class Crossformer(Forecaster):
    """Crossformer forecaster: ``x_enc [B, seq_len, enc_in] -> [B, pred_len, c_out]``.

    It forecasts all ``enc_in`` channels; with ``c_out < enc_in`` (feature mode MS) it returns the last ``c_out``
    (the target is the last channel).
    """

    # One prediction head per decoder layer (e_layers + 1 of them); this is the default e_layers=3, and each
    # instance sets its own.
    output_layers: tuple[str, ...] = tuple(f"decoder.{i}.predict" for i in range(4))
    # The segment embedding; the learned position tables are plain parameters, not layers.
    embedding_layers: tuple[str, ...] = ("value_embedding",)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        if config.win_size < 1 or config.n_routers < 1:
            raise TsPruneError(f"win_size and n_routers must be at least 1, got {config.win_size}, {config.n_routers}")
        if config.c_out > config.enc_in:
            raise TsPruneError(f"Crossformer forecasts its inputs: c_out ({config.c_out}) > enc_in ({config.enc_in})")
        seg_len, d_model, dims = config.seg_len, config.d_model, config.enc_in
        in_seg_num = math.ceil(config.seq_len / seg_len)
        out_seg_num = math.ceil(config.pred_len / seg_len)
        self.front_pad = in_seg_num * seg_len - config.seq_len

        # Dimension-Segment-Wise embedding.
        self.value_embedding = nn.Linear(seg_len, d_model)
        self.enc_position = nn.Parameter(torch.randn(1, dims, in_seg_num, d_model))
        self.pre_norm = nn.LayerNorm(d_model)

        # Hierarchical encoder: scale i works on ceil(in_seg_num / win_size**i) segments.
        merge = config.win_size > 1
        self.encoder = nn.ModuleList(
            ScaleBlock(merge and i > 0, math.ceil(in_seg_num / config.win_size**i), config)
            for i in range(config.e_layers)
        )

        # Decoder: one layer per encoder scale, the embedded input included.
        self.dec_position = nn.Parameter(torch.randn(1, dims, out_seg_num, d_model))
        self.decoder = nn.ModuleList(DecoderLayer(out_seg_num, config) for _ in range(config.e_layers + 1))
        # Depends on e_layers, so it is set per instance.
        self.output_layers = tuple(f"decoder.{i}.predict" for i in range(config.e_layers + 1))
        # Positions and routers carry d_model channels on their last dimension.
        self.unwrapped_parameters = {name: -1 for name, _ in self.named_parameters()
                                     if name.endswith("routers") or name in ("enc_position", "dec_position")}

    def forward(
        self,
        x_enc: torch.Tensor,
        x_mark_enc: torch.Tensor | None = None,
        x_dec: torch.Tensor | None = None,
        x_mark_dec: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, _, dims = x_enc.shape
        seg_len = self.config.seg_len
        x = x_enc.transpose(1, 2)  # [B, D, seq_len]
        if self.front_pad:
            x = F.pad(x, (self.front_pad, 0), mode="replicate")  # repeat the first value in front
        x = x.reshape(batch, dims, -1, seg_len)  # [B, D, in_seg_num, seg_len]
        x = self.pre_norm(self.value_embedding(x) + self.enc_position)

        scales = [x]  # the embedded input is scale 0 for the decoder
        for block in self.encoder:
            x = block(x)
            scales.append(x)

        y = self.dec_position.repeat(batch, 1, 1, 1)  # not expand: see TwoStageAttention
        forecast: torch.Tensor | None = None
        for layer, cross in zip(self.decoder, scales):
            y, prediction = layer(y, cross)
            forecast = prediction if forecast is None else forecast + prediction
        assert forecast is not None
        # [B, D, out_seg_num, seg_len] -> [B, out_seg_num * seg_len, D], cut to pred_len.
        out = forecast.reshape(batch, dims, -1).transpose(1, 2)[:, : self.config.pred_len]
        c_out = self.config.c_out
        return out if c_out == dims else out[..., dims - c_out :]
