"""Exportable layer paths: real-arithmetic DFTs (``real_dft``) against ``torch.fft``, frozen ProbSparse sampling
against seeded evaluation, and one ONNX export per model that needed them, checked in ONNX Runtime."""

from __future__ import annotations

import contextlib
import copy
import io
import warnings

import numpy as np
import pytest
import torch

from conftest import TINY, random_inputs
from tsprune.errors import TsPruneError
from tsprune.models.base import MODEL_INPUTS, MODEL_OUTPUT
from tsprune.models.layers.autocorrelation import AutoCorrelation
from tsprune.models.layers.decomposition import MovingAverage, use_averaging_matrix
from tsprune.models.layers.fourier import FourierCrossAttention
from tsprune.models.layers.prob_attention import ProbAttention, freeze_sampling, unfreeze_sampling
from tsprune.models.layers.real_dft import irfft, rfft, use_real_dft
from tsprune.models.registry import build_model, default_config
from tsprune.runtime import evaluating

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
INPUT_NAMES = tuple(tensor.name for tensor in MODEL_INPUTS)  # the forward signature, from its one table
# One encoder layer halves the graph, and so the export time; every code path still runs.
EXPORT_SIZE = {**TINY, "e_layers": 1}


def _rel(got, expected) -> float:
    """max |got - expected| / max |expected|."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def _model(name: str, size: dict | None = None, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(default_config(name, **(size or TINY), **overrides)).eval()


def _seeded(model: torch.nn.Module, inputs, seed: int = 0) -> torch.Tensor:
    with evaluating(model, CPU, seed):
        return model(*inputs)


# ----------------------------------------------------------------------------------------------- DFT helpers


@pytest.mark.parametrize("kernel", [25, 24, 5])
@pytest.mark.parametrize("length", [96, 144, 7])
def test_the_averaging_matrix_is_the_moving_average(kernel, length):
    average = MovingAverage(kernel)
    x = torch.randn(3, length, 4, generator=torch.Generator().manual_seed(kernel + length))
    pooled = average(x)
    assert use_averaging_matrix(torch.nn.Sequential(average)) == 1 and average.as_matrix
    torch.testing.assert_close(average(x), pooled, rtol=0, atol=1e-6)
    use_averaging_matrix(average, enabled=False)
    assert torch.equal(average(x), pooled)


def test_compiled_graphs_take_the_averaging_matrix():
    """Under ``torch.compile`` / ``torch.export`` the moving average is the ``[L, L]`` matrix product: inductor's fused
    pooling over the replicated ends measured 80 ms of Autoformer's compiled sparse pass at batch 32."""
    ops: list[str] = []

    def record(graph: torch.fx.GraphModule, _inputs):
        ops.extend(str(node.target) for node in graph.graph.nodes if node.op == "call_function")
        return graph.forward

    average = MovingAverage(25)
    x = torch.randn(2, 48, 3, generator=torch.Generator().manual_seed(0))
    got = torch.compile(average, backend=record, fullgraph=True)(x)
    assert any("matmul" in op for op in ops) and not any("pool" in op for op in ops)
    assert not average.as_matrix  # eager still pools
    torch.testing.assert_close(got, average(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("length", [15, 16])
@pytest.mark.parametrize("n", [None, 11, 22])
def test_real_rfft_matches_torch(length, n):
    x = torch.randn(3, length, 2, 4, generator=torch.Generator().manual_seed(length))
    expected = torch.fft.rfft(x, n=n, dim=1)
    real, imag = rfft(x, dim=1, n=n)
    assert torch.allclose(real, expected.real, atol=1e-5) and torch.allclose(imag, expected.imag, atol=1e-5)
    # Selected bins only, in any order, as FEDformer keeps them.
    freqs = torch.tensor([5, 0, 3])
    real, imag = rfft(x, dim=1, n=n, freqs=freqs)
    assert torch.allclose(torch.complex(real, imag), expected[:, freqs], atol=1e-5)


@pytest.mark.parametrize("bins", [8, 9, 12])
@pytest.mark.parametrize("n", [None, 14, 15, 30])
def test_real_irfft_matches_torch(bins, n):
    gen = torch.Generator().manual_seed(bins)
    # Random imaginary parts everywhere, DC and Nyquist included: irfft must ignore those two.
    spectrum = torch.complex(torch.randn(2, 3, bins, generator=gen), torch.randn(2, 3, bins, generator=gen))
    expected = torch.fft.irfft(spectrum, n=n, dim=-1)
    got = irfft(spectrum.real, spectrum.imag, n=n, dim=-1)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-6)
    # Bins at given frequencies equal irfft of the zero-filled spectrum they scatter to.
    length = n or 2 * (bins - 1)
    freqs = torch.tensor([0, 2, 5, length // 2])
    full = torch.zeros(2, 3, length // 2 + 1, dtype=spectrum.dtype).index_copy(-1, freqs, spectrum[..., :4])
    got = irfft(spectrum.real[..., :4], spectrum.imag[..., :4], n=length, dim=-1, freqs=freqs)
    assert torch.allclose(got, torch.fft.irfft(full, n=length, dim=-1), atol=1e-6)


# ------------------------------------------------------------------------------ real path of whole models


@pytest.mark.parametrize("name, overrides, activation", [
    ("Autoformer", {}, None),
    ("FEDformer", {}, None),
    ("FEDformer", {"mode_select": "low"}, "softmax"),
])
def test_real_dft_path_matches_fft_path(name, overrides, activation):
    model = _model(name, **overrides)
    for module in model.modules():
        if isinstance(module, AutoCorrelation):
            module.gram_max_length = 0  # the default path's FFTs (evaluation takes the real path for short windows)
    if activation is not None:  # FourierCrossAttention's other activation (the model builds tanh)
        for module in model.modules():
            if isinstance(module, FourierCrossAttention):
                module.activation = activation
    keys = list(model.state_dict())
    x = random_inputs(model.config, batch=3)
    with torch.no_grad():
        expected = model(*x)
        assert use_real_dft(model) == (4 if name == "Autoformer" else 3)  # FEDformer shares its three blocks
        got = model(*x)
        use_real_dft(model, enabled=False)
        back = model(*x)
    assert _rel(got, expected) < 1e-5
    assert torch.equal(back, expected)  # the default path is untouched
    assert list(model.state_dict()) == keys


# ------------------------------------------------------------------------------------ frozen ProbSparse sampling


@pytest.mark.parametrize("layout", ["tslib", "paper"])
def test_frozen_sampling_equals_seeded_evaluation(layout):
    model = _model("Informer", prob_layout=layout)
    keys = list(model.state_dict())
    x2, x5 = random_inputs(model.config, batch=2), random_inputs(model.config, batch=5, seed=1)
    with torch.no_grad():
        expected2, expected5 = _seeded(model, x2), _seeded(model, x5)
        assert freeze_sampling(model, x2, CPU) == 3  # 2 encoder layers + 1 decoder self-attention
        assert list(model.state_dict()) == keys  # not persistent: checkpoints load as before
        # Frozen: no random draw is left, so another seed (or none) changes nothing; any batch size is served.
        assert torch.equal(_seeded(model, x2, seed=7), expected2)
        assert torch.equal(model(*x5), expected5)
        assert unfreeze_sampling(model) == 3
        assert torch.equal(_seeded(model, x2), expected2)
        assert not torch.equal(_seeded(model, x2, seed=7), expected2)  # random again


def test_frozen_sampling_refuses_other_lengths():
    attention = ProbAttention(factor=2)
    q = torch.randn(2, 20, 2, 4)
    assert freeze_sampling(attention, (q, q, q), "cpu") == 1
    assert attention.frozen_sample is not None and attention.frozen_sample.shape[0] == 20
    attention(q, q, q)
    shorter = q[:, :12]
    with pytest.raises(TsPruneError, match="frozen for 20 queries"):
        attention(shorter, shorter, shorter)
    with pytest.raises(TsPruneError, match="20 keys"):
        attention(q, shorter, shorter)  # same queries, other keys
    unfreeze_sampling(attention)
    attention(shorter, shorter, shorter)


def test_freeze_sampling_leaves_other_models_and_state_alone():
    model = _model("Transformer")
    model.train()
    assert freeze_sampling(model, random_inputs(model.config), CPU) == 0
    assert model.training
    informer = _model("Informer").train()
    state = torch.random.get_rng_state()
    freeze_sampling(informer, random_inputs(informer.config), CPU)
    assert informer.training and torch.equal(torch.random.get_rng_state(), state)


# ------------------------------------------------------------------------------------------ ONNX export


@pytest.fixture(scope="module", params=["Autoformer", "FEDformer", "Informer"])
def exported(request, tmp_path_factory, one_thread):
    """``(model, session)``: the model (default paths, random sampling) and an ONNX Runtime session of its export at
    batch 2 with a dynamic batch dimension (real DFTs, sampling frozen from a seeded pass), built once per model."""
    ort = pytest.importorskip("onnxruntime")
    model = _model(request.param, EXPORT_SIZE)
    trace = random_inputs(model.config, batch=2)
    exportable = copy.deepcopy(model)
    use_real_dft(exportable)
    use_averaging_matrix(exportable)
    freeze_sampling(exportable, trace, CPU)
    batch = torch.export.Dim("batch", min=1)
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's chatter
        torch.onnx.export(exportable, trace, str(path), dynamo=True, verbose=False, external_data=False,
                          input_names=list(INPUT_NAMES), output_names=[MODEL_OUTPUT.name],
                          dynamic_shapes=tuple({0: batch} for _ in INPUT_NAMES))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return model, ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.heavy  # three exports (~1 min): tests/test_export.py checks the product path in `make test`
@pytest.mark.parametrize("batch", [2, 1, 5])
def test_onnx_export_matches_pytorch(exported, batch):
    model, session = exported
    x = random_inputs(model.config, batch=batch, seed=batch)
    with torch.no_grad():
        expected = _seeded(model, x)  # tsprune's seeded evaluation of the unchanged model
    got = session.run(None, {name: t.numpy() for name, t in zip(INPUT_NAMES, x, strict=True)})[0]
    assert got.shape == tuple(expected.shape)
    assert _rel(got, expected.numpy()) <= 1e-4
