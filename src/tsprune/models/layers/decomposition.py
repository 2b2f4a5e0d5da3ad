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

    # Export form (an attribute, not state; :func:`use_averaging_matrix`): one ``[L, L]`` averaging matrix times
    # ``x``. ONNX Runtime 1.32 runs the pooling form's AveragePool ~20x slower than the equivalent MatMul, a third of
    # Autoformer's and FEDformer's time there at batch 32; the matrix made them ~1.5x faster in ONNX Runtime.
    # Compiled graphs (torch.compile, torch.export: the pt2 package) take it too: inductor fuses the gather and the
    # pooling into one loop that measured 80 ms of Autoformer's 200 ms compiled sparse pass at batch 32 (2 threads,
    # AMD EPYC Zen 3); with the matrix the compiled pass measured as fast as eager.
    as_matrix: bool = False

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.back = (kernel_size - 1) // 2
        self.front = kernel_size - 1 - self.back

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        if self.as_matrix or torch.compiler.is_compiling():
            return torch.matmul(averaging_matrix(length, self.front, self.back, x), x)  # [L, L] @ [B, L, C]
        rows = torch.arange(-self.front, length + self.back, device=x.device).clamp_(0, length - 1)
        padded = x.index_select(1, rows)  # [B, L + k - 1, C], first/last step repeated
        return F.avg_pool1d(padded.transpose(1, 2), kernel_size=self.kernel_size, stride=1).transpose(1, 2)


def averaging_matrix(length: int, front: int, back: int, like: torch.Tensor) -> torch.Tensor:
    """``[L, L]`` matrix ``A`` with ``A @ x`` the moving average of ``x [B, L, C]`` over ``front + 1 + back`` steps with
    the ends replicated: row ``t`` holds ``1 / k`` for each step of ``t``'s window, the clamped (replicated) end
    steps counted as often as they repeat. Built in float64 and cast to ``like``'s dtype on its device."""
    kernel = front + 1 + back
    source = torch.arange(-front, length + back, device=like.device).clamp(0, length - 1)  # [L + k - 1]
    window = torch.arange(length, device=like.device)[:, None] + torch.arange(kernel, device=like.device)  # [L, k]
    counts = torch.zeros(length, length, dtype=torch.float64, device=like.device)
    counts.scatter_add_(1, source[window], torch.ones(length, kernel, dtype=torch.float64, device=like.device))
    return (counts / kernel).to(like.dtype)


def use_averaging_matrix(model: nn.Module, enabled: bool = True) -> int:
    """Switch every :class:`MovingAverage` of ``model`` to its export form (``as_matrix``) or back; returns how many
    were set. The result is the pooling form's up to float rounding; nothing in the state dict changes."""
    count = 0
    for module in model.modules():
        if isinstance(module, MovingAverage):
            module.as_matrix = enabled  # an instance attribute over the class default
            count += 1
    return count


class SeriesDecomposition(nn.Module):
    """``x -> (seasonal, trend)`` with ``trend = MovingAverage(x)`` and ``seasonal = x - trend``, each ``[B, L, C]``."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.moving_average = MovingAverage(kernel_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trend = self.moving_average(x)
        return x - trend, trend
