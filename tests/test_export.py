"""ONNX export (``tsprune.export``): every model, dense and DepGraph-pruned, exported and checked in ONNX Runtime on
real windows; ``predict --engine onnx`` gives the dense forecast; bad files give one-line errors."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from tsprune import api
from tsprune.cli import app
from tsprune.data.dataset import Scaler
from tsprune.data.timefeatures import FEATURES, feature_names, time_features
from tsprune.errors import TsPruneError
from tsprune.models.base import MODEL_INPUTS, MODEL_OUTPUT
from tsprune.models.registry import get_spec, model_names
from tsprune.run import save_run
from tsprune.runtime import seeded_inference

pytest.importorskip("onnxruntime")

from tsprune.export import (  # noqa: E402
    INPUTS,
    OUTPUT,
    OnnxForecaster,
    export_run,
    read_sidecar,
    time_feature_recipe,
)

TINY = {"d_model": 16, "d_ff": 32, "n_heads": 2, "e_layers": 1, "d_layers": 1, "modes": 8, "n_routers": 2}
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


class Runs:
    """Tiny trained runs and their DepGraph-pruned copies, made on first use (``runs[model] / f"{model}-dg"``)."""

    def __init__(self, folder) -> None:
        self.folder = folder
        t = np.arange(300)
        frame = pd.DataFrame({"date": pd.date_range("2022-01-01", periods=300, freq="h").astype(str),
                              "a": np.sin(t / 6.0), "b": np.cos(t / 9.0), "OT": np.sin(t / 4.0)})
        self.csv = folder / "data.csv"
        frame.to_csv(self.csv, index=False)

    def __getitem__(self, name: str):
        if not (self.folder / f"{name}-dg").is_dir():
            config = api.make_config(name, data={"data_path": str(self.csv), "seq_len": 24, "label_len": 12,
                                                 "pred_len": 12}, train={"epochs": 1, "max_steps": 2, "device": "cpu"},
                                     **({**TINY, "seg_len": 6} if name == "Crossformer" else TINY))
            api.train(config, out=self.folder / name, progress=False)
            if get_spec(name).channels:  # DLinear has none to remove; its magnitude-pruned twin is exported instead
                api.prune(self.folder / name, "depgraph", 0.5, out=self.folder / f"{name}-dg", batch_sizes=(2,),
                          latency_repeats=1, threads=1, device="cpu")
        return self.folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory.mktemp("export"))


def _windows(run, split: str, count: int) -> tuple[torch.Tensor, ...]:
    data = run.data()
    batch = data.batch(split, torch.arange(count) % data.n_windows(split))
    return batch.inputs()


# An export takes 8-25 s here, so the matrix runs in `make test-heavy` (CI runs it after `make test`); `make test`
# exports Informer (frozen sampling) and a magnitude-pruned Transformer below.
MATRIX = [pytest.param(model, variant, marks=pytest.mark.heavy, id=f"{model}{variant}")
          for model in model_names() for variant in ("", "-dg") if variant == "" or get_spec(model).channels]


@pytest.mark.parametrize("model, variant", MATRIX)
def test_every_model_dense_and_depgraph_exports_and_matches_pytorch(runs, tmp_path, model, variant):
    run_dir = runs[model] / f"{model}{variant}"
    exported = export_run(run_dir, tmp_path / "model.onnx")
    assert exported.max_rel_diff <= 1e-4 and exported.windows > 0
    import onnx

    operators = {node.op_type for node in onnx.load(str(tmp_path / "model.onnx")).graph.node}
    assert "AveragePool" not in operators  # moving averages export as matrices (ONNX Runtime pools slowly)
    sidecar = read_sidecar(tmp_path / "model.onnx")
    assert [item["name"] for item in sidecar["inputs"]] == [name for name, _, _ in INPUTS]
    assert sidecar["batch_size"] is None and sidecar["columns"] == ["a", "b", "OT"]
    assert (sidecar["seq_len"], sidecar["label_len"], sidecar["pred_len"]) == (24, 12, 12)
    assert sidecar["run"]["method"] == ("depgraph" if variant else "dense")
    # other windows (validation) at another batch size than the export traced: the batch dimension is dynamic
    run = api.load(run_dir)
    inputs = _windows(run, "val", 3)
    with seeded_inference(torch.device("cpu")):
        expected = run.model.eval()(*inputs).numpy()
    got = OnnxForecaster(tmp_path / "model.onnx")(*inputs)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.fixture(scope="module")
def informer_onnx(runs, tmp_path_factory):
    """Informer (ProbSparse sampling: frozen in the file, seeded in PyTorch) exported by the CLI at batch size 1."""
    folder = tmp_path_factory.mktemp("informer-onnx")
    result = runner.invoke(app, ["export", str(runs["Informer"] / "Informer"), "--out", str(folder / "m.onnx"),
                                 "--batch-size", "1"])
    assert result.exit_code == 0 and "ONNX Runtime matches PyTorch" in result.output, result.output
    return folder


def test_predict_with_onnx_runtime_gives_the_dense_forecast(runs, informer_onnx, tmp_path):
    run_dir = runs["Informer"] / "Informer"
    (tmp_path / "m.onnx").write_bytes((informer_onnx / "m.onnx").read_bytes())
    (tmp_path / "m.onnx.json").write_text((informer_onnx / "m.onnx.json").read_text())
    dense = runner.invoke(app, ["predict", str(run_dir), "--out", str(tmp_path / "dense.csv"), "--engine", "dense"])
    onnx = runner.invoke(app, ["predict", str(run_dir), "--out", str(tmp_path / "onnx.csv"), "--engine", "onnx",
                               "--onnx", str(tmp_path / "m.onnx")])
    assert dense.exit_code == 0 and onnx.exit_code == 0, onnx.output
    a, b = pd.read_csv(tmp_path / "dense.csv"), pd.read_csv(tmp_path / "onnx.csv")
    assert list(a.columns) == list(b.columns) and (a["date"] == b["date"]).all()
    values_a, values_b = a.drop(columns="date").to_numpy(), b.drop(columns="date").to_numpy()
    assert np.abs(values_a - values_b).max() <= 1e-4 * np.abs(values_a).max()
    assert json.loads((tmp_path / "m.onnx.json").read_text())["batch_size"] == 1
    with pytest.raises(TsPruneError, match="batch size 1"):
        OnnxForecaster(tmp_path / "m.onnx")(*_windows(api.load(run_dir), "test", 2))


def test_bad_files_give_one_line_errors(runs, informer_onnx, tmp_path):
    run_dir = runs["Informer"] / "Informer"
    for name in ("m.onnx", "m.onnx.json"):
        (tmp_path / name).write_bytes((informer_onnx / name).read_bytes())
    other = runs["Informer"] / "Informer-dg"
    with pytest.raises(TsPruneError, match="exported from another run"):
        api.predict(other, engine="onnx", onnx=tmp_path / "m.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a protobuf at all")
    (tmp_path / "bad.onnx.json").write_text((tmp_path / "m.onnx.json").read_text())
    (tmp_path / "m2.onnx").write_bytes((tmp_path / "m.onnx").read_bytes())
    (tmp_path / "m2.onnx.json").write_text("{ not json")
    cases = {
        "bad.onnx": "is not a loadable ONNX model",
        "m2.onnx": "m2.onnx.json is corrupt",
        "missing.onnx": "not found: export the run first",
    }
    for name, message in cases.items():
        result = runner.invoke(app, ["predict", str(run_dir), "--out", str(tmp_path / "f.csv"), "--engine", "onnx",
                                     "--onnx", str(tmp_path / name)])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) <= 2, result.output  # one message (rich may wrap it once)
    both = runner.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "x.onnx"), "--batch-size", "2",
                               "--dynamic-batch"])
    assert both.exit_code == 2 and "not both" in both.output
    sidecar = read_sidecar(tmp_path / "m.onnx")  # plain JSON: what a caller without tsprune needs
    assert sidecar["scaler"]["mean"] and sidecar["time_features"]["features"] == [
        "hour_of_day", "day_of_week", "day_of_month", "day_of_year"]
    assert sidecar["time_features"] == time_feature_recipe("h")  # the data module's features, nothing typed twice
    assert sidecar["run"]["weights_sha256"] and sidecar["check"]["max_rel_diff"] <= 1e-4
    import onnx

    declared = [entry.version for entry in onnx.load(str(tmp_path / "m.onnx")).opset_import if entry.domain == ""]
    assert declared == [sidecar["opset"]]  # the exporter's own opset, recorded without reloading the file


def test_the_run_check_reads_the_weights_once_and_still_catches_a_changed_run(runs, informer_onnx, tmp_path,
                                                                            monkeypatch):
    """``predict --engine onnx`` checks the file against the run's weights on every call; the weights are hashed
    once per version of the file, and a run saved again with other weights is refused."""
    run_dir = tmp_path / "run"
    shutil.copytree(runs["Informer"] / "Informer", run_dir)  # a path no earlier check has seen
    onnx_file = informer_onnx / "m.onnx"
    hashed = []
    module = importlib.import_module("tsprune.export")  # `tsprune.export` the attribute is the api function
    real = module._sha256_file
    monkeypatch.setattr(module, "_sha256_file", lambda path: hashed.append(path) or real(path))
    first = api.predict(run_dir, engine="onnx", onnx=onnx_file)
    second = api.predict(run_dir, engine="onnx", onnx=onnx_file)
    forecaster = OnnxForecaster(onnx_file)
    run = api.load(run_dir)
    forecaster.check_run(run)
    forecaster.check_run(run)
    assert len(hashed) == 1 and first.equals(second)
    with torch.no_grad():
        next(run.model.parameters()).add_(0.5)
    save_run(run, run_dir)  # same directory, other weights
    with pytest.raises(TsPruneError, match="exported from another run"):
        api.predict(run_dir, engine="onnx", onnx=onnx_file)
    assert len(hashed) == 2


FREQUENCIES = ["s", "15s", "min", "15min", "h", "3h", "D", "B", "W", "W-TUE", "14D", "MS", "ME", "QS", "YS"]


def test_every_calendar_feature_has_a_formula_that_computes_it():
    """Each feature's sidecar formula, read back as numbers, gives the values the data pipeline computes."""
    dates = pd.date_range("2019-12-28 22:58:57", periods=5000, freq="7h13min11s")  # across a year's end
    pattern = r"(\w+) = \(?(\w+)(?: - (\d+)\))? / (\d+) - 0\.5 \(\2 from (\d+) to (\d+)(, [^)]+)?\)"
    for name, feature in FEATURES.items():
        found = re.fullmatch(pattern, feature.formula)
        assert found, feature.formula
        named, field, offset, span, first, last = found.groups()[:6]
        assert (named, field) == (name, feature.field) and int(offset or 0) == int(first)
        assert int(span) == int(last) - int(first)
        raw = dates.isocalendar().week.to_numpy() if field == "iso_week" else getattr(dates, field)
        values = feature.values(dates)
        assert np.array_equal(values, (np.asarray(raw) - int(first)) / int(span) - 0.5)
        assert values.min() >= -0.5 and values.max() <= 0.5


