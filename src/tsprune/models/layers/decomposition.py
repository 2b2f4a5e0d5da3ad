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

    The ends are replicated by one ``index_select`` along time (a gather DepGraph traces correctly, unlike
    ``torch.cat``) and pooled on the ``[B, C, L]`` view. The former ``F.pad(mode="replicate")`` of the
    transposed view measured ~5x slower per call and was ~15% of Autoformer's inference time.
    """

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.back = (kernel_size - 1) // 2
        self.front = kernel_size - 1 - self.back

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        rows = torch.arange(-self.front, length + self.back, device=x.device).clamp_(0, length - 1)
        padded = x.index_select(1, rows)  # [B, L + k - 1, C], first/last step repeated
        return F.avg_pool1d(padded.transpose(1, 2), kernel_size=self.kernel_size, stride=1).transpose(1, 2)


class SeriesDecomposition(nn.Module):
    """``x -> (seasonal, trend)`` with ``trend = MovingAverage(x)`` and ``seasonal = x - trend``, each ``[B, L, C]``."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.moving_average = MovingAverage(kernel_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trend = self.moving_average(x)
        return x - trend, trend
