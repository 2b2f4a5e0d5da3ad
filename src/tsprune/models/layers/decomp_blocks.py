"""The decomposition encoder/decoder shared by Autoformer and FEDformer, written once.

The two models differ only in the inner mechanism inside each ``AttentionLayer`` (Auto-Correlation vs. Fourier
blocks); the progressive decomposition architecture around it is the same. All tensors are ``[batch, length,
channels]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tsprune.config import ModelConfig
from tsprune.models.base import Forecaster
from tsprune.models.layers.feedforward import FeedForward
from tsprune.models.layers.decomposition import SeriesDecomposition
from tsprune.models.layers.embed import CircularConv1d, DataEmbedding


class SeasonalLayerNorm(nn.Module):
    """LayerNorm over channels, then minus its mean over time: the seasonal part should have no level.

    ``[B, L, d_model] -> [B, L, d_model]``.
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return x - x.mean(dim=1, keepdim=True)


class EncoderLayer(nn.Module):
    """Attention, decomposition, feed-forward (no biases), decomposition; only the seasonal part goes on.

    ``[B, L, d_model] -> [B, L, d_model]``.
    """

    def __init__(
        self,
        attention: nn.Module,
        d_model: int,
        d_ff: int,
        moving_avg: int,
        dropout: float = 0.1,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.attention = attention
        self.feed_forward = FeedForward(d_model, d_ff, dropout, activation, bias=False)
        self.decomp1 = SeriesDecomposition(moving_avg)
        self.decomp2 = SeriesDecomposition(moving_avg)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(x, x, x))
        x, _ = self.decomp1(x)
        y = self.feed_forward(x)
        seasonal, _ = self.decomp2(x + y)
        return seasonal


class Encoder(nn.Module):
    """Stack of ``EncoderLayer`` then ``SeasonalLayerNorm``: ``[B, L, d_model] -> [B, L, d_model]``."""

    def __init__(self, layers: Sequence[nn.Module], norm: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x) if self.norm is not None else x


