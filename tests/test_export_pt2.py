"""PyTorch 2 packages (``tsprune.export_pt2``): a sparse-compiled run round-trips through ``export --format pt2`` and
``predict --engine pt2`` to the sparse engine's forecast; bad packages and a missing or foreign op library give
one-line errors. AOTInductor compiles a package in about a minute here, so the packaging tests run in
``make test-heavy`` (CI runs it); the checks that need no package run in ``make test``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tsprune import api
from tsprune.cli import app
from tsprune.errors import TsPruneError
from tsprune.export_pt2 import PT2_FORMAT, Pt2Forecaster, export_pt2, library_path
from tsprune.sparse import kernel

TINY = {"d_model": 16, "d_ff": 32, "n_heads": 2, "e_layers": 1, "d_layers": 1}
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory):
    """A tiny Transformer, magnitude-pruned to 0.2 and compiled with every pruned layer on tsprune's kernel."""
    if not kernel.available():
        pytest.skip(f"the C++ sparse kernel is unavailable here: {kernel.reason()}")
    folder = tmp_path_factory.mktemp("pt2")
    t = np.arange(300)
    frame = pd.DataFrame({"date": pd.date_range("2022-01-01", periods=300, freq="h").astype(str),
                          "a": np.sin(t / 6.0), "b": np.cos(t / 9.0), "OT": np.sin(t / 4.0)})
    frame.to_csv(folder / "data.csv", index=False)
    config = api.make_config("Transformer", data={"data_path": str(folder / "data.csv"), "seq_len": 24,
                                                  "label_len": 12, "pred_len": 12},
                             train={"epochs": 1, "max_steps": 2, "device": "cpu"}, **TINY)
    api.train(config, out=folder / "dense", progress=False)
    api.prune(folder / "dense", "magnitude", 0.2, out=folder / "pruned", timed=False, threads=1, device="cpu")
    api.compile_run(folder / "pruned", batch_size=2, out=folder / "sparse", threads=1, force="pcsr", device="cpu")
    return folder


@pytest.fixture(scope="module")
def package(sparse_run):
    result = runner.invoke(app, ["export", str(sparse_run / "sparse"), "--out", str(sparse_run / "sparse" /
                                                                                   "model.pt2")])
    assert result.exit_code == 0 and "the AOTInductor package matches PyTorch" in result.output, result.output
    return sparse_run / "sparse" / "model.pt2"


@pytest.mark.heavy
def test_a_sparse_package_forecasts_as_the_sparse_engine(sparse_run, package, tmp_path):
    sidecar = json.loads((package.parent / "model.pt2.json").read_text())
    assert sidecar["format"] == PT2_FORMAT and sidecar["check"]["max_rel_diff"] <= 1e-4
    assert sidecar["op_library"]["file"] == library_path(package).name and library_path(package).is_file()
    run_dir = str(sparse_run / "sparse")
    sparse = runner.invoke(app, ["predict", run_dir, "--out", str(tmp_path / "sparse.csv"), "--engine", "sparse"])
    pt2 = runner.invoke(app, ["predict", run_dir, "--out", str(tmp_path / "pt2.csv"), "--engine", "pt2"])
    assert sparse.exit_code == 0 and pt2.exit_code == 0, pt2.output
    a, b = pd.read_csv(tmp_path / "sparse.csv"), pd.read_csv(tmp_path / "pt2.csv")
    assert list(a.columns) == list(b.columns) and (a["date"] == b["date"]).all()
    values_a, values_b = a.drop(columns="date").to_numpy(), b.drop(columns="date").to_numpy()
    assert np.abs(values_a - values_b).max() <= 1e-4 * np.abs(values_a).max()


@pytest.mark.heavy
def test_bad_packages_and_libraries_give_one_line_errors(sparse_run, package, tmp_path):
    library = library_path("model.pt2").name  # the sidecar names the library the package was exported with

    def copy_to(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for file in ("model.pt2", "model.pt2.json", library):
            shutil.copyfile(package.parent / file, folder / file)
        return folder / "model.pt2"

    (copy_to("corrupt")).write_bytes(b"not a zip archive")
    (copy_to("nolib").parent / library).unlink()
    (copy_to("foreign").parent / library).write_bytes(b"\x7fELF not the library")
    cases = {"corrupt": "is not a loadable PyTorch 2 package", "nolib": f"needs its op library {library}",
             "foreign": "is not the op library", "missing": "not found: export the run first"}
    for name, message in cases.items():
        result = runner.invoke(app, ["predict", str(sparse_run / "sparse"), "--out", str(tmp_path / "f.csv"),
                                     "--engine", "pt2", "--onnx", str(tmp_path / name / "model.pt2")])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) <= 3, result.output
    with pytest.raises(TsPruneError, match="exported from another run"):
        api.predict(sparse_run / "pruned", engine="pt2", onnx=package)


def test_a_package_needs_the_pt2_suffix_and_a_known_format(sparse_run, tmp_path):
    with pytest.raises(TsPruneError, match=r"a PyTorch 2 package is a \.pt2 file"):
        export_pt2(sparse_run / "sparse", tmp_path / "model.zip")
    result = runner.invoke(app, ["export", str(sparse_run / "dense"), "--out", str(tmp_path / "m.x"),
                                 "--format", "tflite"])
    assert result.exit_code == 2 and "unknown export --format 'tflite'" in result.output
    (tmp_path / "m.pt2").write_bytes(b"")
    (tmp_path / "m.pt2.json").write_text(json.dumps({"format": "tsprune-onnx/1"}))
    with pytest.raises(TsPruneError, match="not a tsprune tsprune-pt2/1 sidecar"):
        Pt2Forecaster(tmp_path / "m.pt2")
    assert not list(tmp_path.glob(".model.zip*"))  # nothing half-written left behind


@pytest.mark.heavy
def test_layers_on_torch_csr_kernels_run_on_tsprunes_kernel_in_the_package(sparse_run, tmp_path):
    csr = api.compile_run(sparse_run / "pruned", batch_size=2, threads=1, force="csr", device="cpu")
    layers = sum(entry["kernel"] == "csr" for entry in csr.sparse_plan["layers"].values())
    assert layers > 0
    exported = export_pt2(csr, tmp_path / "csr.pt2")
    sidecar = json.loads((tmp_path / "csr.pt2.json").read_text())
    assert sidecar["op_library"]["moved_from_torch_kernels"] == layers and exported.max_rel_diff <= 1e-4


@pytest.mark.heavy
@pytest.mark.parametrize("name", ["Autoformer", "FEDformer"])
def test_the_frequency_models_package_and_match_pytorch(name, sparse_run, tmp_path):
    """Autoformer and FEDformer run their real-arithmetic paths in a package (FEDformer's Fourier weights as relaid
    constants, ``fourier.freeze_mode_layout``); the export's own check compares the package with PyTorch."""
    config = api.make_config(name, data={"data_path": str(sparse_run / "data.csv"), "seq_len": 24, "label_len": 12,
                                         "pred_len": 12},
                             train={"epochs": 1, "max_steps": 2, "device": "cpu"}, **{**TINY, "modes": 8})
    api.train(config, out=tmp_path / "dense", progress=False)
    exported = export_pt2(tmp_path / "dense", tmp_path / "model.pt2", batch_size=2)
    assert exported.max_rel_diff < 1e-4
    package = Pt2Forecaster(tmp_path / "model.pt2")
    assert package.sidecar["format"] == PT2_FORMAT
