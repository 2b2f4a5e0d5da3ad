"""Sparse stand-ins for pruned ``nn.Linear`` / ``nn.Conv1d`` layers: the zeros are skipped, not multiplied.

Why these choices (measured with torch 2.13 on CPU, see ``benchmarks/speedup.py``):

* Orientation: ``y = (W_sparse @ x2d.T).T`` with the sparse weight on the *left*. ``F.linear(x, W_csr)`` (sparse on
  the right) was 2-5x slower. ``x2d.T`` is passed as a view (a contiguous copy first measured no faster).
* Layouts: CSR and BSR (``block`` x ``block`` tiles), torch's kernels, and PCSR, tsprune's own C++ kernel over a
  column-panelled CSR (:mod:`tsprune.sparse.kernel`; CPU and float32, offered where it builds);
  :func:`tsprune.sparse.engine.compile_sparse` picks per layer by timing. Unstructured magnitude pruning rarely
  leaves whole tiles empty (at density 0.107 a 4x4 tile is nonzero with probability ~0.84), so BSR multiplies ~8x
  the nonzeros and lost to CSR on every layer with nonzeros we measured on CPU; it is there for block-structured
  masks and GPUs. torch's CSR itself runs at 0.3-0.9x of MKL's dense GEMM at densities 0.25-0.107 on this CPU;
  PCSR at 2.5-4.5x (``benchmarks/sparse_kernels.py``).
* PCSR forward takes ``x [..., in]`` row-major and returns ``[..., out]`` row-major: the kernel transposes tiles
  in cache, so there is no transpose around the call (a convolution's im2col columns are passed transposed).
* Indices are int32 when they fit: half the index memory of torch's int64 default (no speed difference measured
  on CPU; cuSPARSE's BSR routines take only int32).
* Storage: only the compressed arrays (``crow_indices``, ``col_indices``, ``values``) are kept, as ordinary
  non-persistent buffers, so ``.to(device)``, ``.double()`` and ``deepcopy`` work as for any module (a sparse
  tensor buffer breaks ``deepcopy``). The sparse tensor is re-wrapped around them in each forward (~4 us).
  The dense weight with its zeros is *not* held: ``module.weight`` materialises it on demand, and the state dict
  writes it under the original key ``weight`` (and reads it back), so a compiled model saves the same
  ``model.safetensors`` as the masked dense one and a checkpoint loads into either. At density 0.107 a CSR weight
  with int32 indices takes ~21% of the dense bytes; keeping the dense copy as well would cost ~121%.

Inference only: the buffers are not parameters, so the sparse weight does not train.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tsprune.sparse import kernel as pcsr  # tsprune's own kernel (not the ``kernel`` property)

LAYOUTS = ("csr", "bsr", "pcsr")  # the compressed weight formats; pcsr runs on tsprune's own kernel
OWN_KERNEL = "pcsr"
_INT32_MAX = 2**31 - 1


def _compress(matrix: Tensor, layout: str, block: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """``(crow_indices, col_indices, values)`` of a 2-D dense ``matrix`` in CSR or BSR (``block`` x ``block``)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown sparse layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    matrix = matrix.detach()
    with warnings.catch_warnings():  # torch warns (once) that sparse CSR support is beta
        warnings.simplefilter("ignore", UserWarning)
        if layout == "csr":
            sparse = matrix.to_sparse_csr()
        else:
            if block is None or block < 1 or matrix.shape[0] % block or matrix.shape[1] % block:
                raise ValueError(f"BSR block {block} does not divide the weight shape {tuple(matrix.shape)}")
            sparse = matrix.to_sparse_bsr((block, block))
    crow, col, values = sparse.crow_indices(), sparse.col_indices(), sparse.values()
    if max(matrix.shape) <= _INT32_MAX and values.numel() <= _INT32_MAX:
        crow, col = crow.to(torch.int32), col.to(torch.int32)
    return crow.contiguous(), col.contiguous(), values.contiguous()


