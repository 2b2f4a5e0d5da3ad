"""What every forecaster is: an ``nn.Module`` with one call signature and a few declared capabilities."""

from __future__ import annotations

import torch
from torch import nn

from tsprune.config import ModelConfig


class Forecaster(nn.Module):
    """Base class of the five forecasters.

    ``forward(x_enc, x_mark_enc, x_dec, x_mark_dec) -> [batch, pred_len, c_out]`` where
    ``x_enc`` is ``[batch, seq_len, enc_in]``, ``x_mark_enc`` ``[batch, seq_len, n_time_features]``,
    ``x_dec`` ``[batch, label_len + pred_len, dec_in]`` (the last ``pred_len`` steps zero) and
    ``x_mark_dec`` its calendar features. Models that do not use an input ignore it.
    """

    # Qualified names of the modules whose output *is* the forecast channels (or a decomposition mixer that feeds
    # them directly). Pruning leaves them dense: cutting them would change what the model predicts, not how well.
    output_layers: tuple[str, ...] = ()

    # Qualified names of the embedding modules (value/token embedding, calendar-feature embedding): the layers that
    # read the raw inputs. Pruning leaves them dense unless asked, as the study does. Like ``output_layers`` these
    # are the weight-holding leaf modules (``nn.Linear``/``nn.Conv1d``); a model whose set depends on its config
    # (e.g. no calendar embedding when ``n_time_features == 0``) sets it per instance.
    embedding_layers: tuple[str, ...] = ()

    # Parameters used outside any Linear/Conv/norm layer (learned positions, routers), with the dimension that
    # holds their ``d_model`` channels, so structured pruning removes channels from them too.
    unwrapped_parameters: dict[str, int] = {}

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def forward(
        self,
        x_enc: torch.Tensor,
        x_mark_enc: torch.Tensor | None,
        x_dec: torch.Tensor | None,
        x_mark_dec: torch.Tensor | None,
    ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
