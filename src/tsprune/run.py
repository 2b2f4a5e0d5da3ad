"""A run directory: ``model.safetensors`` + ``config.json`` + ``metrics.json``, and the ``Run`` object around it.

Nothing here unpickles: weights are safetensors, everything else JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tsprune._version import __version__
from tsprune.config import RunConfig, read_json, write_json
from tsprune.data.dataset import ForecastData, Scaler, output_channels, prepare_data
from tsprune.errors import TsPruneError, exception_line
from tsprune.runtime import atomic_path
from tsprune.measure import environment as measurement_environment
from tsprune.models.base import Forecaster
from tsprune.models.registry import build_model
from tsprune.models.shapes import apply_architecture
from tsprune.sparse.engine import apply_plan, read_plan

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METRICS = "metrics.json"
FORMAT = "tsprune-run/1"


@dataclass
class Run:
    """A trained (or pruned) forecaster with the configuration and data pipeline it was trained with."""

    config: RunConfig
    model: Forecaster
    scaler: Scaler
    columns: list[str]
    freq: str
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    # Shapes and attention settings of a structurally pruned model (None: the dense architecture of ``config``).
    architecture: dict[str, Any] | None = None
    # Which pruned layers run on sparse kernels (``tsprune compile``); None: all dense.
    sparse_plan: dict[str, Any] | None = None

    def data(self, **overrides: Any) -> ForecastData:
        """The run's data pipeline (stored scaler statistics), optionally with DataConfig fields overridden."""
        cfg = self.config.data if not overrides else type(self.config.data)(**{**vars(self.config.data), **overrides})
        data = prepare_data(cfg, scaler=self.scaler)
        if data.columns != self.columns:
            raise TsPruneError(f"the data's columns {data.columns} differ from the run's {self.columns}")
        return data

    @property
    def output_channels(self) -> slice:
        """Which of :attr:`columns` the model forecasts (``data.dataset.output_channels``): index the columns, the
        scaler's statistics or ``[..., channels]`` values with it."""
        return output_channels(len(self.columns), self.config.model.c_out)

    @property
    def output_columns(self) -> list[str]:
        """The names of the forecast channels, in the order of the model's output."""
        return self.columns[self.output_channels]


def environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What a training or pruning ran on (:func:`tsprune.measure.environment` plus the tsprune version), so its
    timings can be put in context."""
    return {"tsprune": __version__, **measurement_environment(device)}


def save_run(run: Run, out: Path, extra_config: dict[str, Any] | None = None) -> Path:
    """Write the three files of a run directory (config and metrics atomically)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {name: value.detach().cpu().contiguous().clone() for name, value in run.model.state_dict().items()}
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "model": run.config.model.name})
    payload = {"format": FORMAT, **run.config.to_dict(),
               "pipeline": {"columns": run.columns, "freq": run.freq, "scaler": run.scaler.to_dict()},
               **({"architecture": run.architecture} if run.architecture is not None else {}),
               **({"sparse_plan": run.sparse_plan} if run.sparse_plan else {}),
               **(extra_config or {})}
    write_json(out / CONFIG, payload)
    write_json(out / METRICS, run.metrics)
    run.path = out
    return out


def load_run(path: str | Path) -> Run:
    """Rebuild the model from ``config.json`` and load its weights; a foreign or corrupt directory is a clear error."""
    path = Path(path)
    if not path.is_dir():
        raise TsPruneError(f"run directory {path} not found")
    raw = read_json(path / CONFIG)
    if raw.get("format") != FORMAT:
        raise TsPruneError(f"{path / CONFIG} is not a tsprune run config (format {raw.get('format')!r})")
    config = RunConfig.from_dict({key: raw[key] for key in ("data", "model", "train") if key in raw})
    pipeline = raw.get("pipeline") or {}
    try:
        scaler = Scaler.from_dict(pipeline["scaler"])
        columns, freq = list(pipeline["columns"]), str(pipeline["freq"])
    except (KeyError, TypeError) as exc:
        raise TsPruneError(f"{path / CONFIG} lacks the data pipeline ({exc}); the run directory is corrupt") from None
    model = build_model(config.model)
    architecture = raw.get("architecture")
    if architecture is not None:
        if not isinstance(architecture, dict):
            raise TsPruneError(f"{path / CONFIG} has a malformed architecture entry; the run directory is corrupt")
        apply_architecture(model, architecture)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise TsPruneError(f"{weights} not found: the run has no checkpoint")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise TsPruneError(f"{weights} is corrupt or not a safetensors checkpoint ({exc})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        # torch's first lines name the missing, unexpected or mis-shaped keys; the rest lists them all
        detail = exception_line(exc, limit=300, lines=3)
        raise TsPruneError(f"{weights} does not match the architecture in config.json: {detail}") from None
    sparse_plan = raw.get("sparse_plan")
    if sparse_plan:  # weights are stored dense-with-zeros; the sparse layout is rebuilt from the plan
        sparse_plan = read_plan(sparse_plan)
        model = cast(Forecaster, apply_plan(model, sparse_plan))  # the sparse layers are set inside the forecaster
    metrics = read_json(path / METRICS) if (path / METRICS).is_file() else {}
    return Run(config, model, scaler, columns, freq, metrics, path, architecture, sparse_plan or None)
