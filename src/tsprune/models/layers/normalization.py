"""Per-window series normalisation of the look-back, undone on the forecast (the "use_norm" of iTransformer and the
Time-Series-Library's PatchTST, from the Non-stationary Transformer; RevIN without its affine parameters).

Each window's series are shifted to mean 0 and scaled to standard deviation 1 over time, so the model sees shapes,
not levels; the forecast is scaled back with the same statistics. The statistics are not learned, and, as in the
references, they are ``detach``-ed: no gradient flows through a window's own mean and scale.
All tensors are ``[batch, length, channels]``.
"""

from __future__ import annotations

import torch

# Added to the variance before the square root, as the references (a constant series stays finite).
EPSILON = 1e-5


def normalize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x [B, L, C] -> (x_normalised [B, L, C], mean [B, 1, C], std [B, 1, C])`` over the time axis (biased
    variance, as the references)."""
    mean = x.mean(dim=1, keepdim=True).detach()
    centred = x - mean
    std = torch.sqrt(centred.var(dim=1, keepdim=True, unbiased=False) + EPSILON).detach()
    return centred / std, mean, std


def denormalize(y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``y [B, pred_len, C]`` back to the scale of the window ``mean``/``std`` came from (``[B, 1, C]`` each)."""
    return y * std + mean
