"""DLinear (Zeng et al., AAAI 2023, "Are Transformers Effective for Time Series Forecasting?"): a moving-average
decomposition of the look-back into trend and seasonal parts, each mapped to the horizon by one Linear over time,
shared by all channels; the forecast is their sum.

Configuration: the Time-Series-Library's ETTh1 script at look-back 96 (``scripts/long_term_forecast/ETT_script/
DLinear_ETTh1.sh``: seq_len 96, pred_len 96, moving_avg 25 from its defaults, one map shared across channels), whose
training settings are the study's (Adam, lr 1e-4 halved each epoch, batch 32, 10 epochs, patience 3).

The two maps are the whole model (``2 * (seq_len * pred_len + pred_len)`` parameters: 18,624 at 96/96). Their rows
are forecast steps and their columns look-back steps, so there is no channel for structured pruning to remove
(``fixed_output_layers``); unstructured methods sparsify them like any weight. Calendar features and ``x_dec`` are not
used.
"""

from __future__ import annotations

import torch
from torch import nn

from tsprune.config import ModelConfig
from tsprune.models.base import Forecaster
from tsprune.models.layers.decomposition import SeriesDecomposition


class DLinear(Forecaster):
    """``forward(x_enc [B, seq_len, C], ...) -> [B, pred_len, c_out]`` (the last ``c_out`` of the C channels)."""

    fixed_output_layers: tuple[str, ...] = ("seasonal", "trend")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        c = config
        self.decomposition = SeriesDecomposition(c.moving_avg)
        self.seasonal = nn.Linear(c.seq_len, c.pred_len)
        self.trend = nn.Linear(c.seq_len, c.pred_len)
        with torch.no_grad():  # both maps start as the look-back's mean, as the references initialise them
            self.seasonal.weight.fill_(1.0 / c.seq_len)
            self.trend.weight.fill_(1.0 / c.seq_len)

    def forward(
        self,
        x_enc: torch.Tensor,
        x_mark_enc: torch.Tensor | None,
        x_dec: torch.Tensor | None,
        x_mark_dec: torch.Tensor | None,
    ) -> torch.Tensor:
        seasonal, trend = self.decomposition(x_enc)  # [B, L, C] each
        # the maps run along time: [B, C, L] -> [B, C, pred_len]
        out = self.seasonal(seasonal.transpose(1, 2)) + self.trend(trend.transpose(1, 2))
        return out.transpose(1, 2)[:, :, x_enc.shape[2] - self.config.c_out:]
