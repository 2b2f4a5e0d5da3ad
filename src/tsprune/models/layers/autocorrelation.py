"""Autoformer's Auto-Correlation: period-based dependencies found by FFT, then time-delay aggregation.

An inner mechanism for ``AttentionLayer``: ``q [B, L, H, E], k [B, S, H, E], v [B, S, H, D] -> [B, L, H, D]``.
With ``real_dft = True`` (``real_dft.use_real_dft``) it computes the same in real arithmetic, for ONNX export.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tsprune.models.layers.real_dft import irfft as real_irfft, rfft as real_rfft


def time_delay_aggregation(values: torch.Tensor, delays: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``out[b, t] = sum_i weights[b, i] * values[b, (t + delays[b, i]) mod L]``, all delays at once.

    ``values [B, L, H, D]``, ``delays [B, k]`` (long), ``weights [B, k]`` -> ``[B, L, H, D]``. Same as summing
    ``torch.roll(values, -delay, time)`` over the delays (the reference's loop). The sum of weighted rolls is a
    circular cross-correlation of the values with a sparse kernel (the weights placed at their delays), computed
    in the frequency domain: O(L log L) per channel instead of k full copies of the values.
    """
    length = values.shape[1]
    kernel = torch.zeros(values.shape[0], length, dtype=values.dtype, device=values.device)
    kernel = kernel.scatter_add(1, delays, weights.to(values.dtype))  # [B, L]: weight at each chosen delay
    kernel_ft = torch.conj(torch.fft.rfft(kernel, dim=1))[:, :, None, None]
    return torch.fft.irfft(torch.fft.rfft(values, dim=1) * kernel_ft, n=length, dim=1)


def circulant_delay_aggregation(values: torch.Tensor, delays: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """:func:`time_delay_aggregation` in real arithmetic (exportable): the same sparse kernel applied as a circulant
    matrix, ``out[b, t] = sum_s kernel[b, (s - t) mod L] * values[b, s]``.

    ``values [B, L, H, D]``, ``delays [B, k]`` (long), ``weights [B, k]`` -> ``[B, L, H, D]``. One ``[B, L, L]``
    matrix times ``[B, L, H * D]``: fewer operations than a forward and an inverse DFT as matmuls, and exact
    apart from the order of the sum (the zeros of the kernel add nothing).
    """
    batch, length = values.shape[:2]
    kernel = torch.zeros(batch, length, dtype=values.dtype, device=values.device)
    kernel = kernel.scatter_add(1, delays, weights.to(values.dtype))  # [B, L]: weight at each chosen delay
    t = torch.arange(length, device=values.device)
    lag = (t[None, :] - t[:, None]) % length  # [L (t), L (s)]: the delay s - t that brings s to t
    circulant = kernel[:, lag]  # [B, L, L]
    return (circulant @ values.reshape(batch, length, -1)).view_as(values)


class AutoCorrelation(nn.Module):
    """Auto-Correlation with the reference's two speed-ups of the top-k delay choice.

    The autocorrelation of ``q`` and ``k`` over lags comes from ``irfft(rfft(q) * conj(rfft(k)))`` and is averaged
    over heads and channels. ``top_k = int(factor * ln L)`` lags are kept: in training the same lags for the whole
    batch (chosen on the batch mean, a batch-norm-like design), in evaluation per sample. Their correlations,
    softmax-normalised, weight the values rolled by each lag.

    ``real_dft`` (an attribute, not state): compute the correlation with DFT matmuls and the aggregation with a
    circulant matrix instead of complex FFTs, so the exporter can translate it; the same result to float rounding.
    """

    real_dft: bool = False

    def __init__(self, factor: int = 1, channels: int | None = None) -> None:
        super().__init__()
        self.factor = factor
        # Divisor of the channel average of the correlation: None = the current width (the reference's mean).
        # Structured pruning fixes it at the trained width so removing channels does not rescale the scores.
        self.channels = channels

    def top_k(self, length: int) -> int:
        # The reference's int(factor * ln L), kept within [1, L] so very short windows still aggregate something.
        return max(1, min(length, int(self.factor * math.log(length))))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        length, source = q.shape[1], k.shape[1]
        # Keys/values are brought to the query length like the reference: zero-padded at the end or truncated.
        if length > source:
            k = F.pad(k, (0, 0, 0, 0, 0, length - source))
            v = F.pad(v, (0, 0, 0, 0, 0, length - source))
        else:
            k, v = k[:, :length], v[:, :length]

        # Period-based dependencies: circular cross-correlation over lags, along time (dim 1).
        # Half-precision FFTs are restricted (powers of two on GPU, none on CPU): compute these in float32.
        low_precision = q.dtype in (torch.float16, torch.bfloat16)
        if low_precision:
            q, k = q.float(), k.float()
        if self.real_dft:
            mean_corr = self._real_mean_correlation(q, k)
        else:
            q_ft, k_ft = torch.fft.rfft(q, dim=1), torch.fft.rfft(k, dim=1)
            # n=length keeps all L lags for odd L as well (the reference's default n drops one there).
            corr = torch.fft.irfft(q_ft * torch.conj(k_ft), n=length, dim=1)  # [B, L, H, E]
            if self.channels is None:
                mean_corr = corr.mean(dim=(2, 3))  # [B, L]: one score per sample and lag
            else:
                mean_corr = corr.sum(dim=(2, 3)) / self.channels

        top_k = self.top_k(length)
        if self.training:
            shared = torch.topk(mean_corr.mean(dim=0), top_k, dim=-1).indices  # [k], the same lags for the batch
            weights = mean_corr[:, shared]  # [B, k]
            delays = shared.unsqueeze(0).expand(q.shape[0], -1)
        else:
            weights, delays = torch.topk(mean_corr, top_k, dim=-1)  # [B, k] each
        weights = torch.softmax(weights, dim=-1)
        aggregate = circulant_delay_aggregation if self.real_dft else time_delay_aggregation
        return aggregate(v.float() if low_precision else v, delays, weights).to(v.dtype)

    def _real_mean_correlation(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The channel-averaged correlation ``[B, L]`` of ``q, k [B, L, H, E]`` with real DFT matmuls.

        ``irfft`` is linear, so the spectra ``q_ft * conj(k_ft)`` are summed over heads and channels first and only
        ``[B, L // 2 + 1]`` is transformed back (the FFT path averages after its inverse: same value, rounding aside).
        """
        length = q.shape[1]
        q_re, q_im = real_rfft(q, dim=1)  # [B, L // 2 + 1, H, E] each
        k_re, k_im = real_rfft(k, dim=1)
        # (a + ib) * conj(c + id) = (ac + bd) + i(bc - ad)
        cross_re = (q_re * k_re + q_im * k_im).sum(dim=(2, 3))  # [B, L // 2 + 1]
        cross_im = (q_im * k_re - q_re * k_im).sum(dim=(2, 3))
        corr_sum = real_irfft(cross_re, cross_im, n=length, dim=1)  # [B, L]
        channels = q.shape[2] * q.shape[3] if self.channels is None else self.channels
        return corr_sum / channels
