"""The five forecasters behind one registry."""

from tsprune.models.base import Forecaster
from tsprune.models.registry import build_model, default_config, get_spec, model_names

__all__ = ["Forecaster", "build_model", "default_config", "get_spec", "model_names"]
