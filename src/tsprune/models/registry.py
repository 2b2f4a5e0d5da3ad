"""Name -> forecaster class, default hyper-parameters and a one-line summary. The one place models are listed.

Importing this module imports no model and no torch: a spec names its class by module path, loaded when a model
is built, so commands that only read specs (``tsprune models``, ``sweep plan``) start fast.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tsprune.config import ModelConfig
from tsprune.errors import TsPruneError

if TYPE_CHECKING:  # pragma: no cover
    from tsprune.models.base import Forecaster

COMMON_FIELDS = ("d_model", "n_heads", "e_layers", "d_ff", "dropout", "activation")
STUDY, SMALL = "study", "small"
GROUPS = (STUDY, SMALL)
# The Time-Series-Library's (and iTransformer's) default dropout, where the study's scripts set 0.05
SMALL_DROPOUT = 0.1


@dataclass(frozen=True)
class ModelSpec:
    name: str
    target: str  # "module:Class" of the forecaster
    summary: str
    defaults: dict[str, Any] = field(default_factory=dict)  # overrides of ModelConfig's study defaults
    uses: tuple[str, ...] = ()  # hyper-parameters this model reads (shown by `tsprune models`), not data-bound ones
    # "study": one of the study's five forecasters, which the study presets prune; "small": a small forecaster a
    # practitioner would train instead of pruning a large one (issue 32's frontier), with its published source
    group: str = STUDY
    # Whether structured pruning finds channels to remove. DLinear has none: its maps' rows are forecast steps and
    # their columns look-back steps. Structured methods refuse such a model, and sweeps plan no structured run for it.
    channels: bool = True

    @property
    def cls(self) -> type[Forecaster]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


# The study's five in its order, then the small forecasters.
SPECS: tuple[ModelSpec, ...] = (
    ModelSpec("Transformer", "tsprune.models.transformer:Transformer",
              "Vanilla encoder-decoder Transformer with full (decoder: causal) self-attention",
              uses=COMMON_FIELDS + ("d_layers",)),
    ModelSpec("Informer", "tsprune.models.informer:Informer",
              "ProbSparse self-attention (top-u queries) + distilling conv layers halving the encoder sequence",
              uses=COMMON_FIELDS + ("d_layers", "factor", "distil", "prob_layout")),
    ModelSpec("Autoformer", "tsprune.models.autoformer:Autoformer",
              "Series decomposition + Auto-Correlation (FFT period discovery, time-delay aggregation)",
              uses=COMMON_FIELDS + ("d_layers", "factor", "moving_avg")),
    ModelSpec("FEDformer", "tsprune.models.fedformer:FEDformer",
              "Series decomposition + Fourier-enhanced blocks on a fixed set of frequency modes (FEDformer-f)",
              uses=COMMON_FIELDS + ("d_layers", "moving_avg", "modes", "mode_select", "mode_seed")),
    ModelSpec("Crossformer", "tsprune.models.crossformer:Crossformer",
              "segment-wise embedding, two-stage (time, then router-based cross-channel) attention, hierarchical "
              "encoder-decoder",
              defaults={"d_model": 256, "d_ff": 512, "n_heads": 4, "e_layers": 3, "dropout": 0.2, "seg_len": 12,
                        "win_size": 2, "n_routers": 10},
              uses=("d_model", "n_heads", "e_layers", "d_ff", "dropout", "seg_len", "win_size", "n_routers")),
    # The small forecasters, each at its published ETTh1/96 configuration (cited in its module's docstring).
    ModelSpec("DLinear", "tsprune.models.dlinear:DLinear",
              "moving-average decomposition, then one Linear over time per part (trend, seasonal), shared by channels",
              uses=("moving_avg",), group=SMALL, channels=False),
    ModelSpec("PatchTST", "tsprune.models.patchtst:PatchTST",
              "channel-independent: each series cut into patches (the tokens), a Transformer encoder, a flatten head",
              defaults={"d_model": 512, "d_ff": 2048, "n_heads": 2, "e_layers": 1, "dropout": SMALL_DROPOUT},
              uses=COMMON_FIELDS + ("patch_len", "patch_stride"), group=SMALL),
    ModelSpec("iTransformer", "tsprune.models.itransformer:iTransformer",
              "inverted: each variate's whole look-back is one token; attention mixes variates",
              defaults={"d_model": 256, "d_ff": 256, "n_heads": 8, "e_layers": 2, "dropout": SMALL_DROPOUT},
              uses=COMMON_FIELDS, group=SMALL),
)
_REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in SPECS}


def model_names(group: str | None = None) -> list[str]:
    """Every registered model, or those of one ``group`` (``study``: the study's five, in its order)."""
    if group is not None and group not in GROUPS:
        raise TsPruneError(f"unknown model group {group!r}: use one of {', '.join(GROUPS)}")
    return [name for name, spec in _REGISTRY.items() if group is None or spec.group == group]


def study_models() -> list[str]:
    """The study's five forecasters, in its order: the models its presets and findings are about."""
    return model_names(STUDY)


def get_spec(name: str) -> ModelSpec:
    for key, spec in _REGISTRY.items():
        if key.lower() == name.lower():
            return spec
    raise TsPruneError(f"unknown model {name!r}: choose one of {', '.join(_REGISTRY)}")


def default_config(name: str, **overrides: Any) -> ModelConfig:
    """The model's default configuration (study defaults + its own), with ``overrides`` applied."""
    spec = get_spec(name)
    values = {**spec.defaults, **{k: v for k, v in overrides.items() if v is not None}}
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TsPruneError(f"unknown model hyper-parameter(s): {', '.join(unknown)}")
    config = ModelConfig(name=spec.name, **{k: v for k, v in values.items() if k != "name"})
    config.validate()
    return config


def build_model(config: ModelConfig) -> Forecaster:
    config.validate()
    return get_spec(config.name).cls(config)
