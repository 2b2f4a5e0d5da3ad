"""Informer (Zhou et al., AAAI 2021): ProbSparse self-attention, self-attention distilling, generative decoder."""

from __future__ import annotations

from tsprune.config import ModelConfig
from tsprune.models.layers.attention import AttentionLayer, FullAttention
from tsprune.models.layers.prob_attention import ProbAttention
from tsprune.models.layers.transformer_blocks import EncoderDecoderForecaster


class Informer(EncoderDecoderForecaster):
    """``forward(x_enc [B, seq_len, enc_in], x_mark_enc, x_dec [B, label_len + pred_len, dec_in], x_mark_dec)
    -> [B, pred_len, c_out]``.

    Encoder and decoder self-attention are ProbSparse (the decoder's causal); cross-attention is full, as in the
    paper and the official code. With ``distil``, a ``DistilConv`` after each encoder layer but the last halves the
    sequence (96 -> 48 -> ...). The default ``prob_layout="tslib"`` flattens ProbSparse outputs as the study's
    code and the published baselines do; ``"paper"`` is the paper's attention (see ``layers/prob_attention.py``).
    """

    def __init__(self, config: ModelConfig) -> None:
        c = config

        def prob(causal: bool) -> AttentionLayer:
            return AttentionLayer(ProbAttention(causal=causal, factor=c.factor, layout=c.prob_layout), c.d_model,
                                  c.n_heads)

        super().__init__(
            config,
            encoder_attention=[prob(False) for _ in range(c.e_layers)],
            decoder_self_attention=[prob(True) for _ in range(c.d_layers)],
            decoder_cross_attention=[
                AttentionLayer(FullAttention(causal=False, dropout=c.dropout), c.d_model, c.n_heads)
                for _ in range(c.d_layers)
            ],
            distil=c.distil,
        )
