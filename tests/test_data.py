"""Splits, scaler, calendar features, feature modes and bad-input errors of the data pipeline."""

from __future__ import annotations

import gzip
import io
from importlib import resources

import numpy as np
import pandas as pd
import pytest
import torch

from tsprune.config import DataConfig
from tsprune.data.dataset import prepare_data, split_borders
from tsprune.data.timefeatures import infer_frequency, time_features
from tsprune.errors import TsPruneError


def raw_builtin(name: str) -> pd.DataFrame:
    blob = resources.files("tsprune.data").joinpath("files").joinpath(f"{name}.csv.gz").read_bytes()
    return pd.read_csv(io.BytesIO(gzip.decompress(blob)))


@pytest.mark.parametrize("name, scale", [("ETTh1", 1), ("ETTm1", 4)])
def test_ett_split_boundaries_and_scaler(name, scale):
    seq_len, pred_len = 96, 96
    data = prepare_data(DataConfig(dataset=name, seq_len=seq_len, pred_len=pred_len))
    month = 30 * 24 * scale
    assert data.splits["train"].first_row == 0
    assert len(data.splits["train"].values) == 12 * month  # 8640 rows for ETTh
    assert data.splits["val"].first_row == 12 * month - seq_len
    assert len(data.splits["val"].values) == 4 * month + seq_len
    assert data.splits["test"].first_row == 16 * month - seq_len
    assert len(data.splits["test"].values) == 4 * month + seq_len
    assert data.n_windows("test") == 4 * month + seq_len - seq_len - pred_len + 1  # 2785 for ETTh1/96

    raw = raw_builtin(name)
    assert str(data.splits["test"].dates[seq_len]) == str(pd.Timestamp(raw["date"][16 * month]))
    values = raw.drop(columns=["date"]).to_numpy(dtype=np.float64)
    train = values[: 12 * month]
    np.testing.assert_allclose(data.scaler.mean, train.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(data.scaler.std, train.std(axis=0), rtol=1e-12)
    # the first test window's first input is row 16 months - seq_len, scaled with the training statistics
    batch = data.batch("test", torch.tensor([0]))
    row = 16 * month - seq_len
    expected = (values[row] - train.mean(axis=0)) / train.std(axis=0)
    np.testing.assert_allclose(batch.x_enc[0, 0].numpy(), expected, rtol=1e-5, atol=1e-6)
    # the first target is row 16 months (the test boundary), OT last
    expected_y = (values[16 * month] - train.mean(axis=0)) / train.std(axis=0)
    np.testing.assert_allclose(batch.y[0, 0].numpy(), expected_y, rtol=1e-5, atol=1e-6)


def test_etth1_hand_computed_scaler_cell():
    # OT of ETTh1: mean and std of rows [0, 8640) computed independently from the raw text
    raw = raw_builtin("ETTh1")
    ot = raw["OT"].to_numpy()[:8640]
    data = prepare_data(DataConfig(dataset="ETTh1"))
    assert data.columns[-1] == "OT"
    assert data.scaler.mean[-1] == pytest.approx(ot.sum() / 8640, rel=1e-12)
    assert data.scaler.std[-1] == pytest.approx(np.sqrt(((ot - ot.mean()) ** 2).sum() / 8640), rel=1e-12)


@pytest.mark.parametrize("name, n, train, val, test", [
    ("weather", 52696, 36887, 5270, 10539),
    ("exchange_rate", 7588, 5311, 760, 1517),
    ("national_illness", 966, 676, 97, 193),
])
def test_ratio_splits(name, n, train, val, test):
    borders = split_borders(n, "ratio", 36)
    assert borders["train"] == (0, train)
    assert borders["val"] == (train - 36, train + val)
    assert borders["test"] == (train + val - 36, n)


def test_train_fraction_keeps_most_recent_rows():
    full = prepare_data(DataConfig(dataset="ETTh1"))
    part = prepare_data(DataConfig(dataset="ETTh1", train_fraction=0.25))
    assert part.splits["train"].first_row == 8640 - 2160
    assert part.splits["train"].dates[-1] == full.splits["train"].dates[-1]
    np.testing.assert_array_equal(part.splits["test"].dates, full.splits["test"].dates)


def test_feature_modes():
    multi = prepare_data(DataConfig(dataset="ETTh1", features="M"))
    single = prepare_data(DataConfig(dataset="ETTh1", features="S"))
    ms = prepare_data(DataConfig(dataset="ETTh1", features="MS"))
    assert (multi.enc_in, multi.c_out) == (7, 7)
    assert (single.enc_in, single.c_out, single.columns) == (1, 1, ["OT"])
    assert (ms.enc_in, ms.c_out) == (7, 1)
    start = torch.tensor([5])
    np.testing.assert_allclose(ms.batch("test", start).y[..., 0], multi.batch("test", start).y[..., -1])
    np.testing.assert_allclose(single.batch("test", start).y[..., 0], multi.batch("test", start).y[..., -1],
                               rtol=1e-6)


def test_target_column_moves_last(tmp_path):
    frame = raw_builtin("ETTh1")
    path = tmp_path / "custom.csv"
    frame.to_csv(path, index=False)
    data = prepare_data(DataConfig(dataset=None, data_path=str(path), target="HUFL", seq_len=24, label_len=12,
                                   pred_len=24))
    assert data.columns[-1] == "HUFL" and len(data.columns) == 7
    assert data.freq.lower() == "h"


def test_hourly_time_features():
    dates = pd.DatetimeIndex(["2016-07-01 00:00", "2016-07-01 23:00"])
    feats = time_features(dates, "h")
    # hour_of_day, day_of_week (Friday = 4), day_of_month, day_of_year
    np.testing.assert_allclose(feats[0], [-0.5, 4 / 6 - 0.5, -0.5, 182 / 365 - 0.5], rtol=1e-6)
    np.testing.assert_allclose(feats[1, 0], 0.5)


@pytest.mark.parametrize("freq, expected", [("h", "h"), ("15min", "15min"), ("D", "D"), ("W-TUE", "W-TUE")])
def test_frequency_inference(freq, expected):
    dates = pd.date_range("2020-01-07", periods=50, freq=freq)
    assert infer_frequency(dates) == expected


def test_frequency_inference_tolerates_gaps_and_duplicates():
    dates = pd.date_range("2020-01-01", periods=200, freq="10min")
    dates = dates.delete([50, 51]).insert(100, dates[99])
    assert infer_frequency(dates) == "10min"


def make_frame(rows: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"date": pd.date_range("2021-01-01", periods=rows, freq="h"),
                         "a": rng.normal(size=rows), "b": rng.normal(size=rows), "OT": rng.normal(size=rows)})


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.drop(columns=["date"]), "no date column"),
    (lambda f: f.assign(b=["x"] * len(f)), "column 'b' is not numeric: row 0"),
    (lambda f: f.assign(a=f["a"].where(f.index != 17, np.nan)), "column 'a' has NaN at row 17"),
    (lambda f: f.assign(OT=f["OT"].where(f.index != 5, np.inf)), "column 'OT' has inf at row 5"),
    (lambda f: f.head(60), "too few rows"),
])
def test_bad_csv_errors(tmp_path, mutate, message):
    path = tmp_path / "bad.csv"
    mutate(make_frame()).to_csv(path, index=False)
    with pytest.raises(TsPruneError, match=message):
        prepare_data(DataConfig(dataset=None, data_path=str(path), seq_len=24, label_len=12, pred_len=24))


