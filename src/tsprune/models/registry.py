"""Name -> forecaster class, default hyper-parameters and a one-line summary. The one place models are listed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from tsprune.config import ModelConfig
from tsprune.errors import TsPruneError
from tsprune.models.base import Forecaster


@dataclass(frozen=True)
class ModelSpec:
    name: str
    cls: type[Forecaster]
    summary: str
    defaults: dict[str, Any] = field(default_factory=dict)  # overrides of ModelConfig's study defaults
    uses: tuple[str, ...] = ()  # hyper-parameters this model reads (shown by `tsprune models`), not data-bound ones


_REGISTRY: dict[str, ModelSpec] = {}

COMMON_FIELDS = ("d_model", "n_heads", "e_layers", "d_ff", "dropout", "activation")


def register(name: str, summary: str, defaults: dict[str, Any] | None = None, uses: tuple[str, ...] = ()) -> Callable:
    """Class decorator adding a forecaster to the registry."""

    def wrap(cls: type[Forecaster]) -> type[Forecaster]:
        _REGISTRY[name] = ModelSpec(name, cls, summary, dict(defaults or {}), uses)
        return cls

    return wrap


def _load_all() -> None:
    # Importing the model modules runs their @register decorators.
    from tsprune.models import autoformer, crossformer, fedformer, informer, transformer  # noqa: F401


def model_names() -> list[str]:
    _load_all()
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    _load_all()
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
