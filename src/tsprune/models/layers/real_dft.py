"""Real-valued DFTs as matrix products: an exact, exportable stand-in for ``torch.fft.rfft`` / ``irfft``.

The ONNX exporter (``torch.onnx.export(..., dynamo=True)``) cannot translate complex-valued intermediate tensors, so
the layers that compute in the frequency domain (Autoformer's Auto-Correlation, FEDformer's Fourier blocks) carry a
second, real-arithmetic path, switched on per module by its ``real_dft`` attribute (:func:`use_real_dft` sets it
for a whole model). A spectrum is then a pair ``(real, imag)`` of real tensors of the same shape, and the DFT is a
product with cosine and sine matrices::

    rfft:   X[f] = sum_t x[t] exp(-2 pi i f t / n)      re = sum_t x[t] cos(a),  im = -sum_t x[t] sin(a)
    irfft:  x[t] = 1/n sum_f c_f (re[f] cos(a) - im[f] sin(a)),   a = 2 pi f t / n

with ``c_f = 1`` for the DC bin (``f = 0``) and the Nyquist bin (``2 f = n``) and ``c_f = 2`` otherwise (each other
bin stands for itself and its conjugate mirror). As in ``torch.fft.irfft``, the imaginary parts of the DC and
Nyquist bins are ignored, bins above those provided count as zero, and ``n`` defaults to ``2 (K - 1)`` for ``K``
bins. The matrices are built in float64 from exact integer phases ``(f t) mod n`` and rounded once to the working
dtype, so the results equal the FFT's to float rounding. They are computed in each forward from the shapes (no
parameters or buffers, so state dicts are unchanged); the cost is ``O(n * bins)`` per channel, which is cheap at
the models' lengths (96 .. 720) and only ``O(n * modes)`` for FEDformer's few kept modes.

The default paths of the layers stay on ``torch.fft`` (what training runs), except that Auto-Correlation evaluates
short windows on its real path, where two GEMMs beat FFTs along time (``AutoCorrelation.gram_max_length``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

Spectrum = tuple[torch.Tensor, torch.Tensor]  # (real, imag), same shape


def _phases(freqs: torch.Tensor, times: int, period: int) -> torch.Tensor:
    """``2 pi ((f t) mod period) / period`` in float64, ``[F, times]`` for ``freqs [F]`` (long).

    The integer product is reduced before it becomes an angle, so every angle lies in ``[0, 2 pi)`` and its cosine
    and sine are accurate to float64 rounding whatever ``f * t`` is.
    """
    t = torch.arange(times, device=freqs.device)
    return ((freqs.long()[:, None] * t[None, :]) % period).double() * (2.0 * math.pi / period)


def _frequencies(freqs: torch.Tensor | None, count: int, device: torch.device) -> torch.Tensor:
    return torch.arange(count, device=device) if freqs is None else freqs.to(device)


def rfft(x: torch.Tensor, dim: int = -1, n: int | None = None, freqs: torch.Tensor | None = None) -> Spectrum:
    """``torch.fft.rfft(x, n=n, dim=dim)`` as ``(real, imag)``; with ``freqs`` only those bins, in that order.

    ``x [..., L, ...]`` (``L`` at ``dim``) -> two tensors ``[..., F, ...]`` with ``F = n // 2 + 1`` (``n``
    defaults to ``L``; a shorter ``n`` truncates ``x``, a longer one zero-pads it, as torch does) or
    ``F = len(freqs)``: ``rfft(x, freqs=idx)`` equals ``torch.fft.rfft(x)[idx]`` along ``dim`` without computing
    the other bins (FEDformer keeps at most 64 of them).
    """
    dim = dim % x.dim()
    n = x.shape[dim] if n is None else n
    used = min(n, x.shape[dim])  # samples past n are dropped; zero padding adds nothing to the sums
    f = _frequencies(freqs, n // 2 + 1, x.device)
    phase = _phases(f, used, n)  # [F, used]
    # One product for both parts; rfft's sign convention makes the imaginary part -sin.
    basis = torch.cat([torch.cos(phase), -torch.sin(phase)], dim=0).to(x.dtype)  # [2F, used]
    if dim == x.dim() - 1:
        real, imag = (x[..., :used] @ basis.t()).split(f.shape[0], dim=-1)  # [..., used] @ [used, 2F]
        return real, imag
    # Time not last: [2F, used] @ [lead, used, trail] with the dims around time flattened (views of a contiguous
    # x), so no operand is transposed. Moving time last instead costs two transposes of the whole tensor, which
    # ONNX Runtime runs as copies (~13% of FEDformer's batch-32 pass there).
    lead, trail = x.shape[:dim], x.shape[dim + 1:]
    flat = x.reshape(math.prod(lead), x.shape[dim], math.prod(trail))[:, :used]  # [P, used, C]
    real, imag = (basis @ flat).split(f.shape[0], dim=1)  # [P, F, C] each
    return real.reshape(*lead, -1, *trail), imag.reshape(*lead, -1, *trail)


def irfft(real: torch.Tensor, imag: torch.Tensor, n: int | None = None, dim: int = -1,
          freqs: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.fft.irfft(torch.complex(real, imag), n=n, dim=dim)`` in real arithmetic.

    ``real, imag [..., K, ...]`` (``K`` bins at ``dim``) -> ``[..., n, ...]``. Bin ``k`` is frequency ``k``
    (bins past ``n // 2`` are dropped, as torch does) or, with ``freqs [K]`` (long, distinct, each at most
    ``n // 2``), frequency ``freqs[k]``: the other frequencies count as zero, which is ``irfft`` of a spectrum
    scattered to those positions, without building it. ``n`` defaults to ``2 (K - 1)``.
    """
    count = real.shape[dim]
    n = 2 * (count - 1) if n is None else n
    if n < 1:
        raise ValueError(f"irfft needs an output length of at least 1, got {n}")
    if freqs is None and count > n // 2 + 1:  # torch ignores the bins above Nyquist
        real, imag = real.narrow(dim, 0, n // 2 + 1), imag.narrow(dim, 0, n // 2 + 1)
    f = _frequencies(freqs, real.shape[dim], real.device)
    phase = _phases(f, n, n)  # [F, n]
    # Every bin but DC and Nyquist stands for itself and its conjugate mirror; DC and Nyquist have no imaginary
    # contribution (irfft ignores it, and their sine rows are zero up to rounding, set exactly zero here).
    alone = (f == 0) | (2 * f == n)
    weight = torch.where(alone, 1.0, 2.0).double()[:, None] / n  # [F, 1]
    cos = torch.cos(phase) * weight
    sin = torch.where(alone[:, None], 0.0, -torch.sin(phase) * weight)
    basis = torch.cat([cos, sin], dim=0).to(real.dtype)  # [2F, n]
    dim = dim % real.dim()
    if dim == real.dim() - 1:
        return torch.cat([real, imag], dim=-1) @ basis  # [..., 2F] @ [2F, n] -> [..., n]
    # Bins not last: [n, 2F] @ [lead, 2F, trail], no transposes (see rfft).
    lead, trail = real.shape[:dim], real.shape[dim + 1:]
    both = torch.cat([real, imag], dim=dim).reshape(math.prod(lead), 2 * f.shape[0], math.prod(trail))
    return (basis.t() @ both).reshape(*lead, n, *trail)


def complex_einsum(equation: str, a: Spectrum, b: Spectrum) -> Spectrum:
    """``torch.einsum(equation, a, b)`` of complex operands given as ``(real, imag)`` pairs, as four real products:
    ``(ar + i ai)(br + i bi) = (ar br - ai bi) + i (ar bi + ai br)``. Shapes follow ``equation``."""
    (ar, ai), (br, bi) = a, b
    real = torch.einsum(equation, ar, br) - torch.einsum(equation, ai, bi)
    imag = torch.einsum(equation, ar, bi) + torch.einsum(equation, ai, br)
    return real, imag


def use_real_dft(model: nn.Module, enabled: bool = True) -> int:
    """Switch every frequency-domain layer of ``model`` (those with a boolean ``real_dft`` attribute:
    ``AutoCorrelation``, ``FourierBlock``, ``FourierCrossAttention``) to the real-arithmetic DFT path, or back to
    ``torch.fft`` with ``enabled=False``. Returns how many layers were set.

    The result is the same up to float rounding; the real path exists so the model can be exported to ONNX (see
    the module doc). Nothing in the state dict changes.
    """
    count = 0
    for module in model.modules():
        if isinstance(getattr(type(module), "real_dft", None), bool):
            setattr(module, "real_dft", enabled)  # an instance attribute over the class default
            count += 1
    return count


@contextmanager
def fft_forms(model: nn.Module) -> Iterator[None]:
    """Every frequency-domain layer of ``model`` on ``torch.fft`` for the duration: ``real_dft`` off, and
    Auto-Correlation's short-window Gram path (``gram_max_length``, taken in evaluation) off; restored afterwards.

    FLOPs are counted in this form (``measure.count_flops``), so a model's FLOPs do not depend on which of its
    equivalent forms evaluation or an export happens to run.
    """
    saved: list[tuple[nn.Module, str, object]] = []
    for module in model.modules():
        for name, off in (("real_dft", False), ("gram_max_length", 0)):
            if isinstance(getattr(type(module), name, None), (bool, int)):
                saved.append((module, name, module.__dict__.get(name, _UNSET)))
                setattr(module, name, off)
    try:
        yield
    finally:
        for module, name, value in saved:
            if value is _UNSET:
                delattr(module, name)  # back to the class default
            else:
                setattr(module, name, value)


_UNSET = object()
