"""Export a run as a PyTorch 2 package: ``torch.export`` traces it, AOTInductor compiles it to a ``.pt2`` file that
runs without tsprune's model code, and a sparse-compiled run keeps its sparse kernels in it.

What can be exported: a dense run, a magnitude-pruned run (dense weights with zeros), a DepGraph-pruned run (a
smaller dense model) and a run compiled for the sparse engine (``tsprune compile``). In the last, every layer the
plan put on tsprune's own kernel calls the custom op ``tsprune::sparse_linear``; the package calls it by name, so
the op library (the C++ kernel ``tsprune.sparse.kernel`` built here) is copied beside the package
(``<file>.ops.so``) and must be loaded before the package is (``torch.ops.load_library``). Layers the plan put on
torch's own CSR/BSR kernels cannot be traced (torch.export has no sparse layouts): they run on tsprune's kernel in
the package (the sidecar counts them).

Every export is checked before it is kept, as the ONNX export is (``tsprune.export``): the package's output on
real test windows must equal the run's own (eager PyTorch, seeded as ``tsprune evaluate``) within
:data:`~tsprune.export.TOLERANCE` relative. As for ONNX, Informer's key sampling is frozen to the indices a seeded
evaluation draws and Autoformer's and FEDformer's FFTs run as real-valued DFTs (see :func:`_deployable`). The
sidecar (``<file>.json``) is the ONNX export's, with format :data:`PT2_FORMAT`, the op library's name and sha256,
and the torch version the package was compiled with (a package runs on that version).

Loading a package (:class:`Pt2Forecaster`) checks the op library's hash before loading it (a library is code),
and turns a corrupt package or a missing library into one line.
"""

from __future__ import annotations

import contextlib
import copy
import io
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tsprune.errors import TsPruneError, exception_line
from tsprune.export import (
    CHECK_WINDOWS,
    INPUTS,
    TOLERANCE,
    Exported,
    _sha256_file,
    sidecar_path,
    sidecar_payload,
)
from tsprune.runtime import atomic_write_json, seeded_inference

if TYPE_CHECKING:  # pragma: no cover
    from tsprune.run import Run

PT2_FORMAT = "tsprune-pt2/1"
SUFFIX = ".pt2"  # AOTInductor writes and reads packages by this suffix


def library_path(path: str | Path) -> Path:
    """Where the op library of package ``path`` goes: beside it, ``path + '.ops.so'``."""
    return Path(str(path) + ".ops.so")


def _deployable(run: Run, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.nn.Module, int]:
    """A copy of the run's model in eval mode, its FFTs as real-valued DFTs and Informer's sampling frozen, and how
    many of its layers were moved from torch's CSR/BSR kernels to tsprune's. AOTInductor (torch 2.13) fails to
    generate the C++ call of FEDformer's complex FFT fallbacks ("AssertionError: got <class 'float'>"); the
    real-valued DFTs of the ONNX export (``models.layers.real_dft``) compile, and compute the same to float
    rounding. torch.export has no sparse layouts, so a layer the plan put on torch's CSR or BSR kernel (it measured
    faster there at compile time) runs on tsprune's kernel in the package: the same weights, another format."""
    from tsprune.models.layers.fourier import freeze_mode_layout
    from tsprune.models.layers.prob_attention import freeze_sampling
    from tsprune.models.layers.real_dft import use_real_dft
    from tsprune.sparse import kernel
    from tsprune.sparse.layers import OWN_KERNEL, SparseWeight, densify, sparsify

    model = copy.deepcopy(run.model).cpu().eval()
    use_real_dft(model)
    freeze_mode_layout(model)  # FEDformer: the Fourier weights' relaid parts become the package's constants
    torch_layouts = [(name, module) for name, module in model.named_modules()
                     if isinstance(module, SparseWeight) and module.layout != OWN_KERNEL]
    if torch_layouts and not kernel.available():
        raise TsPruneError(f"{len(torch_layouts)} layer(s) of this compiled run use torch's CSR/BSR kernels, which "
                           f"torch.export cannot trace (first: {torch_layouts[0][0]}), and tsprune's kernel, which "
                           f"would replace them, cannot be built here ({kernel.reason()}): export where it builds")
    for name, module in torch_layouts:
        parent, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attribute, sparsify(densify(module), OWN_KERNEL))
    freeze_sampling(model, inputs, torch.device("cpu"))
    return model, len(torch_layouts)