@pytest.mark.parametrize("freq", FREQUENCIES)
def test_the_sidecar_lists_exactly_the_features_the_data_module_computes(freq):
    recipe = time_feature_recipe(freq)
    dates = pd.date_range("2024-02-27", periods=50, freq=freq)
    marks = time_features(dates, freq)
    assert recipe["features"] == list(recipe["formulas"]) == feature_names(freq)
    assert marks.shape == (50, len(recipe["features"]))
    for column, name in enumerate(recipe["features"]):
        assert recipe["formulas"][name] == FEATURES[name].formula
        assert np.array_equal(marks[:, column], FEATURES[name].values(dates).astype(np.float32))


def test_an_unknown_frequency_is_one_line():
    with pytest.raises(TsPruneError, match="unknown frequency 'fortnightly'"):
        time_feature_recipe("fortnightly")


def test_an_operator_the_exporter_cannot_translate_is_named(runs, tmp_path, monkeypatch):
    def refuse(*_, **__):
        inner = RuntimeError("No ONNX function found for <OpOverload(op='aten.frobnicate', overload='default')>")
        raise RuntimeError("Failed to convert the exported program to an ONNX model.") from inner

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(TsPruneError, match=r"cannot be exported to ONNX at operator aten\.frobnicate"):
        export_run(runs["Transformer"] / "Transformer", tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written is left


def test_a_sparse_compiled_run_is_refused(runs, tmp_path):
    pruned = api.prune(runs["Transformer"] / "Transformer", "magnitude", 0.2, out=tmp_path / "mag",
                       batch_sizes=(2,), latency_repeats=1, threads=1, device="cpu")
    compiled = api.compile_run(pruned, batch_size=2, out=tmp_path / "compiled", force="csr", threads=1)
    assert compiled.sparse_plan
    with pytest.raises(TsPruneError, match="export the run it was compiled from"):
        export_run(tmp_path / "compiled", tmp_path / "m.onnx")
    export_run(tmp_path / "mag", tmp_path / "mag.onnx")  # the masked run itself exports: dense with zeros


def test_the_graph_is_described_by_the_model_input_table():
    """The sidecar's inputs and output are the model's own table (``models.base``), in forward's order; the file
    adds only where the columns are listed."""
    assert [(name, shape) for name, shape, _ in INPUTS] == [(t.name, t.shape) for t in MODEL_INPUTS]
    assert OUTPUT == (MODEL_OUTPUT.name, MODEL_OUTPUT.shape, MODEL_OUTPUT.meaning)
    for (_, _, meaning), tensor in zip(INPUTS, MODEL_INPUTS, strict=True):
        assert meaning.startswith(tensor.meaning)


def test_the_sidecar_states_the_data_modules_scaler_and_output_columns(runs, informer_onnx):
    sidecar = read_sidecar(informer_onnx / "m.onnx")
    run = api.load(runs["Informer"] / "Informer")
    assert sidecar["scaler"]["formula"] == Scaler.FORMULA
    assert sidecar["output_columns"] == run.output_columns == run.data().output_columns
    assert [item["meaning"] for item in sidecar["inputs"]] == [meaning for _, _, meaning in INPUTS]


def test_a_bad_batch_size_is_one_check_with_one_message(runs, tmp_path):
    from tsprune.measure import example_inputs

    run_dir = runs["Transformer"] / "Transformer"
    with pytest.raises(TsPruneError, match="batch_size must be at least 1, got 0") as caught:
        example_inputs(api.load(run_dir).data(), 0)
    assert caught.value.options == ("batch_size",)
    with pytest.raises(TsPruneError, match="batch_size must be at least 1, got 0"):
        export_run(run_dir, tmp_path / "out" / "m.onnx", batch_size=0)
    assert not (tmp_path / "out").exists()  # refused before anything is written
    with pytest.raises(TsPruneError, match="batch_size must be at least 1, got 0"):
        api.compile_run(run_dir, batch_size=0)
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "m.onnx"), "--batch-size", "-1"])
    assert result.exit_code == 2 and "--batch-size must be at least 1, got -1" in result.output, result.output


