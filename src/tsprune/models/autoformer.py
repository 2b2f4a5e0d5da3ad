"""Autoformer (Wu et al., NeurIPS 2021): decomposition architecture with Auto-Correlation instead of attention."""

from __future__ import annotations

from tsprune.config import ModelConfig
from tsprune.models.layers.attention import AttentionLayer
from tsprune.models.layers.autocorrelation import AutoCorrelation
from tsprune.models.layers.decomp_blocks import DecompositionForecaster


class Autoformer(DecompositionForecaster):
    """``forward(x_enc [B, seq_len, enc_in], x_mark_enc, x_dec, x_mark_dec) -> [B, pred_len, c_out]``.

    Every encoder/decoder slot is an ``AttentionLayer`` around its own ``AutoCorrelation(factor)``.
    """

    def __init__(self, config: ModelConfig) -> None:
        def layer() -> AttentionLayer:
            return AttentionLayer(AutoCorrelation(config.factor), config.d_model, config.n_heads)

        super().__init__(
            config,
            encoder_attention=[layer() for _ in range(config.e_layers)],
            decoder_self_attention=[layer() for _ in range(config.d_layers)],
            decoder_cross_attention=[layer() for _ in range(config.d_layers)],
        )
