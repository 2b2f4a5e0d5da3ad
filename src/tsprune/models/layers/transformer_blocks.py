"""The post-norm encoder/decoder of the vanilla Transformer and Informer, written once.

The two models differ only in the inner attention mechanisms handed in and in Informer's distilling layers between
encoder layers; ``EncoderDecoderForecaster`` is the model skeleton both subclass.
All tensors are ``[batch, length, channels]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tsprune.config import ModelConfig
from tsprune.models.base import Forecaster
from tsprune.models.layers.attention import AttentionLayer, FullAttention
from tsprune.models.layers.feedforward import FeedForward
from tsprune.models.layers.embed import CircularConv1d, DataEmbedding


class EncoderLayer(nn.Module):
    """Self-attention and a position-wise feed-forward, each added back and layer-normalised (post-norm).

    ``[B, L, d_model] -> [B, L, d_model]``.
    """

    def __init__(
        self, attention: nn.Module, d_model: int, d_ff: int, dropout: float = 0.1, activation: str = "relu"
    ) -> None:
        super().__init__()
        self.attention = attention
        self.feed_forward = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attention(x, x, x)))
        y = self.feed_forward(x)
        return self.norm2(x + y)


class DistilConv(nn.Module):
    """Informer's self-attention distilling: circular conv (k=3), BatchNorm, ELU, max-pool (3, stride 2, pad 1).

    ``[B, L, d_model] -> [B, ceil(L / 2), d_model]``.
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.conv = CircularConv1d(d_model, d_model, kernel_size=3)
        self.norm = nn.BatchNorm1d(d_model)
        self.activation = nn.ELU()
        self.pool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv.channels_first(x)  # BatchNorm1d and MaxPool1d want [B, C, L]
        x = self.pool(self.activation(self.norm(x)))
        return x.transpose(1, 2).contiguous()  # row-major [B, L, C] for the next layer's Linears (no copy in each)


class Encoder(nn.Module):
    """Encoder layers, optionally with a distilling layer after every layer but the last, then a final norm.

    ``[B, L, d_model] -> [B, L', d_model]`` (``L' = L`` without distilling, halved per distilling layer with it).
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        distil_layers: Sequence[nn.Module] | None = None,
        norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        if distil_layers is not None and len(distil_layers) != len(layers) - 1:
            raise ValueError(f"need {len(layers) - 1} distilling layers between {len(layers)} encoder layers")
        self.distil_layers = nn.ModuleList(distil_layers) if distil_layers else None
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.distil_layers is not None and i < len(self.distil_layers):
                x = self.distil_layers[i](x)
        return self.norm(x) if self.norm is not None else x


def full_attention_encoder(config: ModelConfig, norm: nn.Module) -> Encoder:
    """``config.e_layers`` post-norm layers of full (non-causal) self-attention and a feed-forward, then ``norm``:
    the encoder of the encoder-only forecasters (PatchTST over patches, iTransformer over variates)."""
    c = config
    layers = [EncoderLayer(AttentionLayer(FullAttention(causal=False, dropout=c.dropout), c.d_model, c.n_heads),
                           c.d_model, c.d_ff, c.dropout, c.activation) for _ in range(c.e_layers)]
    return Encoder(layers, norm=norm)


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder output and a feed-forward, each post-normed.

    ``x [B, L, d_model]``, ``cross [B, S, d_model]`` -> ``[B, L, d_model]``.
    """

    def __init__(
        self,
        self_attention: nn.Module,
        cross_attention: nn.Module,
        d_model: int,
        d_ff: int,
        dropout: float = 0.1,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.self_attention = self_attention
        self.cross_attention = cross_attention
        self.feed_forward = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.self_attention(x, x, x)))
        x = self.norm2(x + self.dropout(self.cross_attention(x, cross, cross)))
        y = self.feed_forward(x)
        return self.norm3(x + y)


class Decoder(nn.Module):
    """Decoder layers then a final norm: ``x [B, L, d_model]``, ``cross [B, S, d_model]`` -> ``[B, L, d_model]``."""

    def __init__(self, layers: Sequence[nn.Module], norm: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm

    def forward(self, x: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, cross)
        return self.norm(x) if self.norm is not None else x


class EncoderDecoderForecaster(Forecaster):
    """Transformer/Informer skeleton; a subclass supplies one ``AttentionLayer`` per encoder/decoder slot.

    Encoder and decoder inputs get token + positional + calendar embeddings; the decoder reads ``x_dec`` (the last
    ``label_len`` known steps then zeros) and its output, normalised and projected to ``c_out``, is kept for the
    last ``pred_len`` steps: ``[B, pred_len, c_out]``.
    """

    output_layers: tuple[str, ...] = ("projection",)

    def __init__(
        self,
        config: ModelConfig,
        encoder_attention: Sequence[nn.Module],
        decoder_self_attention: Sequence[nn.Module],
        decoder_cross_attention: Sequence[nn.Module],
        distil: bool = False,
    ) -> None:
        super().__init__(config)
        c = config
        self.enc_embedding = DataEmbedding(c.enc_in, c.d_model, c.n_time_features, c.dropout, positional=True)
        self.dec_embedding = DataEmbedding(c.dec_in, c.d_model, c.n_time_features, c.dropout, positional=True)
        # Per instance: without calendar features there is no calendar embedding.
        self.embedding_layers = (*self.enc_embedding.layer_names("enc_embedding"),
                                 *self.dec_embedding.layer_names("dec_embedding"))
        n_encoder = len(encoder_attention)
        self.encoder = Encoder(
            [EncoderLayer(attn, c.d_model, c.d_ff, c.dropout, c.activation) for attn in encoder_attention],
            distil_layers=[DistilConv(c.d_model) for _ in range(n_encoder - 1)] if distil else None,
            norm=nn.LayerNorm(c.d_model),
        )
        self.decoder = Decoder(
            [
                DecoderLayer(self_attn, cross_attn, c.d_model, c.d_ff, c.dropout, c.activation)
                for self_attn, cross_attn in zip(decoder_self_attention, decoder_cross_attention, strict=True)
            ],
            norm=nn.LayerNorm(c.d_model),
        )
        self.projection = nn.Linear(c.d_model, c.c_out)

    def forward(
        self,
        x_enc: torch.Tensor,
        x_mark_enc: torch.Tensor | None,
        x_dec: torch.Tensor | None,
        x_mark_dec: torch.Tensor | None,
    ) -> torch.Tensor:
        if x_dec is None:
            raise ValueError(f"{type(self).__name__} needs the decoder input x_dec")
        enc_out = self.encoder(self.enc_embedding(x_enc, x_mark_enc))
        dec_out = self.decoder(self.dec_embedding(x_dec, x_mark_dec), enc_out)
        return self.projection(dec_out[:, -self.config.pred_len :])
