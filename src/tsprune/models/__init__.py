"""The forecasters (the study's five and three small ones) behind one registry (``registry.SPECS``), which imports no
model until one is built."""

from __future__ import annotations

from typing import Any

from tsprune.models.registry import SPECS, build_model, default_config, get_spec, model_names, study_models

__all__ = ["Forecaster", "SPECS", "build_model", "default_config", "get_spec", "model_names", "study_models"]


def __getattr__(name: str) -> Any:  # the base class needs torch: imported when asked for
    if name == "Forecaster":
        from tsprune.models.base import Forecaster

        return Forecaster
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
