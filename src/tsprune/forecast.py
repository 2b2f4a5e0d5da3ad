"""Forecast the real future with a trained (or pruned) run: the last ``seq_len`` rows in, ``pred_len`` new
timestamps out, in the data's original units.

The input goes through exactly the run's pipeline: the stored column order and scaler, calendar features of the
run's frequency, and the decoder input of training (``models.base.decoder_input``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd
import torch

from tsprune.data.io import find_date_column, read_table, validated_frame
from tsprune.data.timefeatures import base_frequency, infer_frequency, time_features
from tsprune.errors import TsPruneError
from tsprune.models.base import decoder_input
from tsprune.runtime import resolve_device, seeded_inference

if TYPE_CHECKING:
    from tsprune.run import Run


def read_history(run: Run, dataset: str | None = None, data_path: str | None = None) -> pd.DataFrame:
    """The raw table to forecast from: ``data_path``, a built-in ``dataset``, or by default the run's own data."""
    if data_path is None and dataset is None:
        dataset, data_path = run.config.data.dataset, run.config.data.data_path
    frame, _ = read_table(dataset, data_path)
    return frame


def future_dates(last: pd.Timestamp, freq: str, periods: int) -> pd.DatetimeIndex:
    """``periods`` timestamps continuing after ``last`` at ``freq``."""
    return pd.date_range(start=last, periods=periods + 1, freq=freq)[1:]


def _same_frequency(a: str, b: str) -> bool:
    """Same step (unit and multiple); anchors such as the weekday of weekly data may differ."""
    try:
        oa, ob = pd.tseries.frequencies.to_offset(a), pd.tseries.frequencies.to_offset(b)
    except ValueError:
        return a == b
    return type(oa) is type(ob) and oa.n == ob.n


def model_inputs(run: Run, history: pd.DataFrame) -> tuple[tuple[torch.Tensor, ...], pd.DatetimeIndex, str]:
    """Validate ``history`` against the run and build one batch of the model's inputs (``models.base.MODEL_INPUTS``,
    batch 1).

    Returns the batch, the future timestamps and the name of the date column.
    """
    date_column = find_date_column(history)
    dates, values = validated_frame(history)  # NaN/inf, non-numeric columns: clear errors naming the cell
    values.columns = [str(c) for c in values.columns]
    missing = [c for c in run.columns if c not in values.columns]
    extra = [c for c in values.columns if c not in run.columns]
    if missing or (extra and run.config.data.features != "S"):
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected {', '.join(extra)}"] if extra and run.config.data.features != "S" else [])
        raise TsPruneError(f"the data's columns do not match the run's ({'; '.join(parts)}); the run was trained on "
                           f"{', '.join(run.columns)}")
    cfg = run.config.model
    if len(values) < cfg.seq_len:
        raise TsPruneError(f"too few rows to forecast: the model reads the last {cfg.seq_len} rows but the data has "
                           f"{len(values)}")
    dates, array = dates[-cfg.seq_len:], values[run.columns].to_numpy(dtype=np.float64)[-cfg.seq_len:]
    # The data's own frequency (with its anchor, e.g. weekly on Tuesdays) continues the timestamps.
    data_freq = infer_frequency(dates) if len(dates) > 2 else run.freq
    if not _same_frequency(data_freq, run.freq):
        raise TsPruneError(f"the data's frequency ({data_freq}) differs from the run's ({run.freq}): resample it "
                           "to the run's frequency first")
    base_frequency(run.freq)
    scaled = torch.from_numpy(run.scaler.transform(array).astype(np.float32)).unsqueeze(0)  # [1, seq_len, C]
    future = future_dates(dates[-1], data_freq, cfg.pred_len)
    # DatetimeIndex.append of a DatetimeIndex is one too; pandas-stubs only promise an Index
    decoder_dates = cast(pd.DatetimeIndex, dates[len(dates) - cfg.label_len:].append(future))
    x_mark_enc = torch.from_numpy(time_features(dates, run.freq)).unsqueeze(0)
    x_mark_dec = torch.from_numpy(time_features(decoder_dates, run.freq)).unsqueeze(0)
    x_dec = decoder_input(scaled, cfg.label_len, cfg.pred_len)
    return (scaled, x_mark_enc, x_dec, x_mark_dec), future, str(date_column)


def predict(run: Run, history: pd.DataFrame, device: str = "auto", seed: int = 0,
            forward: Callable[..., np.ndarray] | None = None) -> pd.DataFrame:
    """Forecast the ``pred_len`` steps after the end of ``history`` (a frame with a date column and the run's
    columns). Returns a frame: the date column (future timestamps) and one column per forecast channel, in the
    data's units. ``seed`` fixes the key sampling of ProbSparse attention so a forecast is reproducible.
    ``forward`` replaces the run's model (e.g. an exported file in ONNX Runtime): the four input tensors in,
    ``[1, pred_len, c_out]`` scaled out.
    """
    inputs, future, date_column = model_inputs(run, history)
    if forward is not None:
        output = np.asarray(forward(*inputs))[0].astype(np.float32)  # [pred_len, c_out]
    else:
        device_t = resolve_device(device)
        model = run.model.to(device_t).eval()
        try:
            with seeded_inference(device_t, seed):
                output = model(*(t.to(device_t) for t in inputs))[0].float().cpu().numpy()  # [pred_len, c_out]
        finally:
            run.model.cpu()
    values = run.scaler.inverse(output.astype(np.float64), run.output_channels)
    frame = pd.DataFrame(values, columns=run.output_columns)
    frame.insert(0, date_column, future)
    return frame
