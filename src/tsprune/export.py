"""Export a run to ONNX, checked in ONNX Runtime, with a JSON sidecar that says how to feed it.

A dense run, a magnitude-pruned run (dense weights with zeros) and a DepGraph-pruned run (a smaller dense model,
rebuilt from its stored architecture) export the same way: ``torch.onnx.export(..., dynamo=True)``, the exporter
torch 2.13 recommends. Two rewrites make every model exportable without changing what it computes:

* Autoformer's and FEDformer's FFTs run as real-valued DFT matmuls (``models.layers.real_dft``): the exporter cannot
  translate complex-valued intermediate tensors. ONNX's ``DFT`` operator was tried and not kept: ONNX Runtime 1.32
  runs it one signal at a time on one thread, padded to a power of two (96 and 144 steps here), and both models
  ran ~2.2x slower with it than with the matmuls.
* Their series decomposition's moving average runs as one ``[L, L]`` averaging matrix
  (``decomposition.use_averaging_matrix``): ONNX Runtime's ``AveragePool`` took a third of their time.
* Informer's ProbSparse attention samples keys at random, in eval mode too; tsprune seeds that sampling, and the
  export fixes the very indices a seeded evaluation draws (``freeze_sampling``), so the file computes what
  ``tsprune evaluate`` and ``tsprune predict`` compute, reproducibly.

Every export is checked before it is kept: ONNX Runtime's outputs on real test windows must equal PyTorch's within
:data:`TOLERANCE` (max abs difference over max abs value), else the file is removed and the error says by how much.

The graph's inputs (all float32, scaled as in training; see :data:`INPUTS`) are the model's four tensors; its output
is the scaled forecast (:data:`INPUTS` and :data:`OUTPUT` are ``models.base.MODEL_INPUTS`` and ``MODEL_OUTPUT``).
The sidecar (``<file>.json``) carries what a caller needs without tsprune: column order, scaler statistics, the
calendar-feature recipe, the window lengths and the run's identity. Both files load with no code execution (ONNX
is protobuf, the sidecar JSON).

Running a file (:func:`onnx_forecaster`) builds its ONNX Runtime session once per version of the file, so repeated
predictions reuse it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import io
import json
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tsprune.errors import TsPruneError, exception_line
from tsprune.models.base import MODEL_INPUTS, MODEL_OUTPUT, ModelTensor
from tsprune.runtime import atomic_path, atomic_write_json, seeded_inference

if TYPE_CHECKING:  # pragma: no cover
    from tsprune.run import Run

ONNX_FORMAT = "tsprune-onnx/1"
TOLERANCE = 1e-4
CHECK_WINDOWS = 32
# What the sidecar adds to the model's own description of a tensor: where its columns are listed.
_SIDECAR_NOTES = {"x_enc": "columns in sidecar order"}


def _described(tensor: ModelTensor) -> tuple[str, str, str]:
    """``(name, shape, meaning)`` of one graph tensor, from the model's table plus the sidecar's note."""
    note = _SIDECAR_NOTES.get(tensor.name)
    return tensor.name, tensor.shape, f"{tensor.meaning}, {note}" if note else tensor.meaning


# The graph's inputs and output as (name, shape, meaning): the model's forward signature, in its order.
INPUTS = tuple(_described(tensor) for tensor in MODEL_INPUTS)
OUTPUT = _described(MODEL_OUTPUT)
EXTRA_HINT = "ONNX export needs the export extra: pip install -e '.[export]' (make install includes it)"


def _require_onnx() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise TsPruneError(EXTRA_HINT) from None
    return onnxruntime


@dataclass
class Exported:
    path: Path
    sidecar: Path
    max_rel_diff: float  # ONNX Runtime vs PyTorch on the check windows
    windows: int
    seconds: float


def exportable(run: Run, inputs: tuple[torch.Tensor, ...]) -> torch.nn.Module:
    """A copy of the run's model that the exporter can translate and that computes what the model computes under
    tsprune's seeded evaluation: real-valued DFTs, moving averages as matrices, and ProbSparse sample indices fixed
    from one seeded pass."""
    from tsprune.models.layers.decomposition import use_averaging_matrix
    from tsprune.models.layers.prob_attention import freeze_sampling
    from tsprune.models.layers.real_dft import use_real_dft

    model = copy.deepcopy(run.model).cpu().eval()
    use_real_dft(model)
    use_averaging_matrix(model)
    freeze_sampling(model, inputs, torch.device("cpu"))
    return model


def _operator(exc: BaseException) -> str:
    """The operator an exporter error names (``aten.unsqueeze``), or ''."""
    text = " ".join(str(e) for e in _chain(exc))
    found = re.search(r"op='(aten\.[\w.]+)'", text) or re.search(r"torch\.ops\.(aten\.[\w.]+)", text)
    return found.group(1) if found else ""


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return seen


def _opset(program: Any) -> int:
    """The standard-domain opset of the program ``torch.onnx.export`` returned, the one the file declares (0 if
    the exporter returned none)."""
    imports = getattr(getattr(program, "model", None), "opset_imports", None) or {}
    return int(imports.get("", imports.get("ai.onnx", 0)))


def _sha256_file(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


FileVersion = tuple[int, int, int, int]


def file_version(path: Path) -> FileVersion:
    """What tells one version of a file from another: ``(inode, size, modification time, change time)``, the
    times in ns. Caches of what a file holds key on it, so a rewritten file is read again. The one change this
    would miss, a rewrite in place to the same size within one tick of the file-system clock, does not happen to
    tsprune's files: they are written to a new file and renamed (a new inode). Raises OSError for a missing file."""
    info = path.stat()
    return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