def _op_library(run: Run) -> Path | None:
    """The op library a sparse-compiled run's package calls (None for a run without tsprune kernels)."""
    from tsprune.sparse import kernel
    from tsprune.sparse.layers import SparseWeight

    if not any(isinstance(m, SparseWeight) for m in run.model.modules()):
        return None
    if not kernel.available():
        raise TsPruneError(f"this run runs on tsprune's sparse kernel, which cannot be built here "
                           f"({kernel.reason()}): export it where the kernel builds")
    return kernel.library_file()


def export_pt2(source: Run | str | Path, path: str | Path, batch_size: int | None = None,
               windows: int = CHECK_WINDOWS) -> Exported:
    """Export ``source`` (a run or run directory) to the package ``path`` (``*.pt2``) plus ``path + '.json'``
    and, for a sparse-compiled run, ``path + '.ops.so'``; see the module doc. ``batch_size`` None exports a
    dynamic batch dimension."""
    from tsprune.measure import example_inputs
    from tsprune.run import Run, load_run

    out = Path(path)
    if out.suffix != SUFFIX:
        raise TsPruneError(f"a PyTorch 2 package is a {SUFFIX} file, got {out.name}: name it e.g. model{SUFFIX}")
    run = source if isinstance(source, Run) else load_run(source)
    data = run.data()
    started = time.perf_counter()
    trace = example_inputs(data, 2 if batch_size is None else batch_size)
    library = _op_library(run)
    model, relaid = _deployable(run, trace)
    dynamic = None
    if batch_size is None:
        batch = torch.export.Dim("batch", min=1)
        dynamic = tuple({0: batch} for _ in INPUTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as staging:
        package = Path(staging) / out.name
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
                warnings.simplefilter("ignore")
                program = torch.export.export(model, trace, dynamic_shapes=dynamic)
                torch._inductor.aoti_compile_and_package(program, package_path=str(package))
        except TsPruneError:
            raise
        except Exception as exc:  # export and inductor raise many types; each becomes one line
            raise TsPruneError(f"{run.config.model.name} cannot be packaged with torch.export/AOTInductor: "
                               f"{exception_line(exc)}") from None
        count = min(windows, data.n_windows("test")) if batch_size is None else batch_size
        check = example_inputs(data, count)
        with seeded_inference(torch.device("cpu")):
            expected = run.model.cpu().eval()(*check).numpy()
        got = _load_package(package)(*check)
        got = got.detach().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
        difference = float(np.abs(got - expected).max() / max(float(np.abs(expected).max()), 1e-12))
        if not difference <= TOLERANCE:
            raise TsPruneError(f"the packaged {run.config.model.name} differs from PyTorch by {difference:.2e} "
                               f"(relative) on {count} test windows, more than {TOLERANCE:g}: not kept")
        if library is not None:
            shutil.copyfile(library, Path(staging) / library_path(out).name)
            Path(staging, library_path(out).name).replace(library_path(out))
        package.replace(out)  # same file system: atomic, and the package appears only once checked
    check_facts = {"windows": count, "split": "test", "max_rel_diff": difference, "tolerance": TOLERANCE}
    ops = None if library is None else {"file": library_path(out).name, "op": "tsprune::sparse_linear",
                                        "sha256": _sha256_file(library_path(out)), "moved_from_torch_kernels": relaid}
    payload = {**sidecar_payload(run, batch_size, check_facts, opset=0), "format": PT2_FORMAT,
               "torch": torch.__version__, "op_library": ops}
    payload.pop("opset", None)  # an ONNX notion
    sidecar = sidecar_path(out)
    atomic_write_json(sidecar, payload)
    return Exported(out, sidecar, difference, count, time.perf_counter() - started)


def _load_package(path: Path) -> Any:
    """AOTInductor's runner for package ``path`` (its op library already loaded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch._inductor.aoti_load_package(str(path))
    except Exception as exc:  # a truncated zip, a package of another torch, a missing op: all one line
        raise TsPruneError(f"{path} is not a loadable PyTorch 2 package ({exception_line(exc)}): export it again "
                           "with `tsprune export`") from None


def _load_library(file: Path, sha256: str) -> None:
    """Load op library ``file`` (its hash ``sha256`` checked by the caller) unless this process has it already.
    A namespace registers once per process: loading a second copy of the library would abort the process, so a
    loaded library with the same hash (tsprune's own build, or the copy loaded before) is used as it is, and one
    with another hash is an error."""
    loaded = [Path(name) for name in torch.ops.loaded_libraries if Path(name).is_file()]
    if any(_sha256_file(path) == sha256 for path in loaded):
        return
    try:
        torch.ops.tsprune.sparse_linear  # noqa: B018 - resolving the op tells whether the namespace is registered
    except (AttributeError, RuntimeError):
        torch.ops.load_library(str(file))
        return
    raise TsPruneError(f"this process already runs another build of tsprune's op library than {file.name}: load "
                       "the package in a fresh process")


class Pt2Forecaster:
    """An exported package: ``forecaster(x_enc, x_mark_enc, x_dec, x_mark_dec) -> [B, pred_len, c_out]`` (numpy,
    scaled), with the sidecar's checks of batch size and of the op library."""

    def __init__(self, path: str | Path) -> None:
        from tsprune.export import read_sidecar

        self.path = Path(path)
        if not self.path.is_file():
            command = f"`tsprune export RUN_DIR --out {self.path}`"  # a .pt2 name chooses the format
            raise TsPruneError(f"{self.path} not found: export the run first ({command})")
        self.sidecar = read_sidecar(self.path, PT2_FORMAT)
        library = self.sidecar.get("op_library")
        if library:
            file = self.path.parent / str(library["file"])
            if not file.is_file():
                raise TsPruneError(f"{self.path} needs its op library {file.name} beside it, which is missing: copy "
                                   "it with the package or export again")
            if _sha256_file(file) != library.get("sha256"):
                raise TsPruneError(f"{file} is not the op library {self.path.name} was exported with (sha256 "
                                   "differs): copy the one exported with it or export again")
            _load_library(file, str(library["sha256"]))
        self.runner = _load_package(self.path)

    def check_run(self, run: Run) -> None:
        from tsprune.export import weights_digest

        expected = (self.sidecar.get("run") or {}).get("weights_sha256")
        if run.path is not None and expected and weights_digest(run.path) != expected:
            raise TsPruneError(f"{self.path} was exported from another run than {run.path}: export this run")

    def __call__(self, *inputs: torch.Tensor | np.ndarray) -> np.ndarray:
        fixed = self.sidecar.get("batch_size")
        # contiguous: the package's kernels were compiled for the traced (contiguous) layout and read memory as
        # such; a strided view (a window sliced out of a longer series) would be read wrongly, silently
        tensors = [torch.as_tensor(np.asarray(t.cpu() if isinstance(t, torch.Tensor) else t, dtype=np.float32))
                   .contiguous() for t in inputs]
        if fixed is not None and tensors[0].shape[0] != fixed:
            raise TsPruneError(f"{self.path} was exported for batch size {fixed}, got {tensors[0].shape[0]}: export "
                               "with a dynamic batch (no batch_size)")
        with torch.inference_mode():
            return self.runner(*tensors).numpy()
