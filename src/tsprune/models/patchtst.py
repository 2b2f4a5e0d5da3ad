"""PatchTST (Nie et al., ICLR 2023, "A Time Series is Worth 64 Words"): every channel on its own (channel
independence), its normalised look-back cut into overlapping patches that are the tokens of a Transformer encoder; a
flatten head maps all of a channel's patch vectors to its horizon.

Configuration: the Time-Series-Library's ETTh1 script at look-back 96 (``scripts/long_term_forecast/ETT_script/
PatchTST_ETTh1.sh``, pred_len 96: e_layers 1, n_heads 2, with the library's defaults d_model 512, d_ff 2048,
dropout 0.1, gelu; patch length 16, stride 8) and its training settings, the study's (Adam, lr 1e-4 halved each
epoch, batch 32, 10 epochs, patience 3). As there: series normalisation of each window (``layers.normalization``),
post-norm encoder layers with a final BatchNorm over ``d_model``, and a head reading the patch vectors
``d_model``-major. Calendar features and ``x_dec`` are not used.
"""

from __future__ import annotations

import torch
from torch import nn

from tsprune.config import ModelConfig
from tsprune.errors import TsPruneError
from tsprune.models.base import Forecaster
from tsprune.models.layers.embed import PatchEmbedding
from tsprune.models.layers.normalization import denormalize, normalize
from tsprune.models.layers.transformer_blocks import full_attention_encoder


class ChannelBatchNorm(nn.Module):
    """BatchNorm over the channels of ``[B, L, d_model]`` (BatchNorm1d wants ``[B, d_model, L]``)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class FlattenHead(nn.Module):
    """``[N, P, d_model] -> [N, pred_len]``: the P patch vectors flattened ``d_model``-major (feature ``c * P + p`` is
    channel ``c`` of patch ``p``), one Linear, dropout. Structured pruning removes a channel's P features together
    (``prune.structured``'s custom pruner for this module)."""

    def __init__(self, d_model: int, patches: int, pred_len: int, dropout: float) -> None:
        super().__init__()
        self.patches = patches
        self.linear = nn.Linear(d_model * patches, pred_len)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear(x.transpose(1, 2).flatten(1)))


class PatchTST(Forecaster):
    """``forward(x_enc [B, seq_len, C], ...) -> [B, pred_len, c_out]`` (the last ``c_out`` of the C channels).

    Inside, the C channels are folded into the batch: the encoder sees ``[B * C, P, d_model]``.
    """

    output_layers: tuple[str, ...] = ("head",)  # the custom pruner's unit (prune.structured), its Linear inside
    embedding_layers: tuple[str, ...] = ("patch_embedding.value",)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        c = config
        if c.patch_len > c.seq_len + c.patch_stride:
            raise TsPruneError(f"PatchTST: patch_len {c.patch_len} is longer than the look-back ({c.seq_len}) plus "
                               f"its end padding ({c.patch_stride}): use a shorter patch_len")
        self.patch_embedding = PatchEmbedding(c.d_model, c.patch_len, c.patch_stride, c.dropout)
        self.encoder = full_attention_encoder(c, norm=ChannelBatchNorm(c.d_model))
        patches = PatchEmbedding.patch_count(c.seq_len, c.patch_len, c.patch_stride)
        self.head = FlattenHead(c.d_model, patches, c.pred_len, c.dropout)

    def forward(
        self,
        x_enc: torch.Tensor,
        x_mark_enc: torch.Tensor | None,
        x_dec: torch.Tensor | None,
        x_mark_dec: torch.Tensor | None,
    ) -> torch.Tensor:
        batch, _, channels = x_enc.shape
        x, mean, std = normalize(x_enc)
        tokens = self.encoder(self.patch_embedding(x))  # [B * C, P, d_model]
        out = self.head(tokens).view(batch, channels, -1).transpose(1, 2)  # [B, pred_len, C]
        out = denormalize(out, mean, std)
        return out[:, :, channels - self.config.c_out:]
