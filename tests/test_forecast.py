"""Forecasting past the end of the data, and forecast figures: timestamps, values, errors and images."""

from __future__ import annotations

import copy

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TINY, random_inputs, table_shape
from tsprune import api
from tsprune import configure
from tsprune.data.dataset import prepare_data
from tsprune.data.io import read_table
from tsprune.errors import TsPruneError
from tsprune.forecast import model_inputs, predict
from tsprune.models.base import MODEL_INPUTS, decoder_input
from tsprune.models.registry import build_model
from tsprune.plots import plot_forecast, plot_windows, window_predictions
from tsprune.prune import structured
from tsprune.run import Run, load_run, save_run


def make_run(model: str = "Transformer", dataset: str = "ETTh1", seed: int = 0, **data) -> Run:
    """An untrained run bound to real data: enough to pin the forecasting pipeline (no training needed)."""
    config = api.make_config(model, data={"dataset": dataset, **data}, **TINY)
    prepared = prepare_data(config.data)
    config = configure.bind_to_data(config, prepared)
    torch.manual_seed(seed)
    return Run(config, build_model(config.model), prepared.scaler, prepared.columns, prepared.freq)


@pytest.mark.parametrize("dataset, step, windows", [
    ("ETTh1", pd.Timedelta(hours=1), {}),
    ("ETTm1", pd.Timedelta(minutes=15), {}),
    ("exchange_rate", pd.Timedelta(days=1), {}),
    ("national_illness", pd.Timedelta(weeks=1), {"seq_len": 36, "label_len": 18, "pred_len": 24}),
])
def test_forecast_timestamps_continue_the_series(dataset, step, windows):
    run = make_run(dataset=dataset, **windows)
    frame, _ = read_table(dataset, None)
    forecast = api.predict(run)
    last = pd.Timestamp(frame["date"].iloc[-1])
    assert len(forecast) == run.config.model.pred_len
    assert list(forecast.columns) == ["date", *run.columns]
    expected = pd.DatetimeIndex([last + step * (i + 1) for i in range(len(forecast))])
    assert pd.DatetimeIndex(forecast["date"]).equals(expected)
    assert np.isfinite(forecast[run.columns].to_numpy()).all()


@pytest.mark.parametrize("model, features", [("Informer", "M"), ("FEDformer", "MS"), ("Crossformer", "M")])
def test_forecast_equals_the_model_on_the_same_window_inverse_scaled(model, features):
    run = make_run(model, features=features)
    data = run.data()
    split = data.splits["test"]
    last = data.n_windows("test") - 1
    # The history that ends where the last test window's input ends: the forecast is that window's prediction.
    frame, _ = read_table("ETTh1", None)
    history = frame.iloc[: split.first_row + last + run.config.model.seq_len]
    forecast = predict(run, history, device="cpu", seed=3)

    batch = data.batch("test", torch.tensor([last]))
    torch.manual_seed(3)  # the same key sampling for Informer as predict uses
    with torch.inference_mode():
        direct = run.model.eval()(batch.x_enc, batch.x_mark_enc, batch.x_dec, batch.x_mark_dec)[0].numpy()
    c_out = direct.shape[-1]
    expected = run.scaler.inverse(direct.astype(np.float64), slice(len(run.columns) - c_out, None))
    np.testing.assert_allclose(forecast[run.columns[-c_out:]].to_numpy(), expected, rtol=1e-5, atol=1e-5)
    future_rows = frame.iloc[len(history): len(history) + run.config.model.pred_len]
    assert pd.DatetimeIndex(forecast["date"]).equals(pd.DatetimeIndex(pd.to_datetime(future_rows["date"])))


@pytest.mark.parametrize("features", ["M", "S", "MS"])
def test_the_forecast_channels_follow_the_data_modules_rule(features):
    """Which columns a run forecasts is decided once (``data.dataset.output_channels``): the run, its data, the
    forecast's columns and the figures' unscaling all follow it."""
    run = make_run(features=features)
    data = run.data()
    assert run.output_channels == data.output_channels
    assert run.output_columns == data.output_columns == (run.columns if features == "M" else ["OT"])
    frame, _ = read_table("ETTh1", None)
    assert list(predict(run, frame, device="cpu").columns[1:]) == run.output_columns
    windows = window_predictions(run, "test", torch.tensor([0, 2]), device="cpu")
    first = data.splits["test"].first_row + run.config.model.seq_len  # the first test window's first future row
    truth = frame[run.output_columns].to_numpy()[first:first + run.config.model.pred_len]
    np.testing.assert_allclose(windows["truth"][0], truth, rtol=1e-5, atol=1e-4)  # unscaled with the right channels
    assert windows["prediction"].shape == windows["truth"].shape


