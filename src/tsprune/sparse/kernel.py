"""tsprune's own C++ CPU kernel for ``y = x Wᵀ + b`` with an unstructured-sparse ``W``, compiled on first use.

``pack(weight)`` compresses a dense ``[out, in]`` weight once into a column-panelled CSR (:class:`PackedWeight`);
``linear(x, packed, bias)`` computes ``x Wᵀ + b`` for ``x`` of shape ``[..., in]``. The kernel's design (data
layout, loop order, blocking, what bounds it) is the appendix at the top of ``csrc/sparse_linear.cpp``.

Building: the first call that needs the kernel compiles ``csrc/`` with ``torch.utils.cpp_extension`` (ninja, the
``CXX`` compiler or ``c++``; ``-O3 -fopenmp`` and no ``-march``: the instruction set is chosen at run time) into
``$TSPRUNE_CACHE/kernels/<key>`` (default ``~/.cache/tsprune``), where ``<key>`` is the torch and Python versions
and a hash of the sources and flags; later processes load that library without compiling. ``build()`` compiles
ahead of time (for ``make``/CI) and returns the seconds it took.

No compiler, ``TSPRUNE_NO_KERNEL_BUILD=1`` (as if there were none; an already built library still loads) or a
failed build: :func:`available` is ``False``, one warning says why, and callers keep using torch's sparse kernels.
Inference only: no autograd.

The op is ``torch.ops.tsprune.sparse_linear``, a CPU kernel with a fake (meta) implementation registered here once
the library loads, so models that call it run under FakeTensor, ``torch.compile`` (inductor calls the C++ kernel
from the compiled graph) and ``torch.export``; ``torch.library.opcheck`` checks the schema and the fake against the
kernel (tests/test_compile.py).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["ACTIVATIONS", "PackedWeight", "available", "build", "cache_dir", "isa", "library_file", "linear", "pack",
           "panel_width", "reason"]

CSRC = Path(__file__).parent / "csrc"
SOURCES = ("sparse_linear.cpp", "short_attention.cpp")
HEADERS = ("sparse_linear_isa.h", "vec_math.h")
NAME = "tsprune_sparse_linear"
OP = "tsprune::sparse_linear"  # the custom op the library defines (TORCH_LIBRARY in csrc/sparse_linear.cpp)
CFLAGS = ("-O3", "-fopenmp")
LDFLAGS = ("-fopenmp",)
NO_BUILD_ENV = "TSPRUNE_NO_KERNEL_BUILD"
CACHE_ENV = "TSPRUNE_CACHE"
ISAS = ("scalar", "avx2", "avx512")  # the kernel's codes 0, 1, 2
ACTIVATIONS = (None, "relu", "gelu")  # the epilogue's codes 0, 1, 2 (appendix D.8); gelu is exact (erf) GELU
TILE_TOKENS = 96  # tokens per tile of the AVX2 path (12 ymm accumulators); AVX-512 uses 128
ROW_PANEL_NNZ = 16  # target nonzeros of one row in one panel (appendix D.3)
L1_BYTES = 24 * 1024  # smallest transposed panel [panel, tile]: 3/4 of a 32 KiB L1d
L2_BYTES = 192 * 1024  # largest: 3/8 of a 512 KiB L2, the rest for partial sums and the weight stream

# per process: the library loads at most once, its fake kernel is registered at most once
_state: dict[str, object] = {"loaded": None, "reason": None, "fake": False}


class KernelUnavailable(RuntimeError):
    """The C++ kernel could not be built or loaded here (see :func:`reason`)."""


# ------------------------------------------------------------------------------------------------ building


def cache_dir() -> Path:
    """Where the compiled library lives: ``$TSPRUNE_CACHE/kernels/<key>`` (default ``~/.cache/tsprune``)."""
    root = os.environ.get(CACHE_ENV) or str(Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "tsprune")
    digest = hashlib.sha256(" ".join((NAME, *CFLAGS, *LDFLAGS)).encode())
    for name in (*SOURCES, *HEADERS):
        digest.update((CSRC / name).read_bytes())
    version = f"{torch.__version__}-py{sys.version_info.major}{sys.version_info.minor}"
    return Path(root).expanduser() / "kernels" / f"{version}-{digest.hexdigest()[:16]}"


def _compiler() -> str | None:
    """The C++ compiler a build would use (``$CXX`` or ``c++``), ``None`` when there is none (or builds are
    disabled with ``TSPRUNE_NO_KERNEL_BUILD=1``). Tests monkeypatch this to simulate a machine without one."""
    if os.environ.get(NO_BUILD_ENV, "") not in ("", "0"):
        return None
    return shutil.which(os.environ.get("CXX") or "c++")


@contextmanager
def _build_env(cxx: str) -> Iterator[None]:
    """``PATH`` with the ninja that the ``ninja`` package installed (the venv's bin may not be on ``PATH``) and
    ``CXX`` set to ``cxx``, for the duration of a build only."""
    saved = {key: os.environ.get(key) for key in ("PATH", "CXX")}
    try:
        import ninja  # type: ignore[import-untyped]  # the pinned build tool; without it torch looks on PATH

        os.environ["PATH"] = os.pathsep.join((ninja.BIN_DIR, saved["PATH"] or ""))
    except ImportError:
        pass
    os.environ["CXX"] = cxx
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _compile(directory: Path) -> None:
    cxx = _compiler()
    if cxx is None:
        why = f"{NO_BUILD_ENV} is set" if os.environ.get(NO_BUILD_ENV, "") not in ("", "0") else "no C++ compiler"
        raise KernelUnavailable(f"{why} and no built kernel in {directory}")
    from torch.utils import cpp_extension  # imported here: it is slow to import and only a build needs it

    directory.mkdir(parents=True, exist_ok=True)
    with _build_env(cxx), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about compiler versions it has not seen; a failure raises
        cpp_extension.load(name=NAME, sources=[str(CSRC / name) for name in SOURCES], extra_cflags=list(CFLAGS),
                           extra_ldflags=list(LDFLAGS), build_directory=str(directory), is_python_module=False,
                           verbose=False)


def _load(retry: bool = False) -> bool:
    """Load (building first if needed) the library once per process; ``False`` with one warning if impossible.

    A failed compilation leaves ``build-failed.txt`` beside the library, so later processes fall back at once
    instead of spending a build on the same sources again; ``retry`` (what :func:`build` does) ignores it."""
    if _state["loaded"] is None or (retry and not _state["loaded"]):
        directory = cache_dir()
        library, failed = directory / f"{NAME}.so", directory / "build-failed.txt"
        try:
            if library.is_file():
                torch.ops.load_library(str(library))
            elif failed.is_file() and not retry:
                raise KernelUnavailable(f"its build failed before ({failed.read_text().strip()[:120]}); "
                                        "kernel.build() tries again")
            else:
                try:
                    _compile(directory)  # loads the library it built
                except KernelUnavailable:
                    raise
                except Exception as exc:
                    failed.write_text(f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0]}\n")
                    raise
            _register_fake()
            _state.update(loaded=True, reason=None)
        except Exception as exc:  # a compiler error, a missing header, a corrupt library: all mean "fall back"
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            _state.update(loaded=False, reason=lines[0][:200])
            warnings.warn(f"tsprune: the C++ sparse kernel is unavailable ({_state['reason']}); callers fall back "
                          "to torch's sparse kernels", RuntimeWarning, stacklevel=3)
    return bool(_state["loaded"])


def _sparse_linear_fake(x: Tensor, ptr: Tensor, cols: Tensor, vals: Tensor, row_nnz: Tensor, out_features: int,
                        panel: int, bias: Tensor | None, isa: int = -1, tile: int = 0, activation: int = 0) -> Tensor:
    """What ``tsprune::sparse_linear`` returns, from metadata alone (FakeTensor, ``torch.compile``,
    ``torch.export``): a new contiguous ``[tokens, out_features]`` tensor of ``x``'s dtype and device, as the C++
    ``at::empty({T, N}, x.options())``. The C++ argument checks that need no data are repeated here, so a bad call
    fails when it is traced, not when the compiled graph runs. ``x [tokens, in]``, ``ptr [panels * out + 1]``,
    ``cols``/``vals [nnz]``, ``row_nnz [out + 1]``, ``bias [out]`` or ``None``."""
    def check(ok: bool | torch.SymBool, what: str) -> None:
        torch._check(ok, lambda: f"tsprune sparse kernel: {what}")

    check(x.dim() == 2 and x.dtype == torch.float32 and x.device.type == "cpu",
          f"x must be a 2-D float32 CPU tensor [tokens, in], got {tuple(x.shape)} {x.dtype} on {x.device}")
    check(out_features >= 0 and panel >= 1, "out_features >= 0 and panel >= 1 needed")
    check(0 <= activation < len(ACTIVATIONS), "activation must be 0 (none), 1 (relu) or 2 (gelu)")
    check(ptr.dtype == torch.int64, "ptr must be int64")
    check(ptr.numel() == torch.sym_max(1, -(-x.shape[1] // panel)) * out_features + 1, "ptr must be [panels * out + 1]")
    check(cols.dtype == torch.int32 and vals.dtype == torch.float32, "cols must be int32 and vals float32")
    check(cols.numel() == vals.numel(), "cols and vals must be of one length")
    check(row_nnz.dtype == torch.int64, "row_nnz must be int64")
    check(row_nnz.numel() == out_features + 1, "row_nnz must be [out + 1]")
    if bias is not None:
        check(bias.dtype == torch.float32, "bias must be float32")
        check(bias.numel() == out_features, "bias must be [out]")
    return x.new_empty(x.shape[0], out_features)


def _register_fake() -> None:
    """Register :func:`_sparse_linear_fake` for the op once the library has defined it (once per process). Called
    from this module, as the C++ ``set_python_module("tsprune.sparse.kernel")`` says; importing this module does it
    too when the library is already loaded (``torch.ops.load_library`` of a copy, as a deployed package does)."""
    if _state["fake"] or torch._C._dispatch_has_kernel_for_dispatch_key(OP, "CompositeImplicitAutograd"):
        return  # done, or a library built before the op had a CPU kernel (it runs eagerly only, and takes no fake)
    torch.library.register_fake(OP, _sparse_linear_fake)
    _state["fake"] = True


def library_file() -> Path:
    """The op library (``.so``) the kernel runs from, built if needed: ``torch.ops.load_library`` of it (or of a
    copy) gives another process ``torch.ops.tsprune.sparse_linear`` without tsprune's build. Raises
    :class:`KernelUnavailable` where the kernel cannot be built."""
    _require()
    return cache_dir() / f"{NAME}.so"


def available() -> bool:
    """Whether the C++ kernel is usable in this process (builds it on the first call if needed)."""
    return _load()


def reason() -> str | None:
    """Why the kernel is unavailable (the first line of the error), ``None`` if it loaded or was never tried."""
    return _state["reason"] if isinstance(_state["reason"], str) else None


def build() -> float:
    """Build (or load the already built) kernel now; seconds taken. Raises :class:`KernelUnavailable` if the build
    fails, so ``make``/CI see the error."""
    start = time.perf_counter()
    if not _load(retry=True):
        raise KernelUnavailable(f"tsprune sparse kernel build failed: {reason()}")
    return time.perf_counter() - start


def isa() -> str:
    """The instruction set the kernel runs on this CPU: ``"avx512"``, ``"avx2"`` or ``"scalar"``."""
    _require()
    return ISAS[int(torch.ops.tsprune.kernel_isa(-1))]


def _require() -> None:
    if not _load():
        raise KernelUnavailable(f"tsprune sparse kernel unavailable ({reason()}); check available() first")


# ------------------------------------------------------------------------------------------------ packing


def panel_width(in_features: int, density: float, tile: int = TILE_TOKENS) -> int:
    """Columns per panel (appendix D.3): about ``ROW_PANEL_NNZ`` nonzeros of a row per panel (so loading and
    storing a row's partial sums is amortised over enough FMAs), but at least ``L1_BYTES`` of transposed tile
    ``[panel, tile]`` float32 (L1-resident: it is what every FMA loads) and at most ``L2_BYTES`` (never past
    L2), rounded to 32 columns; then the fewest equal panels (multiples of 8) of at most that width cover ``in``.
    At 96 tokens: density 0.25 -> 64 columns, 0.107 -> 160, 0.05 -> 320, <= 0.03 -> 512."""
    lo, hi = max(8, L1_BYTES // (4 * tile)), max(8, L2_BYTES // (4 * tile))
    width = min(hi, max(lo, 32 * round(ROW_PANEL_NNZ / max(density, 1e-9) / 32)))
    if in_features <= width:
        return max(1, in_features)
    return 8 * math.ceil(math.ceil(in_features / math.ceil(in_features / width)) / 8)


@dataclass(frozen=True)
class PackedWeight:
    """A sparse weight ``[out, in]`` in the kernel's format, as plain CPU tensors (appendix D.1).

    Columns ``[p * panel, (p + 1) * panel)`` form panel ``p``; the nonzeros are ordered by (panel, row, column).
    ``ptr[p * out + o] : ptr[p * out + o + 1]`` are row ``o``'s nonzeros in panel ``p``: their columns relative to
    the panel start in ``cols`` and values in ``values``. ``row_nnz[o]`` counts row ``0..o-1``'s nonzeros (all
    panels), which balances the rows between threads.
    """

    ptr: Tensor  # int64 [panels * out + 1]
    cols: Tensor  # int32 [nnz]
    values: Tensor  # float32 [nnz]
    row_nnz: Tensor  # int64 [out + 1]
    out_features: int
    in_features: int
    panel: int

    @property
    def panels(self) -> int:
        return max(1, math.ceil(self.in_features / self.panel))

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def density(self) -> float:
        return self.nnz / max(1, self.out_features * self.in_features)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.ptr, self.cols, self.values, self.row_nnz))

    def dense(self) -> Tensor:
        """The dense ``[out, in]`` matrix, zeros included (the inverse of :func:`pack`), by one scatter: entry ``j``
        of (panel, row) bucket ``q`` (``ptr[q] <= j < ptr[q + 1]``) sits in row ``q % out``, column
        ``(q // out) * panel + cols[j]``."""
        entries = torch.arange(self.nnz, device=self.ptr.device)
        bucket = torch.searchsorted(self.ptr[1:], entries, right=True)
        matrix = self.values.new_zeros(self.out_features, self.in_features)
        rows, panels = bucket % self.out_features, torch.div(bucket, self.out_features, rounding_mode="floor")
        matrix[rows, panels * self.panel + self.cols.long()] = self.values
        return matrix


def pack(weight: Tensor, panel: int | None = None) -> PackedWeight:
    """Compress a dense ``[out, in]`` weight (zeros = pruned) into a :class:`PackedWeight`; ``panel`` columns per
    panel (default :func:`panel_width`). Float32 CPU copy, detached; exact zeros are dropped, everything else kept."""
    if weight.dim() != 2:
        raise ValueError(f"pack needs a 2-D weight [out, in], got shape {tuple(weight.shape)}")
    w = weight.detach().to("cpu", torch.float32)
    out, inp = w.shape
    rows, columns = w.nonzero(as_tuple=True)  # row-major order
    panel = panel_width(inp, rows.numel() / max(1, w.numel())) if panel is None else int(panel)
    if panel < 1:
        raise ValueError(f"panel must be >= 1, got {panel}")
    panels = max(1, math.ceil(inp / panel))
    bucket = torch.div(columns, panel, rounding_mode="floor") * out + rows  # (panel, row): the storage order
    bucket, order = torch.sort(bucket, stable=True)  # stable: columns stay ascending within a (panel, row)
    rows, columns = rows[order], columns[order]
    ptr = torch.zeros(panels * out + 1, dtype=torch.int64)
    ptr[1:] = torch.cumsum(torch.bincount(bucket, minlength=panels * out), 0)
    row_nnz = torch.zeros(out + 1, dtype=torch.int64)
    row_nnz[1:] = torch.cumsum(torch.bincount(rows, minlength=out), 0)
    return PackedWeight(ptr=ptr, cols=(columns % panel).to(torch.int32), values=w[rows, columns].contiguous(),
                        row_nnz=row_nnz, out_features=out, in_features=inp, panel=panel)


# ------------------------------------------------------------------------------------------------ running


def linear(x: Tensor, packed: PackedWeight, bias: Tensor | None = None, *, isa: str | None = None,
           tile: int = 0, activation: str | None = None) -> Tensor:
    """``act(x Wᵀ + b)``: ``x`` float32 ``[..., in]`` (any leading dims) -> ``[..., out]``, on
    ``torch.get_num_threads()`` threads. ``isa`` forces an instruction set (``"scalar"`` for tests; default: the
    best this CPU has), ``tile`` caps the tokens per tile (0: the register-budget maximum), ``activation``
    (``"relu"``, ``"gelu"``: exact GELU, or ``None``) is applied as the output is stored. Inference only."""
    _require()
    if torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)):
        raise RuntimeError("tsprune sparse kernel is inference only: call it under torch.inference_mode() or "
                           "torch.no_grad() (it computes no gradients)")
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise TypeError(f"tsprune sparse kernel needs a float32 CPU input, got {x.dtype} on {x.device}")
    if x.dim() < 1 or x.shape[-1] != packed.in_features:
        raise ValueError(f"input of shape {tuple(x.shape)} does not end in in_features={packed.in_features}")
    if bias is not None and tuple(bias.shape) != (packed.out_features,):
        raise ValueError(f"bias of shape {tuple(bias.shape)} for out_features={packed.out_features}")
    if isa is not None and isa not in ISAS:
        raise ValueError(f"unknown isa {isa!r}: use one of {', '.join(ISAS)} (or None: the best this CPU has)")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}: use relu, gelu or None")
    code = -1 if isa is None else ISAS.index(isa)
    flat = x.reshape(math.prod(x.shape[:-1]), packed.in_features).contiguous()  # [tokens, in]; a view if it can
    b = None if bias is None else bias.detach().to(torch.float32).contiguous()
    y = torch.ops.tsprune.sparse_linear(flat, packed.ptr, packed.cols, packed.values, packed.row_nnz,
                                        packed.out_features, packed.panel, b, code, tile,
                                        ACTIVATIONS.index(activation))
    return y.reshape(*x.shape[:-1], packed.out_features)


if hasattr(torch.ops.tsprune, "sparse_linear"):  # loaded before this module was imported: give it its fake
    _register_fake()

if __name__ == "__main__":  # `python -m tsprune.sparse.kernel`: build ahead of time (make install); never fails
    began = time.perf_counter()
    if available():  # compiles here unless the cache already has this build
        print(f"tsprune sparse kernel: ready ({isa()}) in {time.perf_counter() - began:.1f} s, in {cache_dir()}")
    else:
        print(f"tsprune sparse kernel: not built ({reason()}); the sparse engine uses torch's kernels")