def test_predictions_reuse_one_onnx_session_per_version_of_the_file(runs, informer_onnx, tmp_path, monkeypatch):
    """Building an ONNX Runtime session loads and optimises the graph: ``predict --engine onnx`` builds it once per
    version of the file and its sidecar, and a re-exported file gets a new one."""
    run_dir = runs["Informer"] / "Informer"
    onnx_file = tmp_path / "m.onnx"  # a path no earlier prediction has used
    for name in ("m.onnx", "m.onnx.json"):
        shutil.copy(informer_onnx / name, tmp_path / name)
    module = importlib.import_module("tsprune.export")  # `tsprune.export` the attribute is the api function
    built = []
    real = module._session
    monkeypatch.setattr(module, "_session", lambda ort, path, threads: built.append(path) or real(ort, path, threads))
    first = api.predict(run_dir, engine="onnx", onnx=onnx_file)
    second = api.predict(run_dir, engine="onnx", onnx=onnx_file)
    assert len(built) == 1 and first.equals(second)

    def export_again(name: str) -> None:  # as an export writes: a new file, renamed into place (atomic_path)
        shutil.copy(informer_onnx / name, tmp_path / "staged")
        os.replace(tmp_path / "staged", tmp_path / name)

    export_again("m.onnx")
    assert api.predict(run_dir, engine="onnx", onnx=onnx_file).equals(first) and len(built) == 2
    export_again("m.onnx.json")  # the sidecar alone (its batch size, its run) is a new version too
    api.predict(run_dir, engine="onnx", onnx=onnx_file)
    api.predict(run_dir, engine="onnx", onnx=onnx_file)
    assert len(built) == 3