@functools.lru_cache(maxsize=64)
def _version_digest(path: str, version: FileVersion) -> str:
    """sha256 of one version of a file; ``version`` only keys the cache."""
    return _sha256_file(Path(path))


def weights_digest(run_dir: Path) -> str:
    """sha256 of the run's weights file: ties an exported file to the run it came from.

    Read once per version of the file (:func:`file_version`): checking the same run again, as every
    ``predict --engine onnx`` does, costs a ``stat``, and rewritten weights are hashed again, so a changed run still
    fails the check.
    """
    from tsprune.run import WEIGHTS

    path = (Path(run_dir) / WEIGHTS).resolve()
    try:
        version = file_version(path)
    except OSError:
        raise TsPruneError(f"{run_dir} has no readable {WEIGHTS}: is it a run directory?") from None
    return _version_digest(str(path), version)


def time_feature_recipe(freq: str) -> dict[str, Any]:
    """The sidecar's calendar-feature section: the features of ``freq`` in input column order and their formulas,
    as the data module defines them (``data.timefeatures.FEATURES``)."""
    from tsprune.data.timefeatures import feature_formulas

    formulas = feature_formulas(freq)
    return {"freq": freq, "features": list(formulas), "formulas": formulas,
            "recipe": "each feature is one calendar field of the row's timestamp scaled to [-0.5, 0.5]; formulas "
                      "gives them in the column order of x_mark_enc and x_mark_dec"}


def sidecar_payload(run: Run, batch_size: int | None, check: dict[str, Any], opset: int) -> dict[str, Any]:
    from tsprune.run import environment

    cfg, metrics = run.config, run.metrics
    return {
        "format": ONNX_FORMAT,
        "inputs": [{"name": name, "shape": shape, "dtype": "float32", "meaning": meaning}
                   for name, shape, meaning in INPUTS],
        "output": {"name": OUTPUT[0], "shape": OUTPUT[1], "dtype": "float32", "meaning": OUTPUT[2]},
        "batch_size": batch_size,  # None: any batch size
        "seq_len": cfg.model.seq_len, "label_len": cfg.model.label_len, "pred_len": cfg.model.pred_len,
        "columns": run.columns, "output_columns": run.output_columns,
        "scaler": {**run.scaler.to_dict(), "formula": run.scaler.FORMULA},
        "time_features": time_feature_recipe(run.freq),
        "run": {"path": str(run.path) if run.path is not None else None, "model": cfg.model.name,
                "method": metrics.get("method", "dense"), "target_density": metrics.get("target_density", 1.0),
                "weights_sha256": weights_digest(run.path) if run.path is not None else None},
        "check": check, "opset": opset, "environment": environment("cpu"),
    }


