"""FEDformer's frequency-enhanced blocks (Fourier version): inner mechanisms for ``AttentionLayer``.

``q [B, L, H, E], k [B, S, H, E], v [B, S, H, E] -> [B, L, H, E]``. Each block keeps a fixed subset of Fourier modes,
chosen at construction and stored as a persistent buffer so a reloaded checkpoint uses exactly the same modes.
Weights are complex64 parameters (safetensors stores complex64), one ``E x E`` matrix per head and kept mode.

Each block also has a real-arithmetic path (``real_dft = True``, see ``real_dft.use_real_dft``) for ONNX export: the
DFTs become cos/sin matmuls over the kept modes only, spectra are ``(real, imag)`` pairs and the weight enters as its
``.real`` and ``.imag`` parts. Same result to float rounding; parameters and buffers are the same.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch
from torch import nn

from tsprune.models.layers.attention import AttentionLayer
from tsprune.models.layers.real_dft import Spectrum, complex_einsum, irfft as real_irfft, rfft as real_rfft

MODE_SELECTS = ("random", "low")
T = TypeVar("T")


def select_modes(seq_len: int, modes: int, mode_select: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sorted indices of the kept frequencies among ``0 .. seq_len // 2 - 1``; at most ``seq_len // 2`` of them.

    ``random``: a random subset drawn from ``generator`` (the reference shuffles with NumPy's global state);
    ``low``: the lowest frequencies.
    """
    available = seq_len // 2
    modes = min(modes, available)
    if mode_select == "random":
        index = torch.randperm(available, generator=generator)[:modes]
    elif mode_select == "low":
        index = torch.arange(modes)
    else:
        raise ValueError(f"mode_select must be one of {MODE_SELECTS}, got {mode_select!r}")
    return torch.sort(index).values


def _complex_uniform(*shape: int, scale: float) -> nn.Parameter:
    # The reference's ``scale * torch.rand(..., dtype=torch.cfloat)``: real and imaginary parts uniform in [0, scale).
    return nn.Parameter(scale * torch.rand(*shape, dtype=torch.cfloat))


