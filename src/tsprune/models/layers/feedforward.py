"""The position-wise feed-forward block of every encoder/decoder layer, and the activation it uses."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def activation_fn(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``relu`` or ``gelu`` (the config validates the name)."""
    return F.relu if name == "relu" else F.gelu


class FeedForward(nn.Module):
    """``dropout(linear2(dropout(act(linear1(x)))))``: ``[B, L, d_model] -> [B, L, d_model]``.

    The references write it as two kernel-size-1 convolutions; Linear is the same math and faster.
    Autoformer and FEDformer use it without biases.
    """

    def __init__(self, d_model: int, d_ff: int, dropout: float, activation: str, bias: bool = True) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.activation = activation_fn(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear2(self.dropout(self.activation(self.linear1(x)))))
