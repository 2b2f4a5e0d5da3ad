"""Typed configuration: what to read (DataConfig), what to build (ModelConfig), how to train (TrainConfig).

Every run directory stores these three as JSON in ``config.json`` so the run can be rebuilt exactly.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tsprune.errors import TsPruneError
from tsprune.runtime import atomic_write_json

FEATURE_MODES = ("M", "S", "MS")
LR_SCHEDULES = ("constant", "halve", "cosine")


@dataclass
class DataConfig:
    """Which series to read, how to window it and how to split it.

    ``dataset`` is a built-in name (see ``tsprune datasets``) or ``None`` for a user CSV at ``data_path``.
    """

    dataset: str | None = "ETTh1"
    data_path: str | None = None
    target: str | None = None  # default: last column
    freq: str | None = None  # pandas offset alias; inferred from the date column when absent
    features: str = "M"  # M: multivariate -> multivariate, S: target -> target, MS: multivariate -> target
    seq_len: int = 96
    label_len: int = 48
    pred_len: int = 96
    train_fraction: float = 1.0  # keep the most recent fraction of the training split

    def validate(self) -> None:
        if self.features not in FEATURE_MODES:
            raise TsPruneError(f"unknown feature mode {self.features!r}: use one of {', '.join(FEATURE_MODES)}")
        for name in ("seq_len", "pred_len"):
            if getattr(self, name) < 1:
                raise TsPruneError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.label_len <= self.seq_len:
            raise TsPruneError(f"label_len must be between 0 and seq_len ({self.seq_len}), got {self.label_len}")
        if not 0.0 < self.train_fraction <= 1.0:
            raise TsPruneError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        if self.dataset is None and self.data_path is None:
            raise TsPruneError("no data given: set dataset (a name) or data_path (a CSV file)",
                               options=("dataset", "data_path"))


# Informer's ProbSparse output layouts (ModelConfig.prob_layout), the default first. "tslib" is the layout of the
# study's code and of every published Informer baseline; "paper" is the paper's attention (see prob_attention.py).
PROB_LAYOUTS = ("tslib", "paper")
# Names a config.json may hold from an earlier version, and what they are now.
LEGACY_PROB_LAYOUTS = {"reference": "tslib"}

# ModelConfig fields filled in from the prepared data, not hyper-parameters.
DATA_BOUND_FIELDS = ("enc_in", "dec_in", "c_out", "seq_len", "label_len", "pred_len", "n_time_features")


def _hyper(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def hyper_parameters() -> list[dataclasses.Field]:
    """The ModelConfig fields that are hyper-parameters (not the name, not what the data fixes), with their help."""
    return [spec for spec in fields(ModelConfig) if "help" in spec.metadata]


@dataclass
class ModelConfig:
    """Architecture of one forecaster. Fields a model does not use are ignored by it.

    ``enc_in``/``dec_in``/``c_out`` and the window lengths are filled in from the data.
    Defaults are the study's; a model's registry entry may override them (Crossformer does).
    """

    name: str = "Transformer"
    enc_in: int = 7
    dec_in: int = 7
    c_out: int = 7
    seq_len: int = 96
    label_len: int = 48
    pred_len: int = 96
    n_time_features: int = 4
    # Hyper-parameters: each is a `tsprune train` option (its help is the field's "help").
    d_model: int = _hyper(512, "Model width.")
    n_heads: int = _hyper(8, "Attention heads.")
    e_layers: int = _hyper(2, "Encoder layers.")
    d_layers: int = _hyper(1, "Decoder layers.")
    d_ff: int = _hyper(2048, "Feed-forward width.")
    dropout: float = _hyper(0.05, "Dropout rate.")
    factor: int = _hyper(3, "Attention factor (Informer's ProbSparse, Autoformer's top-k delays).")
    moving_avg: int = _hyper(25, "Decomposition kernel (Autoformer, FEDformer).")
    activation: str = _hyper("gelu", "gelu or relu.")
    distil: bool = _hyper(True, "Informer: halve the sequence between encoder layers.")
    # "tslib" flattens the ProbSparse output as the study's code (FEDformer/Autoformer/Time-Series-Library) does,
    # which mixes heads and positions; "paper" keeps each position's heads together (see prob_attention.py)
    prob_layout: str = _hyper("tslib", "Informer: tslib (default: ProbSparse outputs flattened as the study's code "
                                       "and the published baselines do, mixing heads and positions) or paper (the "
                                       "paper's attention).")
    modes: int = _hyper(64, "FEDformer: Fourier modes kept.")
    mode_select: str = _hyper("random", "FEDformer: random or low.")
    # the indices are also in the checkpoint
    mode_seed: int = _hyper(0, "FEDformer: seed of the random mode selection.")
    seg_len: int = _hyper(12, "Crossformer: segment length.")
    win_size: int = _hyper(2, "Crossformer: segments merged per encoder scale.")
    n_routers: int = _hyper(10, "Crossformer: routers of the cross-dimension stage.")
    patch_len: int = _hyper(16, "PatchTST: time steps per patch.")
    patch_stride: int = _hyper(8, "PatchTST: steps between patch starts.")

    def validate(self) -> None:
        if self.d_model % self.n_heads:
            raise TsPruneError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.activation not in ("gelu", "relu"):
            raise TsPruneError(f"activation must be gelu or relu, got {self.activation!r}")
        if self.prob_layout not in PROB_LAYOUTS:
            raise TsPruneError(f"prob_layout must be {' or '.join(PROB_LAYOUTS)}, got {self.prob_layout!r}")
        if self.mode_select not in ("random", "low"):
            raise TsPruneError(f"mode_select must be random or low, got {self.mode_select!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise TsPruneError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("d_model", "n_heads", "e_layers", "d_ff", "factor", "moving_avg", "modes", "seg_len", "patch_len",
                     "patch_stride"):
            if getattr(self, name) < 1:
                raise TsPruneError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class TrainConfig:
    """The study's protocol by default: Adam, batch 32, lr 1e-4 halved each epoch, 10 epochs, patience 3."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    lr_schedule: str = "halve"
    patience: int = 3
    max_steps: int | None = None  # cap on optimiser steps per epoch (quick runs)
    seed: int = 2021
    device: str = "auto"
    threads: int | None = None
    num_workers: int = 0

    def validate(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise TsPruneError(f"unknown lr schedule {self.lr_schedule!r}: use one of {', '.join(LR_SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise TsPruneError("epochs, batch_size and patience must each be at least 1")
        if self.lr <= 0:
            raise TsPruneError(f"lr must be positive, got {self.lr}")
        if self.max_steps is not None and self.max_steps < 1:
            raise TsPruneError(f"max_steps must be at least 1, got {self.max_steps}")


# How a pruned model is executed: dense kernels, or "sparse" (unstructured runs compiled for sparse kernels in the
# layers where those measure faster; structured runs have no zeros left to skip).
ENGINES = ("dense", "sparse")

# Where one pruning budget applies: "global" ranks every prunable weight (or channel) together; "uniform" gives
# every layer the same share (magnitude-layerwise for weights, depgraph scope "uniform" for channels).
SCOPES = ("global", "uniform")
# How structured pruning treats attention heads: "dims" keeps the same value dims in every head, "heads" removes
# whole heads.
HEAD_MODES = ("dims", "heads")
# How depgraph ranks channels: L2 magnitude (the study's), first-order Taylor |w * dL/dw|, or the diagonal-Fisher
# Hessian estimate w^2 * E[(dL/dw)^2] (Optimal Brain Damage), the last two on calibration windows.
IMPORTANCES = ("l2", "taylor", "hessian")
# Which weights a one-shot method compares when it chooses what to cut: each output row keeps the same share (the
# Wanda paper's group), each layer does, or one ranking over all prunable weights.
COMPARISONS = ("row", "layer", "global")


# How an unstructured pruning's masks come about while fine-tuning (PruneConfig.schedule; ``prune.recipes``): fixed
# before it ("oneshot"), or raised from dense to the target during it along Zhu & Gupta's cubic schedule ("gradual").
SCHEDULES = ("oneshot", "gradual")


# PruneConfig fields that change only how a pruned model is timed or run, never its weights: engine twins (the same
# pruning on the dense and the sparse engine) share one pruning, fine-tuning and evaluation.
TIMING_ONLY_FIELDS = ("latency_repeats", "engine", "timed")


def pruning_settings(prune: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a pruning that decide its weights: a PruneConfig as ``dataclasses.asdict`` (or a record's
    ``config.prune``) gives them, less :data:`TIMING_ONLY_FIELDS`. Two prune runs of one dense run with equal
    settings are engine twins; this is the one definition the sweep plan, the pruning cache and the measuring pass
    share."""
    return {key: value for key, value in prune.items() if key not in TIMING_ONLY_FIELDS}


@dataclass
class PruneConfig:
    """How to prune a trained run, fine-tune it and measure it.

    ``magnitude`` is the study's global unstructured magnitude pruning, ``magnitude-layerwise`` gives every tensor
    the same density, ``depgraph`` removes channels (Torch-Pruning; ``importance`` l2, taylor or hessian, ``scope``
    global or uniform per layer, ``heads`` keeps equal dims per head or removes whole heads); ``wanda``,
    ``sparsegpt`` and ``lamp`` are one-shot unstructured methods (``prune.oneshot``). ``density`` is the fraction
    of prunable weights kept (unstructured) or of parameters kept (depgraph). The one record per method
    (``prune.methods``) says which fields each method reads. ``distill`` and ``schedule`` shape the fine-tuning;
    a recipe (``prune.recipes``) names a combination of method, schedule, distillation and budget.
    """

    method: str = "magnitude"
    density: float = 0.5
    include_embeddings: bool = False
    include_fourier: bool = False
    iterative: bool = False  # magnitude: prune along 0.8^i down to density, fine-tuning after each step
    scope: str = "global"  # depgraph: global | uniform
    heads: str = "dims"  # depgraph: dims (equal channels per head) | heads (whole heads)
    round_to: int | None = None  # depgraph: channel counts in multiples of this; None: 8 for wide models, 1: exact
    timeout_s: float = 900.0  # depgraph: a pruner that runs longer is stopped and reported
    importance: str = "l2"  # depgraph: l2 | taylor | hessian
    calibration_windows: int = 128  # wanda, sparsegpt, depgraph taylor/hessian: training windows to calibrate on
    comparison: str = "row"  # wanda: row | layer | global; sparsegpt: row | layer
    damping: float = 0.1  # sparsegpt: added to the Hessian's diagonal, as a fraction of its mean (see prune.oneshot)
    finetune_epochs: int = 0
    finetune_lr: float | None = None  # default: the run's training lr
    finetune_max_steps: int | None = None
    # Fine-tuning loss = MSE to the target + distill * MSE to the dense parent's forecast (0: no teacher).
    distill: float = 0.0
    schedule: str = "oneshot"  # oneshot: masks fixed before fine-tuning; gradual: raised during it (SCHEDULES)
    gradual_every: int = 10  # gradual: optimiser steps between two mask updates
    gradual_ramp: float = 0.75  # gradual: share of the fine-tuning steps over which density falls to the target
    batch_sizes: tuple[int, ...] = (1, 32)  # latency is measured at each
    latency_repeats: int = 20
    timed: bool = True  # False: no latency timing at all (accuracy-only grids such as seeds-etth1); FLOPs still counted
    threads: int | None = None
    device: str = "auto"
    engine: str = "dense"  # dense: masked weights in dense kernels; sparse: compiled for the sparse engine

    def settings(self) -> dict[str, Any]:
        """This pruning's :func:`pruning_settings` (what decides its weights; engine twins have equal ones)."""
        return pruning_settings(dataclasses.asdict(self))

    def validate(self) -> None:
        """Checks of the fields themselves; those that depend on the method are ``prune.methods.check``'s."""
        if self.engine not in ENGINES:
            raise TsPruneError(f"unknown engine {self.engine!r}: use one of {', '.join(ENGINES)}")
        if not 0.0 < self.density <= 1.0:
            raise TsPruneError(f"density must be in (0, 1], got {self.density}")
        if self.scope not in SCOPES:
            raise TsPruneError(f"scope must be {' or '.join(SCOPES)}, got {self.scope!r}")
        if self.heads not in HEAD_MODES:
            raise TsPruneError(f"heads must be {' or '.join(HEAD_MODES)}, got {self.heads!r}")
        if self.finetune_epochs < 0:
            raise TsPruneError(f"finetune_epochs must be at least 0, got {self.finetune_epochs}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise TsPruneError(f"batch sizes must be positive, got {self.batch_sizes}")
        if self.latency_repeats < 1:
            raise TsPruneError(f"latency_repeats must be at least 1, got {self.latency_repeats}")
        if self.importance not in IMPORTANCES:
            raise TsPruneError(f"importance must be one of {', '.join(IMPORTANCES)}, got {self.importance!r}")
        if self.comparison not in COMPARISONS:
            raise TsPruneError(f"comparison must be one of {', '.join(COMPARISONS)}, got {self.comparison!r}")
        if self.calibration_windows < 1:
            raise TsPruneError(f"calibration_windows must be at least 1, got {self.calibration_windows}")
        if not self.damping > 0:
            raise TsPruneError(f"damping must be positive, got {self.damping}")
        if self.round_to is not None and self.round_to < 1:
            raise TsPruneError(f"round_to must be at least 1, got {self.round_to}")
        if not self.distill >= 0:
            raise TsPruneError(f"distill must be 0 or more (the weight of the dense parent's forecast), got "
                               f"{self.distill}")
        if self.schedule not in SCHEDULES:
            raise TsPruneError(f"unknown schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")
        if self.gradual_every < 1:
            raise TsPruneError(f"gradual_every must be at least 1, got {self.gradual_every}")
        if not 0.0 < self.gradual_ramp <= 1.0:
            raise TsPruneError(f"gradual_ramp must be in (0, 1], got {self.gradual_ramp}")


# Named training presets. ``study-text`` is the learning rate the study's paper reports; the default
# (``study-code``) is what its released code and the published baselines ran.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "study-code": {},
    "study-text": {"lr": 5e-4},
}


@dataclass
class RunConfig:
    """Everything needed to rebuild a run: data pipeline, model and training settings."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        return cls(
            data=from_dict(DataConfig, raw.get("data", {})),
            model=from_dict(ModelConfig, _current_model_names(raw.get("model", {}))),
            train=from_dict(TrainConfig, raw.get("train", {})),
        )


def _current_model_names(raw: Any) -> Any:
    """A saved model config with the names of today (``prob_layout`` "reference" is "tslib")."""
    if isinstance(raw, dict) and raw.get("prob_layout") in LEGACY_PROB_LAYOUTS:
        return {**raw, "prob_layout": LEGACY_PROB_LAYOUTS[raw["prob_layout"]]}
    return raw


def from_dict(cls: type, raw: dict[str, Any]) -> Any:
    """Build dataclass ``cls`` from ``raw``; an unknown key is an error that names it."""
    if not isinstance(raw, dict):
        raise TsPruneError(f"{cls.__name__} must be a mapping, got {type(raw).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise TsPruneError(f"unknown {cls.__name__} key(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return cls(**raw)


def replace_known(obj: Any, overrides: dict[str, Any]) -> Any:
    """``dataclasses.replace`` that ignores ``None`` values (CLI options left unset)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    known = {f.name for f in fields(obj)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise TsPruneError(f"unknown {type(obj).__name__} key(s): {', '.join(unknown)}")
    return dataclasses.replace(obj, **given)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (``runtime.atomic_write``), so a crash never leaves half a file."""
    atomic_write_json(path, payload)


def read_json(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TsPruneError(f"{path} not found: is this a tsprune run directory?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TsPruneError(f"{path} is not valid JSON ({exc}); the run directory is corrupt") from None
    if not isinstance(payload, dict):
        raise TsPruneError(f"{path} must hold a JSON object")
    return payload
