"""One contract over every registered forecaster: shapes, feature modes, save -> load, determinism."""

from __future__ import annotations

import pytest
import torch

import inspect

from conftest import DEVICE, TINY, random_inputs, table_shape
from tsprune.config import DataConfig, RunConfig, TrainConfig
from tsprune.data.dataset import Scaler
from tsprune.models.base import MODEL_INPUTS, MODEL_OUTPUT, decoder_input
from tsprune.models.registry import build_model, default_config, get_spec, model_names, study_models
from tsprune.run import Run, load_run, save_run

MODELS = model_names()


def tiny_config(name: str, pred_len: int = 96, enc_in: int = 7, c_out: int = 7, **extra):
    return default_config(name, **{**TINY, **extra}, enc_in=enc_in, dec_in=enc_in, c_out=c_out, seq_len=96,
                          label_len=48, pred_len=pred_len, n_time_features=4)


def test_the_studys_five_models_and_the_small_ones_are_registered():
    assert model_names("study") == study_models() == ["Transformer", "Informer", "Autoformer", "FEDformer",
                                                      "Crossformer"]
    assert model_names("small") == ["DLinear", "PatchTST", "iTransformer"]
    assert MODELS == [*model_names("study"), *model_names("small")]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("pred_len", [96, 192, 336, 720])
def test_forward_shapes(name, pred_len):
    config = tiny_config(name, pred_len)
    model = build_model(config).to(DEVICE).eval()
    with torch.no_grad():
        out = model(*random_inputs(config))
    assert out.shape == (2, pred_len, 7)
    assert out.shape == table_shape(MODEL_OUTPUT.shape, batch=2, pred_len=pred_len, c_out=config.c_out)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_attention_and_feed_forward_layers_read_row_major_inputs(name):
    """The residual stream stays row-major ``[B, L, C]``: elementwise ops keep an input's layout, so one channels-first
    view (a conv's output transposed back) would make every query/key/value/FFN Linear downstream copy its input
    first. The embeddings and Informer's distilling layer hand on contiguous tensors."""
    config = tiny_config(name, 96)
    model = build_model(config).to(DEVICE).eval()
    layers = {lname: module for lname, module in model.named_modules() if isinstance(module, torch.nn.Linear)
              and lname.rpartition(".")[2] in ("query", "key", "value", "linear1", "linear2")}
    strided: list[str] = []
    for lname, module in layers.items():
        module.register_forward_pre_hook(
            lambda _, args, lname=lname: None if args[0].is_contiguous() else strided.append(lname))
    with torch.no_grad():
        model(*random_inputs(config))
    assert strided == []
    assert layers or name == "DLinear"


@pytest.mark.parametrize("name", MODELS)
def test_forward_takes_the_inputs_of_the_table_in_its_order(name):
    """``models.base.MODEL_INPUTS`` is the forward signature of every model (names and order), so what describes
    the inputs (batches, the ONNX sidecar) describes what each model reads."""
    parameters = list(inspect.signature(get_spec(name).cls.forward).parameters)[1:]  # after self
    assert parameters == [tensor.name for tensor in MODEL_INPUTS]


def test_the_decoder_input_is_the_known_rows_then_zeros():
    x_enc = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)  # [batch, seq_len, enc_in]
    x_dec = decoder_input(x_enc, label_len=2, pred_len=4)
    assert x_dec.shape == table_shape(MODEL_INPUTS[2].shape, batch=2, label_len=2, pred_len=4, enc_in=3)
    assert torch.equal(x_dec[:, :2], x_enc[:, 3:]) and not x_dec[:, 2:].any()
    assert torch.equal(decoder_input(x_enc, label_len=0, pred_len=4), torch.zeros(2, 4, 3))  # no known rows
    assert torch.equal(decoder_input(x_enc, label_len=5, pred_len=0), x_enc)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("features, enc_in, c_out", [("S", 1, 1), ("MS", 7, 1)])
def test_feature_modes(name, features, enc_in, c_out):
    config = tiny_config(name, 96, enc_in=enc_in, c_out=c_out)
    model = build_model(config).to(DEVICE).eval()
    with torch.no_grad():
        out = model(*random_inputs(config))
    assert out.shape == (2, 96, c_out)


@pytest.mark.parametrize("name", MODELS)
def test_backward_reaches_every_parameter(name):
    config = tiny_config(name, 96)
    model = build_model(config).to(DEVICE).train()
    model(*random_inputs(config)).pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("name", MODELS)
def test_output_layers_exist(name):
    model = build_model(tiny_config(name))
    modules = dict(model.named_modules())
    fixed = (*model.output_layers, *model.fixed_output_layers)
    assert fixed, f"{name} declares no output layers"
    for layer in fixed:
        assert layer in modules, f"{name}.output_layers names missing module {layer}"


@pytest.mark.parametrize("name", MODELS)
def test_save_load_identical_outputs(name, tmp_path):
    config = tiny_config(name, 96, mode_seed=3)
    torch.manual_seed(0)
    model = build_model(config).eval()
    scaler = Scaler.fit(torch.randn(50, 7).double().numpy())
    run = Run(RunConfig(DataConfig(), config, TrainConfig()), model, scaler, [f"c{i}" for i in range(7)], "h",
              {"mse": 1.0})
    save_run(run, tmp_path / "run")
    torch.manual_seed(123)  # a different RNG state must not matter for the reload
    loaded = load_run(tmp_path / "run").model.eval()
    inputs = random_inputs(config)
    with torch.no_grad():
        torch.manual_seed(7)
        expected = model.to(DEVICE)(*inputs)
        torch.manual_seed(7)  # Informer samples keys at random: same RNG state, same sample
        got = loaded.to(DEVICE)(*inputs)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_initialisation(name):
    config = tiny_config(name)
    torch.manual_seed(11)
    first = build_model(config).state_dict()
    torch.manual_seed(11)
    second = build_model(config).state_dict()
    for key in first:
        assert torch.equal(first[key], second[key]), key
