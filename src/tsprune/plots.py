"""Forecast figures: a forecast after the end of the data, and predictions vs ground truth on test windows for one
or several runs overlaid (e.g. dense vs pruned), so pruning's effect is seen on the forecast, not only in the MSE.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from tsprune.data.dataset import SPLITS  # noqa: E402
from tsprune.errors import TsPruneError  # noqa: E402
from tsprune.run import Run  # noqa: E402
from tsprune.runtime import resolve_device, seeded_inference


def _save(fig: plt.Figure, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def plot_forecast(history: pd.DataFrame, forecast: pd.DataFrame, out: str | Path,
                  channels: Sequence[str] | None = None, context: int | None = None) -> Path:
    """History (the last ``context`` rows, default 4 forecast lengths) and the forecast of each channel.

    ``history`` and ``forecast`` are frames with a date column (the forecast's first column) and value columns;
    ``channels`` defaults to the last forecast column (the target).
    """
    date_column = forecast.columns[0]
    channels = list(channels) if channels else [forecast.columns[-1]]
    unknown = [c for c in channels if c not in forecast.columns]
    if unknown:
        raise TsPruneError(f"cannot plot {', '.join(unknown)}: the forecast has {', '.join(forecast.columns[1:])}")
    context = context or 4 * len(forecast)
    past = history.iloc[-context:]
    past_dates = pd.to_datetime(past[date_column] if date_column in past.columns else past.iloc[:, 0])
    fig, axes = plt.subplots(len(channels), 1, figsize=(10, 2.6 * len(channels)), squeeze=False, sharex=True)
    for ax, channel in zip(axes[:, 0], channels, strict=True):
        ax.plot(past_dates, past[channel].to_numpy(), color="0.35", lw=1.2, label="history")
        # Join the forecast to the last observation so the line is continuous.
        dates = pd.DatetimeIndex([past_dates.iloc[-1]]).append(pd.DatetimeIndex(forecast[date_column]))
        values = np.concatenate([[past[channel].iloc[-1]], forecast[channel].to_numpy()])
        ax.plot(dates, values, color="tab:red", lw=1.6, label="forecast")
        ax.axvline(past_dates.iloc[-1], color="0.6", ls=":", lw=1)
        ax.set_ylabel(channel)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper left", frameon=False)
    axes[0, 0].set_title(f"forecast of the next {len(forecast)} steps")
    return _save(fig, out)


def window_predictions(run: Run, split: str, starts: torch.Tensor, device: str = "auto",
                       seed: int = 0) -> dict[str, np.ndarray]:
    """History, truth and prediction of the windows starting at ``starts``, in original units.

    Returns ``history [W, seq_len, C]`` (all input channels), ``truth`` and ``prediction`` ``[W, pred_len, c_out]``.
    """
    data = run.data()
    device_t = resolve_device(device)
    batch = data.batch(split, starts)
    model = run.model.to(device_t).eval()
    try:
        with seeded_inference(device_t, seed):
            prediction = model(*(t.to(device_t) for t in batch.inputs())).float().cpu().numpy()
    finally:
        run.model.cpu()
    return {
        "history": run.scaler.inverse(batch.x_enc.numpy().astype(np.float64)),
        "truth": run.scaler.inverse(batch.y.numpy().astype(np.float64), run.output_channels),
        "prediction": run.scaler.inverse(prediction.astype(np.float64), run.output_channels),
    }


def plot_windows(runs: Sequence[Run], out: str | Path, labels: Sequence[str] | None = None, split: str = "test",
                 windows: int = 3, channel: str | None = None, device: str = "auto") -> Path:
    """Predictions of each run vs the ground truth on ``windows`` evenly spaced windows of ``split``.

    All runs must read the same data with the same window lengths (e.g. a dense run and its pruned variants).
    ``channel`` defaults to the target (the last column).
    """
    if not runs:
        raise TsPruneError("give at least one run directory to plot")
    if split not in SPLITS:
        raise TsPruneError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if windows < 1:
        raise TsPruneError(f"windows must be at least 1, got {windows}", options=("windows",))
    first = runs[0].config.data
    for run in runs[1:]:
        data = run.config.data
        if (data.dataset, data.data_path, data.seq_len, data.pred_len, data.features) != \
                (first.dataset, first.data_path, first.seq_len, first.pred_len, first.features):
            raise TsPruneError("the runs read different data or window lengths: plot runs of the same dataset, "
                               "seq_len, pred_len and feature mode together")
    labels = list(labels) if labels else [str(run.path or run.config.model.name) for run in runs]
    reference = runs[0]
    forecast_columns = reference.output_columns
    channel = channel or forecast_columns[-1]
    if channel not in forecast_columns:
        raise TsPruneError(f"channel {channel!r} is not forecast by these runs (they forecast "
                           f"{', '.join(forecast_columns)})")
    count = reference.data().n_windows(split)
    starts = torch.linspace(0, count - 1, min(windows, count)).round().long()
    history_index = reference.columns.index(channel)
    out_index = forecast_columns.index(channel)
    results = [window_predictions(run, split, starts, device) for run in runs]

    seq_len, pred_len = first.seq_len, first.pred_len
    fig, axes = plt.subplots(len(starts), 1, figsize=(10, 2.8 * len(starts)), squeeze=False)
    past, future = np.arange(-seq_len, 0), np.arange(pred_len)
    for row, ax in enumerate(axes[:, 0]):
        ax.plot(past, results[0]["history"][row, :, history_index], color="0.35", lw=1.1, label="history")
        ax.plot(future, results[0]["truth"][row, :, out_index], color="black", lw=1.6, label="truth")
        # tab10 is a ListedColormap (RGB tuples in .colors); matplotlib's stubs type plt.cm.tab10 as a Colormap
        palette = plt.cm.tab10.colors  # type: ignore[attr-defined]
        for label, result, color in zip(labels, results, palette, strict=False):
            predicted, truth = result["prediction"][row, :, out_index], result["truth"][row, :, out_index]
            mse = float(np.mean((predicted - truth) ** 2))
            ax.plot(future, predicted, color=color, lw=1.3, label=f"{label} (MSE {mse:.3g} on {channel})")
        ax.axvline(0, color="0.6", ls=":", lw=1)
        ax.set_ylabel(channel)
        ax.set_title(f"{split} window {int(starts[row])}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=7, frameon=False)
    axes[-1, 0].set_xlabel("steps relative to the forecast start")
    return _save(fig, out)