def _expand(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """The dense matrix of CSR (``values`` 1-D) or BSR (``values`` ``[n, b, b]``) arrays, by one scatter
    (torch's BSR ``to_dense`` is several ms even for small CPU matrices)."""
    block = values.shape[-1] if values.dim() == 3 else 1
    grid = (shape[0] // block, shape[1] // block)
    entries = torch.arange(col.numel(), device=crow.device, dtype=crow.dtype)
    rows = torch.searchsorted(crow[1:], entries, right=True)  # row of each stored entry
    tiles = values.new_zeros(*grid, *values.shape[1:])
    tiles[rows, col.long()] = values
    return tiles.transpose(1, 2).reshape(shape) if block > 1 else tiles


class SparseWeight(nn.Module):
    """A weight matrix ``[out, in]`` kept compressed, plus the original layer's bias; base of the sparse layers.

    ``weight_shape`` is the original layer's weight shape (``[out, in, k]`` for a convolution), which is what
    ``weight`` and the state dict present.
    """

    crow_indices: Tensor  # the compressed arrays, registered as buffers in ``_store``; for pcsr: the kernel's
    col_indices: Tensor  # (panel, row) pointers, columns within the panel, values and per-row counts
    values: Tensor
    row_nnz: Tensor
    panel: int | None = None

    def __init__(self, weight: Tensor, bias: Tensor | None, layout: str, block: int | None = None) -> None:
        super().__init__()
        self.layout = layout
        self.block = block if layout == "bsr" else None
        self.weight_shape = tuple(weight.shape)
        self.matrix_shape = (weight.shape[0], math.prod(weight.shape[1:]))
        self.bias = bias  # the pruned layer's own Parameter (or None): shared, not copied
        self._store(weight)

    def _store(self, weight: Tensor) -> None:
        matrix = weight.reshape(self.matrix_shape)
        if self.layout == OWN_KERNEL:
            if matrix.device.type != "cpu" or not pcsr.available():
                raise ValueError(f"the pcsr kernel runs on CPU where it builds ({pcsr.reason() or 'not on CPU'})")
            packed = pcsr.pack(matrix)
            crow, col, values, self.panel = packed.ptr, packed.cols, packed.values, packed.panel
            self.register_buffer("row_nnz", packed.row_nnz, persistent=False)
        else:
            crow, col, values = _compress(matrix, self.layout, self.block)
        self.register_buffer("crow_indices", crow, persistent=False)
        self.register_buffer("col_indices", col, persistent=False)
        self.register_buffer("values", values, persistent=False)

    @property
    def kernel(self) -> str:
        """The plan's name for this layer's kernel: its layout (``"csr"`` or ``"bsr"``)."""
        return self.layout

    def packed(self) -> pcsr.PackedWeight:
        """The pcsr buffers as the kernel's :class:`tsprune.sparse.kernel.PackedWeight` (no copy)."""
        assert self.panel is not None, "only a pcsr layer has a packed weight"
        return pcsr.PackedWeight(ptr=self.crow_indices, cols=self.col_indices, values=self.values,
                                   row_nnz=self.row_nnz, out_features=self.matrix_shape[0],
                                   in_features=self.matrix_shape[1], panel=self.panel)

    def sparse_weight(self) -> Tensor:
        """The compressed ``[out, in]`` matrix as a torch sparse tensor (a cheap wrapper around the buffers)."""
        build = torch.sparse_csr_tensor if self.layout == "csr" else torch.sparse_bsr_tensor
        return build(self.crow_indices, self.col_indices, self.values, self.matrix_shape, check_invariants=False)

    @property
    def weight(self) -> Tensor:
        """The dense weight with its zeros, built on demand (for saving, FLOP and density accounting)."""
        if self.layout == OWN_KERNEL:
            return self.packed().dense().reshape(self.weight_shape)
        return _expand(self.crow_indices, self.col_indices, self.values, self.matrix_shape).reshape(self.weight_shape)

    @property
    def density(self) -> float:
        """Nonzero fraction of the weight."""
        return int(torch.count_nonzero(self.values)) / max(1, math.prod(self.weight_shape))

    @property
    def stored(self) -> float:
        """Fraction of the weight the kernel multiplies: the density plus, for BSR, the zeros inside kept tiles."""
        return self.values.numel() / max(1, math.prod(self.weight_shape))

    def _matmul(self, columns: Tensor) -> Tensor:
        """``W @ columns`` for a dense ``[in, n]`` operand (any strides): ``[out, n]``."""
        if self.layout == OWN_KERNEL:  # the kernel takes row-major [tokens, in]
            return pcsr.linear(columns.T, self.packed()).T
        return torch.sparse.mm(self.sparse_weight(), columns)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.weight  # dense with zeros, under the original layer's key
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "weight"
        if key in state_dict:
            weight = state_dict[key]
            if tuple(weight.shape) != self.weight_shape:
                error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(weight.shape)}, "
                                  f"the shape in current model is {self.weight_shape}.")
            else:
                self._store(weight.to(self.values.device, self.values.dtype))
        elif strict:
            missing_keys.append(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if key in unexpected_keys:  # the base class does not know the ``weight`` key we just consumed
            unexpected_keys.remove(key)

    def extra_repr(self) -> str:
        block = f", block={self.block}" if self.block else ""
        return (f"{self.weight_shape}, layout={self.layout}{block}, density={self.density:.3f}, "
                f"stored={self.stored:.3f}, bias={self.bias is not None}")


# an epilogue's torch equivalent (exact GELU)
ACTIVATION_FNS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "gelu": F.gelu}


