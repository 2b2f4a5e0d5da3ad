"""``make_config``: a complete run configuration from a model name, data and training settings; ``bind_to_data``
fills in what the prepared data dictates. No torch here."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, TypedDict

from tsprune.config import TRAIN_PRESETS, DataConfig, RunConfig, TrainConfig, replace_known
from tsprune.errors import TsPruneError
from tsprune.models.registry import default_config

if TYPE_CHECKING:  # pragma: no cover
    from tsprune.data.dataset import ForecastData


def make_config(model: str = "Transformer", *, preset: str | None = None, data: dict[str, Any] | None = None,
                train: dict[str, Any] | None = None, **hyper: Any) -> RunConfig:
    """A complete run configuration: model defaults + ``hyper`` overrides, data and training settings.

    ``preset`` names a training preset (``study-code``, the default protocol, or ``study-text``: lr 5e-4);
    explicit ``train`` values win over the preset.
    """
    if preset is not None and preset not in TRAIN_PRESETS:
        raise TsPruneError(f"unknown preset {preset!r}: choose one of {', '.join(TRAIN_PRESETS)}")
    train_cfg = replace_known(TrainConfig(), {**TRAIN_PRESETS.get(preset or "study-code", {}), **(train or {})})
    data = dict(data or {})
    if data.get("data_path") is not None and data.get("dataset") is None:
        data["dataset"] = None  # a user CSV: do not fall back to the default built-in dataset
        data_cfg = replace_known(DataConfig(dataset=None), data)
    else:
        data_cfg = replace_known(DataConfig(), data)
    model_cfg = default_config(model, **hyper)
    config = RunConfig(data=data_cfg, model=model_cfg, train=train_cfg)
    config.data.validate()
    config.train.validate()
    return config


class DataBound(TypedDict):
    """The ``ModelConfig`` fields the prepared data dictates (``config.DATA_BOUND_FIELDS``)."""

    enc_in: int
    dec_in: int
    c_out: int
    seq_len: int
    label_len: int
    pred_len: int
    n_time_features: int


def data_bound_values(config: RunConfig, data: ForecastData) -> DataBound:
    """The values of ``config.DATA_BOUND_FIELDS``: the model sizes and window lengths the data dictates."""
    return {"enc_in": data.enc_in, "dec_in": data.enc_in, "c_out": data.c_out, "seq_len": config.data.seq_len,
            "label_len": config.data.label_len, "pred_len": config.data.pred_len,
            "n_time_features": data.n_time_features}


def bind_to_data(config: RunConfig, data: ForecastData) -> RunConfig:
    """Fill the model's input/output sizes and window lengths from the prepared data."""
    return dataclasses.replace(config, model=dataclasses.replace(config.model, **data_bound_values(config, data)))