def export_run(source: Run | str | Path, path: str | Path, batch_size: int | None = None,
               windows: int = CHECK_WINDOWS) -> Exported:
    """Export ``source`` (a run or run directory) to the ONNX file ``path`` plus ``path + '.json'``.

    ``batch_size`` None exports a dynamic batch dimension; an int fixes it. The export is checked on the first
    ``windows`` test windows (at ``batch_size`` when fixed) before it is kept; see the module doc.
    """
    from tsprune.measure import example_inputs
    from tsprune.run import Run, load_run

    ort = _require_onnx()
    run = source if isinstance(source, Run) else load_run(source)
    if run.sparse_plan:
        raise TsPruneError("this run is compiled for tsprune's sparse kernels, which ONNX does not have: export "
                           "the run it was compiled from")
    out = Path(path)
    data = run.data()
    started = time.perf_counter()
    trace = example_inputs(data, 2 if batch_size is None else batch_size)  # checks batch_size
    model = exportable(run, trace)
    out.parent.mkdir(parents=True, exist_ok=True)
    dynamic = None
    if batch_size is None:
        batch = torch.export.Dim("batch", min=1)
        dynamic = tuple({0: batch} for _ in INPUTS)
    with atomic_path(out) as staging:
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                program = torch.onnx.export(model, trace, str(staging), dynamo=True, external_data=False,
                                            input_names=[name for name, _, _ in INPUTS], output_names=[OUTPUT[0]],
                                            dynamic_shapes=dynamic, verbose=False)
        except Exception as exc:  # the exporter raises many types; each becomes one line naming the operator
            operator = _operator(exc)
            where = f" at operator {operator}" if operator else ""
            raise TsPruneError(f"{run.config.model.name} cannot be exported to ONNX{where}: {exception_line(exc)}") \
                from None
        session = _session(ort, staging, threads=None)
        count = min(windows, data.n_windows("test")) if batch_size is None else batch_size
        check = example_inputs(data, count)
        with seeded_inference(torch.device("cpu")):
            expected = run.model.cpu().eval()(*check).numpy()
        got = session.run(None, {name: t.numpy() for (name, _, _), t in zip(INPUTS, check)})[0]
        difference = float(np.abs(got - expected).max() / max(float(np.abs(expected).max()), 1e-12))
        if not difference <= TOLERANCE:
            raise TsPruneError(f"the exported {run.config.model.name} differs from PyTorch by {difference:.2e} "
                               f"(relative) on {count} test windows, more than {TOLERANCE:g}: not kept")
    check_facts = {"windows": count, "split": "test", "max_rel_diff": difference, "tolerance": TOLERANCE}
    sidecar = sidecar_path(out)
    atomic_write_json(sidecar, sidecar_payload(run, batch_size, check_facts, _opset(program)))
    return Exported(out, sidecar, difference, count, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------------- running


def _session(ort: Any, path: Path, threads: int | None) -> Any:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own error types for corrupt or foreign files
        raise TsPruneError(f"{path} is not a loadable ONNX model ({exception_line(exc)}): export it again with "
                           "`tsprune export`") from None


def sidecar_path(path: str | Path) -> Path:
    """Where the sidecar of ONNX file ``path`` is: beside it, ``path + '.json'``."""
    return Path(str(path) + ".json")


def read_sidecar(path: str | Path, expected: str = ONNX_FORMAT) -> dict[str, Any]:
    """The sidecar of exported file ``path`` (:func:`sidecar_path`), checked to be of format ``expected`` (ONNX's,
    or ``export_pt2.PT2_FORMAT``); JSON only, nothing executes."""
    sidecar = sidecar_path(path)
    try:
        payload = json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TsPruneError(f"{sidecar} not found: export with `tsprune export`, which writes it beside the model") \
            from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TsPruneError(f"{sidecar} is corrupt ({exc}): export again with `tsprune export`") from None
    if not isinstance(payload, dict) or payload.get("format") != expected:
        raise TsPruneError(f"{sidecar} is not a tsprune {expected} sidecar (format "
                           f"{payload.get('format') if isinstance(payload, dict) else None!r})")
    return payload


class OnnxForecaster:
    """An exported run in ONNX Runtime: ``forecaster(x_enc, x_mark_enc, x_dec, x_mark_dec) -> [B, pred_len, c_out]``
    (numpy, scaled), with the sidecar's checks of batch size and shapes."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        ort = _require_onnx()
        self.path = Path(path)
        if not self.path.is_file():
            raise TsPruneError(f"{self.path} not found: export the run first (`tsprune export RUN_DIR --out "
                               f"{self.path}`)")
        self.sidecar = read_sidecar(self.path)
        self.session = _session(ort, self.path, threads)
        names = [item.name for item in self.session.get_inputs()]
        if names != [name for name, _, _ in INPUTS]:
            raise TsPruneError(f"{self.path} has inputs {names}, not the four tsprune exports")

    def check_run(self, run: Run) -> None:
        """Refuse a file exported from another run (its weights' sha256 is in the sidecar). The run's weights are
        read once per version of its file (:func:`weights_digest`), not on every prediction."""
        expected = (self.sidecar.get("run") or {}).get("weights_sha256")
        if run.path is not None and expected and weights_digest(run.path) != expected:
            raise TsPruneError(f"{self.path} was exported from another run than {run.path}: export this run")

    def __call__(self, *inputs: torch.Tensor | np.ndarray) -> np.ndarray:
        fixed = self.sidecar.get("batch_size")
        arrays = [np.asarray(t.cpu().numpy() if isinstance(t, torch.Tensor) else t, dtype=np.float32)
                  for t in inputs]
        if fixed is not None and arrays[0].shape[0] != fixed:
            raise TsPruneError(f"{self.path} was exported for batch size {fixed}, got {arrays[0].shape[0]}: export "
                               "with a dynamic batch (no batch_size)")
        return self.session.run(None, {name: a for (name, _, _), a in zip(INPUTS, arrays)})[0]


def onnx_forecaster(path: str | Path, threads: int | None = None) -> OnnxForecaster:
    """The :class:`OnnxForecaster` of ONNX file ``path``, built once per version of the file and its sidecar
    (:func:`file_version`): building one loads and optimises the graph in ONNX Runtime, which every
    ``predict --engine onnx`` would otherwise repeat. A re-exported file (new files, renamed into place) gets a
    new one. Files that are missing or unreadable raise the forecaster's own errors, and nothing is cached."""
    path = Path(path)
    try:
        versions = (file_version(path), file_version(sidecar_path(path)))
    except OSError:
        return OnnxForecaster(path, threads)  # raises what is wrong (not found, no sidecar)
    return _cached_forecaster(str(path), str(path.resolve()), threads, versions)


@functools.lru_cache(maxsize=4)  # each holds a session (the model's weights); old versions fall out
def _cached_forecaster(path: str, resolved: str, threads: int | None,
                       versions: tuple[FileVersion, FileVersion]) -> OnnxForecaster:
    """``OnnxForecaster(path, threads)``; ``resolved`` (a relative ``path`` seen from another working directory
    is another file) and ``versions`` only key the cache."""
    return OnnxForecaster(path, threads)