def test_forecast_inputs_are_the_model_input_table_and_the_decoder_rule():
    run = make_run("Informer")
    frame, _ = read_table("ETTh1", None)
    inputs, _, _ = model_inputs(run, frame)
    cfg = run.config.model
    dims = {"batch": 1, "seq_len": cfg.seq_len, "label_len": cfg.label_len, "pred_len": cfg.pred_len,
            "enc_in": cfg.enc_in, "n_time_features": cfg.n_time_features}
    for tensor, value in zip(MODEL_INPUTS, inputs, strict=True):
        assert tuple(value.shape) == table_shape(tensor.shape, **dims), tensor.name
    assert torch.equal(inputs[2], decoder_input(inputs[0], cfg.label_len, cfg.pred_len))


def test_bad_history_gives_clear_errors():
    run = make_run()
    frame, _ = read_table("ETTh1", None)
    with pytest.raises(TsPruneError, match="missing HUFL"):
        predict(run, frame.drop(columns=["HUFL"]))
    with pytest.raises(TsPruneError, match="unexpected extra"):
        predict(run, frame.assign(extra=1.0))
    with pytest.raises(TsPruneError, match="too few rows"):
        predict(run, frame.iloc[:50])
    broken = frame.copy()
    broken.loc[len(frame) - 3, "OT"] = np.nan
    with pytest.raises(TsPruneError, match="'OT' has NaN"):
        predict(run, broken)
    daily = frame.iloc[::24].reset_index(drop=True)
    with pytest.raises(TsPruneError, match="frequency"):
        predict(run, daily)


def test_structurally_pruned_run_predicts_after_reload(tmp_path):
    run = make_run("Autoformer")
    inputs = random_inputs(run.config.model, device="cpu")
    pruned, result = structured.prune_to_density(run.model, inputs, 0.5, tolerance=0.05, max_trials=4)
    assert result.reached
    pruned_run = Run(run.config, pruned, run.scaler, run.columns, run.freq,
                     architecture=structured.architecture(pruned))
    save_run(pruned_run, tmp_path / "pruned")
    reloaded = load_run(tmp_path / "pruned")
    forecast = api.predict(reloaded, device="cpu")
    assert forecast.shape == (run.config.model.pred_len, 1 + len(run.columns))
    pd.testing.assert_frame_equal(forecast, api.predict(pruned_run, device="cpu"))


def _valid_png(path) -> None:
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_plots_write_valid_images(tmp_path):
    dense = make_run("Transformer")
    pruned = copy.deepcopy(dense)
    with torch.no_grad():
        for parameter in pruned.model.parameters():
            parameter.mul_(0.5)
    frame, _ = read_table("ETTh1", None)
    forecast = api.predict(dense, device="cpu")
    _valid_png(plot_forecast(frame, forecast, tmp_path / "forecast.png", channels=["OT", "HUFL"]))
    _valid_png(plot_windows([dense, pruned], tmp_path / "windows.png", labels=["dense", "half"], windows=2))
    with pytest.raises(TsPruneError, match="not forecast"):
        plot_windows([dense], tmp_path / "x.png", channel="nope")
    other = make_run("Transformer", pred_len=48)
    with pytest.raises(TsPruneError, match="different data"):
        plot_windows([dense, other], tmp_path / "x.png")


def test_predict_and_plot_commands(tmp_path):
    from typer.testing import CliRunner

    from tsprune.cli import app

    runner = CliRunner()
    run = make_run("Informer")
    save_run(run, tmp_path / "run")
    out = tmp_path / "forecast.csv"
    result = runner.invoke(app, ["predict", str(tmp_path / "run"), "--out", str(out), "--plot",
                                 str(tmp_path / "forecast.png"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out)
    assert len(written) == run.config.model.pred_len and list(written.columns) == ["date", *run.columns]
    _valid_png(tmp_path / "forecast.png")
    result = runner.invoke(app, ["plot", str(tmp_path / "run"), str(tmp_path / "run"), "--labels", "a,b",
                                 "--windows", "2", "--out", str(tmp_path / "w.png"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    _valid_png(tmp_path / "w.png")

    frame, _ = read_table("ETTh1", None)
    short = tmp_path / "short.csv"
    frame.iloc[:40].to_csv(short, index=False)
    wrong = tmp_path / "wrong.csv"
    frame.drop(columns=["LULL"]).to_csv(wrong, index=False)
    for path, message in ((short, "too few rows"), (wrong, "missing LULL")):
        result = runner.invoke(app, ["predict", str(tmp_path / "run"), "--data-path", str(path), "--out",
                                     str(tmp_path / "x.csv")])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
