"""Series decomposition (Autoformer, FEDformer): a moving average splits a series into trend and seasonal parts.

All tensors are ``[batch, length, channels]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MovingAverage(nn.Module):
    """Moving average over time with the ends replicated, so the output keeps the input's length.

    ``[B, L, C] -> [B, L, C]``. For an odd kernel both ends get ``(k - 1) // 2`` copies (as Autoformer); for an even
    kernel the front gets one more (as FEDformer's fix), so every kernel size keeps the length.
    """

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.back = (kernel_size - 1) // 2
        self.front = kernel_size - 1 - self.back

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # [B, C, L]: replicate padding and pooling work on the last dimension
        if self.kernel_size > 1:
            x = F.pad(x, (self.front, self.back), mode="replicate")
        return F.avg_pool1d(x, kernel_size=self.kernel_size, stride=1).transpose(1, 2)


class SeriesDecomposition(nn.Module):
    """``x -> (seasonal, trend)`` with ``trend = MovingAverage(x)`` and ``seasonal = x - trend``, each ``[B, L, C]``."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.moving_average = MovingAverage(kernel_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trend = self.moving_average(x)
        return x - trend, trend