def identity(x: Tensor) -> Tensor:
    """A feed-forward block's activation once its first layer applies it (the engine's folded epilogue)."""
    return x


class SparseLinear(SparseWeight):
    """``nn.Linear`` with a compressed weight: ``y = act((W @ x2d.T).T + b)`` on inputs ``[..., in]``, output
    contiguous. ``activation`` (``None``, ``"relu"``, ``"gelu"``) is the following activation folded in by the engine
    (:func:`tsprune.sparse.rewrites.fuse_epilogues`): the pcsr kernel applies it as it stores the output."""

    activation: str | None = None

    def __init__(self, linear: nn.Linear, layout: str = "csr", block: int | None = None) -> None:
        super().__init__(linear.weight, linear.bias, layout, block)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: Tensor) -> Tensor:
        if self.layout == OWN_KERNEL:  # row-major in and out: no transposes around the call
            return pcsr.linear(x, self.packed(), self.bias, activation=self.activation)
        rows = x.reshape(-1, self.in_features)
        out = self._matmul(rows.T).T.contiguous()  # [n, out]
        if self.bias is not None:
            out = out.add_(self.bias)
        out = out.view(*x.shape[:-1], self.out_features)
        return ACTIVATION_FNS[self.activation](out) if self.activation else out

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", activation={self.activation}" if self.activation else "")


class ZeroLinear(nn.Module):
    """An ``nn.Linear`` whose weight is entirely zero (global magnitude pruning can empty a whole layer): the output
    is the bias, or zeros, without a product. The original ``weight`` and ``bias`` Parameters stay registered under
    their keys, so the state dict and :func:`densify` see the layer unchanged."""

    kernel = "zero"
    block = None

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: Tensor) -> Tensor:
        out = x.new_zeros(*x.shape[:-1], self.out_features)
        return out.add_(self.bias) if self.bias is not None else out


class SkippedLinear(ZeroLinear):
    """An ``nn.Linear`` whose output is never used: in a feed-forward block whose second layer is all zero, the
    first layer's product is multiplied by zero whatever it is. Returns an empty ``[..., 0]`` tensor: the
    activation and dropout between the two layers then do no work (a full-width zero view still cost a
    materialised GELU, ~15 ms per block at batch 32), and :class:`ZeroLinear` reads only the leading shape.
    Weight and bias stay registered as in :class:`ZeroLinear`."""

    kernel = "skip"

    def forward(self, x: Tensor) -> Tensor:
        return x.new_empty(*x.shape[:-1], 0)