def test_missing_file_unknown_dataset_and_unshipped():
    with pytest.raises(TsPruneError, match="not found"):
        prepare_data(DataConfig(dataset=None, data_path="/nonexistent/file.csv"))
    with pytest.raises(TsPruneError, match="unknown dataset"):
        prepare_data(DataConfig(dataset="ETTh9"))
    with pytest.raises(TsPruneError, match="as data_path") as caught:  # the API's name; the CLI says --data-path
        prepare_data(DataConfig(dataset="electricity"))
    assert caught.value.options == ("data_path",)


def test_checksum_is_verified(monkeypatch):
    from tsprune.data import io as data_io
    from tsprune.data.registry import DatasetInfo

    fake = DatasetInfo("ETTh1-fake", "ETTh1.csv", "0" * 64, "h", "ett_hour", "tampered")
    with pytest.raises(TsPruneError, match="checksum mismatch"):
        data_io.builtin_bytes(fake)


def test_missing_value_markers_are_reported_in_one_line_once(tmp_path):
    """weather.csv carries -9999 markers (1 in 'wv (m/s)', 30 in 'max. PAR', 50 in 'OT'); they are used as values,
    as the benchmark does, and loading says so, for built-in files and user CSVs alike."""
    import warnings

    from tsprune.config import DataConfig
    from tsprune.data.dataset import prepare_data
    from tsprune.data.io import MissingMarkers, report_missing_markers

    with pytest.warns(MissingMarkers) as caught:
        prepare_data(DataConfig(dataset="weather"))
    message = str(caught[0].message)
    assert len(caught) == 1 and "\n" not in message
    assert "81 values are -9999" in message and "1 in 'wv (m/s)'" in message and "50 in 'OT'" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per file and process
        prepare_data(DataConfig(dataset="weather"))
        prepare_data(DataConfig(dataset="ETTh1"))  # no markers: nothing said
    t = np.arange(200)
    frame = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=200, freq="h").astype(str),
                          "x": np.where(t == 7, -9999.0, np.sin(t / 5))})
    path = tmp_path / "user.csv"
    frame.to_csv(path, index=False)
    with pytest.warns(MissingMarkers, match="user.csv: 1 values are -9999 missing-value markers \\(1 in 'x'\\)"):
        prepare_data(DataConfig(dataset=None, data_path=str(path), seq_len=24, label_len=12, pred_len=12))
    assert report_missing_markers(frame.drop(columns="date").abs(), "clean") is None


