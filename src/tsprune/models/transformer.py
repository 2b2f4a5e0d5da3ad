"""The vanilla Transformer (Vaswani et al., NeurIPS 2017) as a forecaster, as in the Informer/Autoformer code bases."""

from __future__ import annotations

from tsprune.config import ModelConfig
from tsprune.models.layers.attention import AttentionLayer, FullAttention
from tsprune.models.layers.transformer_blocks import EncoderDecoderForecaster


class Transformer(EncoderDecoderForecaster):
    """``forward(x_enc [B, seq_len, enc_in], x_mark_enc, x_dec [B, label_len + pred_len, dec_in], x_mark_dec)
    -> [B, pred_len, c_out]``.

    Full attention everywhere (dropout on the attention weights); the decoder's self-attention is causal.
    """

    def __init__(self, config: ModelConfig) -> None:
        c = config

        def layer(causal: bool) -> AttentionLayer:
            return AttentionLayer(FullAttention(causal=causal, dropout=c.dropout), c.d_model, c.n_heads)

        super().__init__(
            config,
            encoder_attention=[layer(False) for _ in range(c.e_layers)],
            decoder_self_attention=[layer(True) for _ in range(c.d_layers)],
            decoder_cross_attention=[layer(False) for _ in range(c.d_layers)],
        )