def conv1d_supported(conv: nn.Conv1d) -> bool:
    """Whether :class:`SparseConv1d` reproduces ``conv`` (grouped convolutions are left dense)."""
    return isinstance(conv, nn.Conv1d) and conv.groups == 1


class SparseConv1d(SparseWeight):
    """``nn.Conv1d`` (groups 1) as im2col + one sparse product: ``[B, C, L] -> [B, C_out, L_out]``, contiguous.

    ``unfold`` turns the (padded) input into ``[C * k, B * L_out]`` columns, ordered like the flattened weight
    ``[C_out, C * k]``, so the whole batch is one sparse matrix product.
    """

    def __init__(self, conv: nn.Conv1d, layout: str = "csr", block: int | None = None) -> None:
        if not conv1d_supported(conv):
            raise ValueError(f"{conv} is not supported by SparseConv1d (grouped convolution)")
        super().__init__(conv.weight, conv.bias, layout, block)
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.dilation = conv.kernel_size[0], conv.stride[0], conv.dilation[0]
        self.pad = _padding(conv)
        self.padding_mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:  # unbatched [C, L], as nn.Conv1d accepts
            return self.forward(x.unsqueeze(0)).squeeze(0)
        if any(self.pad):
            x = F.pad(x, self.pad, mode=self.padding_mode)
        span = self.dilation * (self.kernel_size - 1) + 1
        windows = x.unfold(2, span, self.stride)[..., :: self.dilation]  # [B, C, L_out, k], a view
        batch, channels, length, kernel = windows.shape
        columns = windows.permute(1, 3, 0, 2).reshape(channels * kernel, batch * length)
        out = self._matmul(columns).view(self.out_channels, batch, length).transpose(0, 1).contiguous()
        if self.bias is not None:
            out = out.add_(self.bias.unsqueeze(-1))
        return out


def _padding(conv: nn.Conv1d) -> tuple[int, int]:
    """``(left, right)`` padding of ``conv``, resolving ``"valid"`` and ``"same"`` as PyTorch does."""
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        total = conv.dilation[0] * (conv.kernel_size[0] - 1)
        return (total // 2, total - total // 2)
    padding = int(conv.padding[0])  # a tuple of ints once the strings are handled
    return (padding, padding)


def weight_of(module: nn.Module) -> Tensor:
    """``module.weight`` as a tensor (a ``Linear``/``Conv1d`` parameter, or a sparse layer's dense view)."""
    weight = module.weight
    if not isinstance(weight, Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor")
    return weight


def sparsify(module: nn.Module, layout: str = "csr", block: int | None = None) -> SparseWeight:
    """The sparse equivalent of a ``Linear`` or ``Conv1d`` ``module`` (weights with exact zeros) in ``layout``."""
    if isinstance(module, nn.Linear):
        return SparseLinear(module, layout, block).to(module.weight.device)
    if isinstance(module, nn.Conv1d):
        return SparseConv1d(module, layout, block).to(module.weight.device)
    raise TypeError(f"cannot sparsify a {type(module).__name__}: only nn.Linear and nn.Conv1d")


def densify(module: SparseWeight | ZeroLinear) -> nn.Module:
    """The dense ``nn.Linear``/``nn.Conv1d`` (zeros included) equivalent of a sparse layer."""
    weight, bias = module.weight, module.bias
    if isinstance(module, (SparseLinear, ZeroLinear)):
        dense: nn.Module = nn.Linear(module.in_features, module.out_features, bias=bias is not None)
    elif isinstance(module, SparseConv1d):
        left, right = module.pad
        padding: int | str = left if left == right else "same"
        mode = "zeros" if module.padding_mode == "constant" else module.padding_mode
        dense = nn.Conv1d(module.in_channels, module.out_channels, module.kernel_size, module.stride, padding,
                          module.dilation, bias=bias is not None, padding_mode=mode)
    else:
        raise TypeError(f"cannot densify a {type(module).__name__}")
    dense = dense.to(device=weight.device, dtype=weight.dtype)
    dense.weight = nn.Parameter(weight)
    if bias is not None:
        dense.bias = bias
    return dense