def test_the_cli_shows_a_warning_as_one_note_line():
    from tsprune.cli import err_console, show_warning

    with err_console.capture() as captured:
        show_warning(UserWarning("weather: 81 values are -9999 markers"), UserWarning, "file.py", 3)
    assert captured.get().strip() == "note: weather: 81 values are -9999 markers"


def test_the_scaler_formula_text_computes_what_transform_does():
    """``Scaler.FORMULA`` (the words the ONNX sidecar gives a caller without tsprune), read back as numbers on the
    statistics the sidecar stores (``to_dict``), equals ``transform``."""
    import re

    from tsprune.data.dataset import Scaler

    values = np.array([[1.0, 10.0, 5.0], [3.0, 30.0, 5.0], [8.0, -2.0, 5.0]])  # a constant column too
    scaler = Scaler.fit(values)
    found = re.fullmatch(r"(\w+) = \((\w+) - (\w+)\) / (\w+), per column", Scaler.FORMULA)
    assert found, Scaler.FORMULA
    result, value, offset, scale = found.groups()
    stats = scaler.to_dict()
    assert (result, value) == ("scaled", "value") and {offset, scale} <= set(stats)
    stated = (values - np.asarray(stats[offset])) / np.asarray(stats[scale])  # per column: broadcast over rows
    np.testing.assert_array_equal(stated, scaler.transform(values))
    np.testing.assert_allclose(scaler.inverse(stated), values)


def test_batches_are_the_model_input_table_and_the_decoder_rule():
    """A batch holds ``models.base.MODEL_INPUTS`` in forward's order, shaped as the table says, with ``x_dec`` made
    by the one decoder rule, and ``y`` the forecast channels of the following rows."""
    import dataclasses

    from conftest import table_shape
    from tsprune.models.base import MODEL_INPUTS, MODEL_OUTPUT, decoder_input

    for features in ("M", "S", "MS"):
        data = prepare_data(DataConfig(dataset="ETTh1", features=features, seq_len=48, label_len=24, pred_len=12))
        cfg = data.config
        batch = data.batch("val", torch.tensor([0, 3, 40]))
        assert [field.name for field in dataclasses.fields(batch)] == [t.name for t in MODEL_INPUTS] + ["y"]
        dims = {"batch": 3, "seq_len": 48, "label_len": 24, "pred_len": 12, "enc_in": data.enc_in,
                "n_time_features": data.n_time_features, "c_out": data.c_out}
        for tensor, value in zip(MODEL_INPUTS, batch.inputs(), strict=True):
            assert tuple(value.shape) == table_shape(tensor.shape, **dims), tensor.name
        assert tuple(batch.y.shape) == table_shape(MODEL_OUTPUT.shape, **dims)
        assert torch.equal(batch.x_dec, decoder_input(batch.x_enc, cfg.label_len, cfg.pred_len))
        following = data.batch("val", torch.tensor([12, 15, 52])).x_enc  # windows starting pred_len rows later
        assert torch.equal(batch.y, following[:, -cfg.pred_len:, data.output_channels])
        assert data.output_columns == data.columns[data.output_channels] == \
            (["OT"] if features != "M" else data.columns)
