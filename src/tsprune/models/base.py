"""What every forecaster is: an ``nn.Module`` with one call signature and a few declared capabilities.

:data:`MODEL_INPUTS` and :data:`MODEL_OUTPUT` are the one description of that signature (names, shapes, meanings):
the data pipeline's batches, the forecast of new data and the ONNX export's sidecar all follow them, and
:func:`decoder_input` is the one implementation of the decoder's input rule they state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tsprune.config import ModelConfig


@dataclass(frozen=True)
class ModelTensor:
    """One tensor of the forward signature: its name, its shape in the config's dimension names, what it holds."""

    name: str
    shape: str
    meaning: str


# In forward's argument order. Values are scaled as in training (``data.dataset.Scaler``), columns in the run's
# order (target last). x_dec has the model's dec_in channels, which the data binds to enc_in.
MODEL_INPUTS: tuple[ModelTensor, ...] = (
    ModelTensor("x_enc", "[batch, seq_len, enc_in]", "the last seq_len rows, scaled"),
    ModelTensor("x_mark_enc", "[batch, seq_len, n_time_features]", "calendar features of those rows"),
    ModelTensor("x_dec", "[batch, label_len + pred_len, enc_in]",
                "the last label_len rows of x_enc, then pred_len zeros"),
    ModelTensor("x_mark_dec", "[batch, label_len + pred_len, n_time_features]",
                "calendar features of those and future rows"),
)
MODEL_OUTPUT = ModelTensor("forecast", "[batch, pred_len, c_out]", "scaled forecast of the last c_out columns")


def decoder_input(x_enc: torch.Tensor, label_len: int, pred_len: int) -> torch.Tensor:
    """``x_dec`` of :data:`MODEL_INPUTS` from ``x_enc`` ``[batch, seq_len, enc_in]``: its last ``label_len`` rows
    (the decoder's known start), then ``pred_len`` rows of zeros (the steps to forecast), so
    ``[batch, label_len + pred_len, enc_in]``."""
    known = x_enc[:, x_enc.shape[1] - label_len:]  # not [-label_len:]: label_len 0 must keep no row
    return torch.cat([known, x_enc.new_zeros(x_enc.shape[0], pred_len, x_enc.shape[2])], dim=1)


class Forecaster(nn.Module):
    """Base class of the forecasters (the study's five and the small ones trained instead).

    ``forward(x_enc, x_mark_enc, x_dec, x_mark_dec) -> forecast``, the tensors of :data:`MODEL_INPUTS` and
    :data:`MODEL_OUTPUT` (``[batch, pred_len, c_out]``). Models that do not use an input ignore it.
    """

    # Qualified names of the modules whose output *is* the forecast channels (or a decomposition mixer that feeds
    # them directly). Pruning leaves them dense: cutting them would change what the model predicts, not how well.
    output_layers: tuple[str, ...] = ()

    # Modules whose output rows are forecast steps or channels but whose weights may be sparsified: structured
    # pruning must not remove their outputs, unstructured pruning may zero their weights (DLinear's two maps, which
    # are the whole model). ``output_layers`` are both at once.
    fixed_output_layers: tuple[str, ...] = ()

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