def select_frequencies(spectrum: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``spectrum[:, index]``: the kept modes ``index [M]`` (long) of ``spectrum [B, F, H, E]`` -> ``[B, M, H, E]``.

    Under ``torch.compile`` the same elements are gathered instead: inductor runs complex ops eagerly and checks
    their output strides against their meta kernels, and ``aten.index``'s meta mispredicts them for rfft's output at
    batch 1 (``index_select`` decomposes to it), while gather's output is contiguous in both. Eager keeps the index,
    which is ~4x faster than a complex gather on CPU; both copy the same values.
    """
    if torch.compiler.is_compiling():
        batch, _, heads, channels = spectrum.shape
        return spectrum.gather(1, index.view(1, -1, 1, 1).expand(batch, -1, heads, channels))
    return spectrum[:, index]


def modes_first(module: nn.Module) -> torch.Tensor:
    """``module.weight [H, E_in, E_out, M]`` laid out ``[M, H, E_in, E_out]``: the mixing is one complex matrix
    product per (mode, head), and a batched product reads each batch's matrix contiguously.

    The parameter keeps the reference's layout (checkpoints, pruning and the state dict see that). Relaying it
    copies every weight (``E * E * M`` complex numbers per head: 16.8 MB per block at the default size), which
    ``einsum`` did on every forward pass: at batch 1 that copy took longer than the product itself. With autograd
    off (inference), the relaid copy is kept on the module and made again only when the weight changes (a new
    tensor, another device, or an in-place edit, which bumps the tensor's version counter); with autograd on
    (training) and while tracing (``torch.compile``, ``torch.export``), the permuted view goes into the product
    as before. Both compute the same numbers."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return weight.permute(3, 0, 1, 2)
    return _inference_copy(module, "_modes_first", lambda w: w.permute(3, 0, 1, 2).contiguous())


def modes_first_parts(module: nn.Module) -> Spectrum:
    """The real and imaginary parts of :func:`modes_first`, each ``[M, H, E_in, E_out]`` float32 (the real path's
    weights). In inference they are contiguous copies kept on the module as :func:`modes_first` keeps its copy (a
    strided ``.real`` view would be copied inside every product); with autograd on or while tracing they are the
    parameter's permuted parts, so gradients and exported graphs see the parameter itself, unless
    :func:`freeze_mode_layout` made them constants of an exported copy."""
    frozen = module._buffers.get("frozen_real"), module._buffers.get("frozen_imag")
    if frozen[0] is not None and frozen[1] is not None:
        return frozen[0], frozen[1]
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return weight.real.permute(3, 0, 1, 2), weight.imag.permute(3, 0, 1, 2)
    return _inference_copy(module, "_modes_first_parts", _relaid_parts)


def _relaid_parts(weight: torch.Tensor) -> Spectrum:
    """``weight [H, E_in, E_out, M]`` (complex) -> its real and imaginary parts, each ``[M, H, E_in, E_out]``
    contiguous float32 copies."""
    relaid = weight.detach().permute(3, 0, 1, 2)
    return relaid.real.contiguous(), relaid.imag.contiguous()


def _inference_copy(module: nn.Module, slot: str, make: Callable[[torch.Tensor], T]) -> T:
    """``make(module.weight.detach())``, kept in ``module.__dict__[slot]`` (not state) and made again only when the
    weight changes: a new tensor, another device, or an in-place edit (which bumps its version counter)."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    # the parameter object itself is part of the key (held, so its address cannot be reused by another tensor);
    # its storage address changes with .to() and .data = ..., its version with every in-place edit
    key = (weight.data_ptr(), weight._version, torch.is_inference_mode_enabled())
    cached = module.__dict__.get(slot)
    if cached is None or cached[0] is not weight or cached[1] != key:
        cached = (weight, key, make(weight.detach()))
        module.__dict__[slot] = cached
    return cached[2]


def freeze_mode_layout(model: nn.Module) -> int:
    """Give every Fourier block of ``model`` its weight's real and imaginary parts laid out ``[M, H, E_in, E_out]``
    as non-persistent buffers, which :func:`modes_first_parts` then reads, also while tracing; returns how many
    blocks. For a copy about to be exported (``tsprune.export_pt2``): traced, the real path would otherwise
    permute the complex parameter in every call of the package (AOTInductor keeps that copy in the program): at
    FEDformer's default size 5.8 M complex weights, 46 MB, relaid per forward. The buffers are copies: edit the
    weight afterwards and they are stale, so freeze only a model that is done changing. The state dict is unchanged
    (non-persistent)."""
    count = 0
    for module in model.modules():
        if isinstance(module, (FourierBlock, FourierCrossAttention)):
            real, imag = _relaid_parts(module.weight)
            module.register_buffer("frozen_real", real, persistent=False)
            module.register_buffer("frozen_imag", imag, persistent=False)
            count += 1
    return count


def mix_modes_real(x: Spectrum, weight: Spectrum) -> Spectrum:
    """:func:`mix_modes` in real arithmetic: ``x`` (real, imag) ``[B, M, H, E_in]`` each, ``weight`` (real, imag)
    ``[M, H, E_in, E_out]`` each -> (real, imag) ``[B, M, H, E_out]``.

    ``(xr + i xi)(wr + i wi) = (xr wr - xi wi) + i (xr wi + xi wr)``: both parts of ``x`` are stacked along the
    batch and multiplied by ``wr`` and by ``wi``, two batched products that each read their weight once (at batch 1
    the weights' bytes are the cost: four separate products, as ``complex_einsum`` would do, read each twice)."""
    batch = x[0].shape[0]
    both = torch.cat(x, dim=0)  # [2B, M, H, E_in]: real parts, then imaginary parts
    by_real, by_imag = mix_modes(both, weight[0]), mix_modes(both, weight[1])  # [2B, M, H, E_out] each
    return by_real[:batch] - by_imag[batch:], by_imag[:batch] + by_real[batch:]


def mix_modes(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x [B, M, H, E_in] x weight [M, H, E_in, E_out] -> [B, M, H, E_out]``: per mode and head, ``x``'s rows times
    that mode's and head's matrix, as one batched product (``einsum("bmhi,mhio->bmho")``, spelled as the matmul
    it is so that no operand is relaid behind our back)."""
    return torch.matmul(x.permute(1, 2, 0, 3), weight).permute(2, 0, 1, 3)  # [M, H, B, E_out] -> [B, M, H, E_out]


class FourierBlock(nn.Module):
    """Frequency-enhanced block (self-attention replacement): FFT of ``q``, a per-head complex linear map on the
    kept modes, inverse FFT. ``k`` and ``v`` are ignored, as in the reference.

    ``weight`` is ``[n_heads, E, E, modes]`` (in, out, mode) with ``E = d_model // n_heads``.
    """

    index: torch.Tensor  # buffer: the kept modes
    real_dft: bool = False  # compute in real arithmetic (exportable; module doc), an attribute, not state

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        seq_len: int,
        modes: int,
        mode_select: str = "random",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        head_dim = d_model // n_heads
        self.register_buffer("index", select_modes(seq_len, modes, mode_select, generator), persistent=True)
        self.weight = _complex_uniform(n_heads, head_dim, head_dim, len(self.index), scale=1.0 / (d_model * d_model))

    def mixing_input(self, q: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
        """What ``weight`` multiplies: the kept modes of ``q``'s spectrum, ``[B, M, H, E_in]`` complex (calibrated
        pruning reads it here)."""
        # float32 FFT: the weights are complex64 (and half-precision FFTs are restricted).
        return select_frequencies(torch.fft.rfft(q.float(), dim=1), self.index)  # [B, M, H, E] of [B, L//2+1, H, E]

    def forward(self, q: torch.Tensor, k: torch.Tensor | None = None, v: torch.Tensor | None = None) -> torch.Tensor:
        if self.real_dft:
            return self._real_forward(q)
        length = q.shape[1]
        selected = self.mixing_input(q)  # [B, M, H, E]
        mixed = mix_modes(selected, modes_first(self))  # [B, M, H, E]: all modes in one product
        # As the official code does, the product of the m-th *kept* mode is written into output frequency slot m
        # (``out_ft[..., wi] = ...`` in its loop), not back at frequency index[m]: the output lives on the lowest
        # M frequencies. irfft zero-fills the slots above M.
        out = torch.fft.irfft(mixed, n=length, dim=1)  # [B, L, H, E]
        # The reference returns [B, H, E, L] and AutoCorrelationLayer flattens it with .view(B, L, -1), which mixes
        # time and channels; we keep [B, L, H, E] so channels stay channels.
        return out.to(q.dtype)

    def _real_forward(self, q: torch.Tensor) -> torch.Tensor:
        """``forward`` in real arithmetic: ``q [B, L, H, E] -> [B, L, H, E]``.

        Only the ``M`` kept frequencies are transformed (``O(L M)`` per channel), and the inverse reads ``M`` bins
        at frequencies ``0 .. M-1``, where the FFT path writes them (slot 0 is DC, whose imaginary part irfft drops).
        """
        length = q.shape[1]
        selected = real_rfft(q.float(), dim=1, freqs=self.index)  # [B, M, H, E] each
        real, imag = mix_modes_real(selected, modes_first_parts(self))  # [B, M, H, E] each
        return real_irfft(real, imag, n=length, dim=1).to(q.dtype)  # [B, L, H, E]


def tanh_parts(real: torch.Tensor, imag: torch.Tensor) -> Spectrum:
    """Real and imaginary parts of ``tanh(real + i imag)`` (any shape): the arithmetic of :func:`complex_tanh`."""
    t, cos = torch.tanh(real), torch.cos(imag)
    sech2 = (1.0 - t) * (1.0 + t)  # 1 / cosh^2 a, without the cancellation of 1 - t^2 near |t| = 1
    denominator = t * t + cos * cos * sech2
    return t / denominator, torch.sin(imag) * cos * sech2 / denominator


def complex_tanh(z: torch.Tensor) -> torch.Tensor:
    """``tanh`` of a complex tensor from real elementwise ops, with ``t = tanh a``:
    ``tanh(a + ib) = (t + i sin b cos b (1 - t^2)) / (t^2 + cos^2 b (1 - t^2))``
    (``(sinh a cosh a + i sin b cos b) / (sinh^2 a + cos^2 b)`` divided through by ``cosh^2 a``).

    PyTorch's complex ``tanh`` runs a scalar routine per element on CPU (a fixed ~40 ms of FEDformer's batch-32
    forward that pruning cannot shrink); this vectorises. The denominator is a sum of squares, so there is no
    cancellation near the poles (the ``cosh 2a + cos 2b`` form loses digits there), and ``tanh`` saturates, so
    nothing overflows and gradients stay finite for any ``a``. Real ``tanh`` rather than ``sinh`` and ``cosh``:
    ONNX Runtime runs ``Sinh`` and ``Cosh`` one element at a time (27 ms of FEDformer's 770 ms batch-32 pass,
    profiled on a 2-core AMD EPYC), ``Tanh`` vectorised.
    """
    return torch.complex(*tanh_parts(z.real, z.imag))


class FourierCrossAttention(nn.Module):
    """Frequency-enhanced cross attention: attention between the kept modes of ``q`` and of ``k``, in the frequency
    domain, with a complex ``tanh`` (or ``softmax`` of magnitudes) activation, then a per-head complex linear map.

    As in the reference, ``k`` serves as both keys and values (``v`` is ignored). ``weight`` is
    ``[n_heads, E, E, modes_q]``; the result is divided by ``d_model * d_model`` (its in * out channels) before
    the inverse FFT, as the reference does.
    """

    index_q: torch.Tensor  # buffers: the kept modes of q and of k
    index_kv: torch.Tensor
    real_dft: bool = False  # compute in real arithmetic (exportable; module doc), an attribute, not state

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        seq_len_q: int,
        seq_len_kv: int,
        modes: int,
        mode_select: str = "random",
        generator: torch.Generator | None = None,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        if activation not in ("tanh", "softmax"):
            raise ValueError(f"activation must be tanh or softmax, got {activation!r}")
        head_dim = d_model // n_heads
        self.activation = activation
        self.register_buffer("index_q", select_modes(seq_len_q, modes, mode_select, generator), persistent=True)
        self.register_buffer("index_kv", select_modes(seq_len_kv, modes, mode_select, generator), persistent=True)
        # A constant fixed at construction (the reference's in_channels * out_channels), so pruning d_model later
        # does not change what the block computes.
        self.norm = float(d_model * d_model)
        self.weight = _complex_uniform(n_heads, head_dim, head_dim, len(self.index_q), scale=1.0 / self.norm)

    def mixing_input(self, q: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
        """What ``weight`` multiplies: the frequency-domain attention of ``q``'s kept modes over ``k``'s,
        ``[B, Mq, H, E_in]`` complex (calibrated pruning reads it here)."""
        if k is None:
            raise ValueError("FourierCrossAttention needs keys")
        q_ft = select_frequencies(torch.fft.rfft(q.float(), dim=1), self.index_q)  # [B, Mq, H, E]
        k_ft = select_frequencies(torch.fft.rfft(k.float(), dim=1), self.index_kv)  # [B, Mk, H, E]
        scores = torch.einsum("bxhe,byhe->bhxy", q_ft, k_ft)  # [B, H, Mq, Mk]
        if self.activation == "tanh":
            scores = complex_tanh(scores)
        else:
            scores = torch.complex(torch.softmax(scores.abs(), dim=-1), torch.zeros_like(scores.real))
        return torch.einsum("bhxy,byhe->bxhe", scores, k_ft)  # [B, Mq, H, E]

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        if self.real_dft:
            return self._real_forward(q, k)
        batch, length, heads, _ = q.shape
        attended = self.mixing_input(q, k)  # [B, Mq, H, E]
        mixed = mix_modes(attended, modes_first(self))  # [B, Mq, H, E]
        # Unlike FourierBlock, the reference puts each result back at its own frequency index_q[m].
        spectrum = mixed.new_zeros(batch, length // 2 + 1, heads, mixed.shape[-1]).index_copy(1, self.index_q, mixed)
        out = torch.fft.irfft(spectrum / self.norm, n=length, dim=1)  # [B, L, H, E]
        return out.to(q.dtype)

    def _real_forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``forward`` in real arithmetic: ``q [B, L, H, E], k [B, S, H, E] -> [B, L, H, E]``.

        The forward DFTs compute only the kept modes; the inverse reads the ``Mq`` results at their frequencies
        ``index_q`` directly (no zero-filled spectrum is built).
        """
        length = q.shape[1]
        q_ft = real_rfft(q.float(), dim=1, freqs=self.index_q)  # [B, Mq, H, E] each
        k_ft = real_rfft(k.float(), dim=1, freqs=self.index_kv)  # [B, Mk, H, E] each
        scores = complex_einsum("bxhe,byhe->bhxy", q_ft, k_ft)  # [B, H, Mq, Mk] each
        if self.activation == "tanh":
            attended = complex_einsum("bhxy,byhe->bxhe", tanh_parts(*scores), k_ft)  # [B, Mq, H, E] each
        else:
            # |z| written out (the exporter has no complex abs); the weights are real, as on the FFT path.
            weights = torch.softmax(torch.sqrt(scores[0] * scores[0] + scores[1] * scores[1]), dim=-1)
            attended = (torch.einsum("bhxy,byhe->bxhe", weights, k_ft[0]),
                        torch.einsum("bhxy,byhe->bxhe", weights, k_ft[1]))
        real, imag = mix_modes_real(attended, modes_first_parts(self))  # [B, Mq, H, E] each
        out = real_irfft(real / self.norm, imag / self.norm, n=length, dim=1, freqs=self.index_q)
        return out.to(q.dtype)  # [B, L, H, E]


class FourierAttentionLayer(AttentionLayer):
    """``AttentionLayer`` without the projections a Fourier block never reads.

    ``FourierBlock`` reads only ``q``; ``FourierCrossAttention`` reads ``q`` and ``k`` (``k`` doubles as values).
    The reference still builds key/value projections there; they get no gradient and change nothing, so they are
    left out (``uses_keys=False`` drops the key projection too).
    ``[B, L, d_model] x [B, S, d_model] -> [B, L, d_model]``.
    """

    def __init__(self, inner: nn.Module, d_model: int, n_heads: int, uses_keys: bool) -> None:
        super().__init__(inner, d_model, n_heads)
        del self.value
        if not uses_keys:
            del self.key
        self.uses_keys = uses_keys

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor | None = None,
                repeat_queries: int = 1) -> torch.Tensor:
        batch, length = keys.shape[0], queries.shape[1]
        q = self.project_queries(queries, repeat_queries).view(batch, length, self.n_heads, -1)
        k = self.key(keys).view(batch, keys.shape[1], self.n_heads, -1) if self.uses_keys else None
        out = self.inner(q, k, None)
        return self.out(out.reshape(batch, length, -1))