class DecoderLayer(nn.Module):
    """Self attention, decomposition, cross attention, decomposition, feed-forward, decomposition.

    ``x [B, L, d_model]``, ``cross [B, S, d_model]`` -> ``(seasonal [B, L, d_model], trend [B, L, c_out])``: the
    three extracted trends are summed and mapped to ``c_out`` by a circular width-3 convolution without bias.
    """

    def __init__(
        self,
        self_attention: nn.Module,
        cross_attention: nn.Module,
        d_model: int,
        c_out: int,
        d_ff: int,
        moving_avg: int,
        dropout: float = 0.1,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.self_attention = self_attention
        self.cross_attention = cross_attention
        self.feed_forward = FeedForward(d_model, d_ff, dropout, activation, bias=False)
        self.decomp1 = SeriesDecomposition(moving_avg)
        self.decomp2 = SeriesDecomposition(moving_avg)
        self.decomp3 = SeriesDecomposition(moving_avg)
        self.dropout = nn.Dropout(dropout)
        self.trend_projection = CircularConv1d(d_model, c_out, kernel_size=3, bias=False)

    def forward(self, x: torch.Tensor, cross: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x + self.dropout(self.self_attention(x, x, x))
        x, trend1 = self.decomp1(x)
        x = x + self.dropout(self.cross_attention(x, cross, cross))
        x, trend2 = self.decomp2(x)
        y = self.feed_forward(x)
        x, trend3 = self.decomp3(x + y)
        return x, self.trend_projection(trend1 + trend2 + trend3)


class Decoder(nn.Module):
    """Stack of ``DecoderLayer`` accumulating the trend; the seasonal part is normalised and projected.

    ``x [B, L, d_model]``, ``cross [B, S, d_model]``, ``trend [B, L, c_out]`` ->
    ``(seasonal [B, L, c_out], trend [B, L, c_out])``.
    """

    def __init__(self, layers: Sequence[nn.Module], norm: nn.Module | None = None,
                 projection: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm
        self.projection = projection

    def forward(self, x: torch.Tensor, cross: torch.Tensor, trend: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in self.layers:
            x, residual_trend = layer(x, cross)
            trend = trend + residual_trend
        if self.norm is not None:
            x = self.norm(x)
        if self.projection is not None:
            x = self.projection(x)
        return x, trend


class DecompositionForecaster(Forecaster):
    """Autoformer/FEDformer skeleton; a subclass supplies one ``AttentionLayer`` per encoder/decoder slot.

    The decoder starts from the decomposed input: seasonal = the seasonal part of the last ``label_len`` steps of
    ``x_enc`` followed by zeros, trend = its trend part followed by the mean of ``x_enc`` over time. The output is
    accumulated trend + projected seasonal part, last ``pred_len`` steps: ``[B, pred_len, c_out]``.
    ``x_dec``'s values are not used (only its calendar features ``x_mark_dec``), as in the reference.
    """

    output_layers: tuple[str, ...] = ("decoder.projection", "decoder.layers.0.trend_projection.conv")

    def __init__(
        self,
        config: ModelConfig,
        encoder_attention: Sequence[nn.Module],
        decoder_self_attention: Sequence[nn.Module],
        decoder_cross_attention: Sequence[nn.Module],
    ) -> None:
        super().__init__(config)
        c = config
        self.decomp = SeriesDecomposition(c.moving_avg)
        self.enc_embedding = DataEmbedding(c.enc_in, c.d_model, c.n_time_features, c.dropout, positional=False)
        self.dec_embedding = DataEmbedding(c.dec_in, c.d_model, c.n_time_features, c.dropout, positional=False)
        # Per instance: without calendar features there is no calendar embedding.
        self.embedding_layers = (*self.enc_embedding.layer_names("enc_embedding"),
                                 *self.dec_embedding.layer_names("dec_embedding"))
        self.encoder = Encoder(
            [EncoderLayer(attn, c.d_model, c.d_ff, c.moving_avg, c.dropout, c.activation)
             for attn in encoder_attention],
            norm=SeasonalLayerNorm(c.d_model),
        )
        self.decoder = Decoder(
            [
                DecoderLayer(self_attn, cross_attn, c.d_model, c.c_out, c.d_ff, c.moving_avg, c.dropout, c.activation)
                for self_attn, cross_attn in zip(decoder_self_attention, decoder_cross_attention, strict=True)
            ],
            norm=SeasonalLayerNorm(c.d_model),
            projection=nn.Linear(c.d_model, c.c_out),
        )
        # The seasonal projection and every decoder layer's trend mixer produce the forecast channels.
        self.output_layers = ("decoder.projection",) + tuple(
            f"decoder.layers.{i}.trend_projection.conv" for i in range(len(self.decoder.layers))
        )

    def forward(
        self,
        x_enc: torch.Tensor,
        x_mark_enc: torch.Tensor | None,
        x_dec: torch.Tensor | None,
        x_mark_dec: torch.Tensor | None,
    ) -> torch.Tensor:
        label_len, pred_len = self.config.label_len, self.config.pred_len
        start = x_enc.shape[1] - label_len  # not -label_len: label_len may be 0
        seasonal, trend = self.decomp(x_enc)
        mean = x_enc.mean(dim=1, keepdim=True).expand(-1, pred_len, -1)
        # Label part then future part along time, written as two zero-paddings (no concatenation along time).
        seasonal_init = F.pad(seasonal[:, start:], (0, 0, 0, pred_len))
        trend_init = F.pad(trend[:, start:], (0, 0, 0, pred_len)) + F.pad(mean, (0, 0, label_len, 0))
        c_out = self.config.c_out
        if c_out < trend_init.shape[-1]:
            # MS (many inputs, one target): the reference adds the c_out-channel decoder trend to all input
            # channels by broadcasting and keeps the last one(s); keeping only the target's init trend is the same.
            trend_init = trend_init[..., -c_out:]

        enc_out = self.encoder(self.enc_embedding(x_enc, x_mark_enc))
        dec_in = self.dec_embedding(seasonal_init, x_mark_dec)
        seasonal_part, trend_part = self.decoder(dec_in, enc_out, trend_init)
        return (trend_part + seasonal_part)[:, -pred_len:]
