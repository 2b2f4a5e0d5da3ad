"""From a validated table to model-ready windows: column order, splits, scaling, calendar features, batches.

Split rules are the field's standard ones (Informer / Autoformer): ETTh 12/4/4 months, ETTm the same months at 4x
rows, everything else 70/10/20 chronologically; validation and test start ``seq_len`` rows before their boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Iterator, overload

import numpy as np
import pandas as pd
import torch

from tsprune.config import DataConfig
from tsprune.data.io import report_missing_markers, read_table, validated_frame
from tsprune.data.timefeatures import base_frequency, infer_frequency, time_features
from tsprune.errors import TsPruneError
from tsprune.models.base import decoder_input

SPLITS = ("train", "val", "test")
_HOURS_PER_MONTH = 30 * 24


def split_borders(n_rows: int, rule: str, seq_len: int) -> dict[str, tuple[int, int]]:
    """Row range ``[start, end)`` of each split, look-back rows included for val/test."""
    if rule in ("ett_hour", "ett_minute"):
        per_month = _HOURS_PER_MONTH * (4 if rule == "ett_minute" else 1)
        train_end, val_end, test_end = 12 * per_month, 16 * per_month, 20 * per_month
        if n_rows < test_end:
            raise TsPruneError(f"too few rows: the ETT split needs {test_end} rows, the file has {n_rows}")
    elif rule == "ratio":
        n_train, n_test = int(n_rows * 0.7), int(n_rows * 0.2)
        train_end, val_end, test_end = n_train, n_rows - n_test, n_rows
    else:  # pragma: no cover - registry values are fixed
        raise ValueError(f"unknown split rule {rule}")
    return {
        "train": (0, train_end),
        "val": (max(train_end - seq_len, 0), val_end),
        "test": (max(val_end - seq_len, 0), test_end),
    }


@dataclass
class Scaler:
    """Per-channel z-score fitted on the training rows (a constant channel gets scale 1, as scikit-learn does)."""

    # What :meth:`transform` computes, in words a caller without tsprune can apply (the ONNX sidecar states it).
    FORMULA: ClassVar[str] = "scaled = (value - mean) / std, per column"

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        mean = values.mean(axis=0)
        std = values.std(axis=0)
        std = np.where(std < 1e-12, 1.0, std)
        return cls(mean, std)

    def transform(self, values: np.ndarray) -> np.ndarray:
        """``values`` ``[rows, channels]`` scaled by :data:`FORMULA`."""
        return (values - self.mean) / self.std

    @overload
    def inverse(self, values: np.ndarray, channels: slice = ...) -> np.ndarray: ...
    @overload
    def inverse(self, values: torch.Tensor, channels: slice = ...) -> torch.Tensor: ...

    def inverse(self, values: np.ndarray | torch.Tensor, channels: slice = slice(None)) -> np.ndarray | torch.Tensor:
        mean, std = self.mean[channels], self.std[channels]
        if isinstance(values, torch.Tensor):
            return values * torch.as_tensor(std, dtype=values.dtype, device=values.device) + torch.as_tensor(
                mean, dtype=values.dtype, device=values.device)
        return values * std + mean

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, raw: dict[str, list[float]]) -> Scaler:
        return cls(np.asarray(raw["mean"], dtype=np.float64), np.asarray(raw["std"], dtype=np.float64))


def output_channels(n_columns: int, c_out: int) -> slice:
    """The input channels a model forecasts, of ``n_columns`` (target last): the last ``c_out``, so feature modes
    S and MS forecast the target. Index columns, scaler statistics or ``[..., channels]`` values with it."""
    return slice(n_columns - c_out, n_columns)


@dataclass
class Batch:
    """One batch of windows: the model's four inputs, named, shaped and filled as ``models.base.MODEL_INPUTS``
    says (in that order), and the target ``y`` ``[batch, pred_len, c_out]`` (scaled), shaped like the forecast."""

    x_enc: torch.Tensor
    x_mark_enc: torch.Tensor
    x_dec: torch.Tensor
    x_mark_dec: torch.Tensor
    y: torch.Tensor

    def inputs(self) -> tuple[torch.Tensor, ...]:
        """The model's inputs in forward's order."""
        return self.x_enc, self.x_mark_enc, self.x_dec, self.x_mark_dec


@dataclass
class SplitData:
    values: torch.Tensor  # [rows, channels] scaled float32
    marks: torch.Tensor  # [rows, n_time_features]
    dates: pd.DatetimeIndex
    first_row: int  # row of the source table where this split starts


class ForecastData:
    """A dataset prepared for one window configuration: scaled splits, scaler, column roles."""

    def __init__(self, config: DataConfig, columns: list[str], target: str, freq: str, scaler: Scaler,
                 splits: dict[str, SplitData]) -> None:
        self.config = config
        self.columns = columns  # input channels, target last
        self.target = target
        self.freq = freq
        self.scaler = scaler
        self.splits = splits
        self.enc_in = len(columns)
        self.c_out = 1 if config.features in ("S", "MS") else len(columns)
        self.n_time_features = splits["train"].marks.shape[1]
        self._device_cache: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def output_channels(self) -> slice:
        """Which of :attr:`columns` the model forecasts (:func:`output_channels`)."""
        return output_channels(len(self.columns), self.c_out)

    @property
    def output_columns(self) -> list[str]:
        return self.columns[self.output_channels]

    def n_windows(self, split: str) -> int:
        cfg = self.config
        return max(len(self.splits[split].values) - cfg.seq_len - cfg.pred_len + 1, 0)

    def _on(self, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (split, str(device))
        if key not in self._device_cache:
            part = self.splits[split]
            self._device_cache[key] = (part.values.to(device), part.marks.to(device))
        return self._device_cache[key]

    def batch(self, split: str, starts: torch.Tensor, device: torch.device | str = "cpu") -> Batch:
        """Windows beginning at rows ``starts`` of ``split``, gathered in one indexing op."""
        cfg = self.config
        values, marks = self._on(split, torch.device(device))
        starts = starts.to(values.device)
        enc_idx = starts[:, None] + torch.arange(cfg.seq_len, device=values.device)
        dec_idx = starts[:, None] + (cfg.seq_len - cfg.label_len) + torch.arange(cfg.label_len + cfg.pred_len,
                                                                                 device=values.device)
        x_enc = values[enc_idx]
        y = values[dec_idx[:, cfg.label_len:]][..., self.output_channels]
        return Batch(x_enc, marks[enc_idx], decoder_input(x_enc, cfg.label_len, cfg.pred_len), marks[dec_idx], y)

    def batches(self, split: str, batch_size: int, shuffle: bool = False, drop_last: bool = False,
                generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Iterator[Batch]:
        count = self.n_windows(split)
        order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
        stop = count - count % batch_size if drop_last and count >= batch_size else count
        for begin in range(0, stop, batch_size):
            yield self.batch(split, order[begin:begin + batch_size], device)

    def n_batches(self, split: str, batch_size: int, drop_last: bool = False) -> int:
        count = self.n_windows(split)
        return count // batch_size if drop_last and count >= batch_size else math.ceil(count / batch_size)


def order_columns(values: pd.DataFrame, target: str | None, features: str) -> tuple[list[str], str]:
    """Columns the model reads, target last; a single column for feature mode S."""
    columns = [str(c) for c in values.columns]
    target = columns[-1] if target is None else target
    if target not in columns:
        raise TsPruneError(f"target column {target!r} not in the data (columns: {', '.join(columns)})")
    if features == "S":
        return [target], target
    return [c for c in columns if c != target] + [target], target


def prepare_data(config: DataConfig, scaler: Scaler | None = None) -> ForecastData:
    """Read, validate, split, scale and featurise the data described by ``config``.

    ``scaler`` reuses stored statistics (a reloaded run); otherwise one is fitted on the training rows.
    """
    config.validate()
    frame, info = read_table(config.dataset, config.data_path)
    dates, values = validated_frame(frame)
    values.columns = [str(c) for c in values.columns]
    report_missing_markers(values, config.data_path or str(config.dataset))
    columns, target = order_columns(values, config.target, config.features)
    array = values[columns].to_numpy(dtype=np.float64)
    freq = config.freq or (info.freq if info and config.data_path is None else infer_frequency(dates))
    base_frequency(freq)  # validates the alias
    rule = info.split if info else "ratio"
    borders = split_borders(len(array), rule, config.seq_len)

    train_start, train_end = borders["train"]
    if config.train_fraction < 1.0:  # the most recent fraction of the training rows
        kept = max(int(round((train_end - train_start) * config.train_fraction)), config.seq_len + config.pred_len)
        borders["train"] = (max(train_end - kept, 0), train_end)

    need = config.seq_len + config.pred_len
    for split, (start, end) in borders.items():
        if end - start < need:
            raise TsPruneError(
                f"too few rows: the {split} split has {end - start} rows but seq_len + pred_len = {need}; "
                f"the data has {len(array)} rows in all: use shorter windows or more data")

    if scaler is None:
        scaler = Scaler.fit(array[slice(*borders["train"])])
    elif len(scaler.mean) != len(columns):
        raise TsPruneError(f"stored scaler has {len(scaler.mean)} channels but the data has {len(columns)}")
    scaled = scaler.transform(array).astype(np.float32)
    marks = time_features(dates, freq)
    splits = {
        name: SplitData(torch.from_numpy(scaled[start:end].copy()), torch.from_numpy(marks[start:end].copy()),
                        dates[start:end], start)
        for name, (start, end) in borders.items()
    }
    return ForecastData(config, columns, target, freq, scaler, splits)
