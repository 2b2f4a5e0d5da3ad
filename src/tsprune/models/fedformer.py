"""FEDformer, Fourier version (Zhou et al., ICML 2022): Autoformer's decomposition architecture with
frequency-enhanced blocks on a fixed subset of Fourier modes instead of Auto-Correlation."""

from __future__ import annotations

import torch

from tsprune.config import ModelConfig
from tsprune.models.layers.decomp_blocks import DecompositionForecaster
from tsprune.models.layers.fourier import FourierAttentionLayer, FourierBlock, FourierCrossAttention


class FEDformer(DecompositionForecaster):
    """``forward(x_enc [B, seq_len, enc_in], x_mark_enc, x_dec, x_mark_dec) -> [B, pred_len, c_out]``.

    Encoder self-attention: ``FourierBlock`` over ``seq_len``; decoder self-attention: ``FourierBlock`` over
    ``label_len + pred_len``; cross: ``FourierCrossAttention`` (queries ``label_len + pred_len``, keys ``seq_len``,
    tanh). Modes are drawn from one ``torch.Generator`` seeded with ``mode_seed``, in that order, and stored as buffers.

    As in the official code, each of the three blocks is built once and the *same* block (weights and modes) is
    shared by all layers of its kind (e.g. every encoder layer); each layer keeps its own projections. Unlike it,
    the key/value projections the Fourier blocks never read are not built (see ``FourierAttentionLayer``).
    """

    def __init__(self, config: ModelConfig) -> None:
        c = config
        generator = torch.Generator().manual_seed(c.mode_seed)
        dec_len = c.label_len + c.pred_len
        encoder_block = FourierBlock(c.d_model, c.n_heads, c.seq_len, c.modes, c.mode_select, generator)
        decoder_block = FourierBlock(c.d_model, c.n_heads, dec_len, c.modes, c.mode_select, generator)
        cross_block = FourierCrossAttention(
            c.d_model, c.n_heads, dec_len, c.seq_len, c.modes, c.mode_select, generator, activation="tanh"
        )
        super().__init__(
            config,
            encoder_attention=[
                FourierAttentionLayer(encoder_block, c.d_model, c.n_heads, uses_keys=False) for _ in range(c.e_layers)
            ],
            decoder_self_attention=[
                FourierAttentionLayer(decoder_block, c.d_model, c.n_heads, uses_keys=False) for _ in range(c.d_layers)
            ],
            decoder_cross_attention=[
                FourierAttentionLayer(cross_block, c.d_model, c.n_heads, uses_keys=True) for _ in range(c.d_layers)
            ],
        )
