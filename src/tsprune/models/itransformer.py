"""iTransformer (Liu et al., ICLR 2024, "iTransformer: Inverted Transformers Are Effective for Time Series
Forecasting"): the whole look-back of each variate is one token (embedded by one Linear over time), so attention
mixes variates and the feed-forward acts on each variate's series representation; one Linear maps each token to its
horizon. Calendar features enter as extra tokens, one per feature, as in the reference.

Configuration: the authors' ETTh1 script at look-back 96 (``scripts/multivariate_forecasting/ETT/
iTransformer_ETTh1.sh`` of thuml/iTransformer, pred_len 96: e_layers 2, d_model 256, d_ff 256, with the defaults
n_heads 8, dropout 0.1, gelu, series normalisation on) and its training settings, the study's (Adam, lr 1e-4 halved
each epoch, batch 32, 10 epochs, patience 3). ``x_dec`` is not used.
"""

from __future__ import annotations

import torch
from torch import nn

from tsprune.config import ModelConfig
from tsprune.models.base import Forecaster
from tsprune.models.layers.normalization import denormalize, normalize
from tsprune.models.layers.transformer_blocks import full_attention_encoder


class iTransformer(Forecaster):  # noqa: N801 - the model's published name
    """``forward(x_enc [B, seq_len, C], x_mark_enc [B, seq_len, F], ...) -> [B, pred_len, c_out]`` (the last
    ``c_out`` of the C channels). The encoder sees ``[B, C + F, d_model]``: one token per variate and per calendar
    feature."""

    output_layers: tuple[str, ...] = ("projection",)
    embedding_layers: tuple[str, ...] = ("embedding",)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        c = config
        self.embedding = nn.Linear(c.seq_len, c.d_model)
        self.dropout = nn.Dropout(c.dropout)
        self.encoder = full_attention_encoder(c, norm=nn.LayerNorm(c.d_model))
        self.projection = nn.Linear(c.d_model, c.pred_len)

    def forward(
        self,
        x_enc: torch.Tensor,
        x_mark_enc: torch.Tensor | None,
        x_dec: torch.Tensor | None,
        x_mark_dec: torch.Tensor | None,
    ) -> torch.Tensor:
        channels = x_enc.shape[2]
        x, mean, std = normalize(x_enc)
        tokens = x.transpose(1, 2)  # [B, C, L]: a variate's look-back is its token
        if x_mark_enc is not None and x_mark_enc.shape[2] > 0:
            tokens = torch.cat([tokens, x_mark_enc.transpose(1, 2)], dim=1)  # [B, C + F, L]
        encoded = self.encoder(self.dropout(self.embedding(tokens)))  # [B, C + F, d_model]
        out = self.projection(encoded)[:, :channels].transpose(1, 2)  # [B, pred_len, C]: calendar tokens dropped
        out = denormalize(out, mean, std)
        return out[:, :, channels - self.config.c_out:]
