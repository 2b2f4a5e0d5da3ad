"""Autoformer and FEDformer: shapes, and each vectorised mechanism against a plain loop version of the reference."""

from __future__ import annotations

import dataclasses
import copy

import pytest
import torch

from conftest import random_inputs
from tsprune.config import ModelConfig
from tsprune.models.autoformer import Autoformer
from tsprune.models.fedformer import FEDformer
from tsprune.models.layers.autocorrelation import AutoCorrelation
from tsprune.models.layers.decomposition import SeriesDecomposition
from tsprune.models.layers.fourier import FourierBlock, FourierCrossAttention, select_modes
from tsprune.models.reference import ReferenceAutoCorrelation, ReferenceFourierBlock, ReferenceFourierCrossAttention

torch.set_num_threads(1)

TINY = dict(d_model=16, n_heads=2, e_layers=2, d_layers=1, d_ff=32, seq_len=24, label_len=12, pred_len=8,
            moving_avg=5, factor=2, modes=5, dropout=0.0)


def tiny_config(name: str, **overrides) -> ModelConfig:
    return ModelConfig(name=name, **{**TINY, **overrides})


def inputs(config: ModelConfig, batch: int = 3, seed: int = 0):
    return random_inputs(config, batch, seed, device="cpu")


# ---------------------------------------------------------------------------------------------- models


@pytest.mark.parametrize("cls", [Autoformer, FEDformer])
@pytest.mark.parametrize("overrides", [{}, {"enc_in": 3, "dec_in": 3, "c_out": 1}, {"label_len": 0, "d_layers": 2}])
def test_model_shapes_train_and_eval(cls, overrides):
    torch.manual_seed(0)
    config = tiny_config(cls.__name__, **overrides)
    model = cls(config)
    batch = inputs(config)
    out = model(*batch)
    assert out.shape == (3, config.pred_len, config.c_out)
    out.square().mean().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(*batch).shape == (3, config.pred_len, config.c_out)
    # output_layers name real modules: the seasonal projection and each decoder layer's trend conv.
    assert len(model.output_layers) == 1 + config.d_layers
    for name in model.output_layers:
        layer = model.get_submodule(name)
        out_channels = layer.out_channels if isinstance(layer, torch.nn.Conv1d) else layer.out_features
        assert isinstance(layer, (torch.nn.Linear, torch.nn.Conv1d)) and out_channels == config.c_out


def test_registered():
    from tsprune.models.registry import _REGISTRY

    assert _REGISTRY["Autoformer"].cls is Autoformer and "factor" in _REGISTRY["Autoformer"].uses
    assert _REGISTRY["FEDformer"].cls is FEDformer and "mode_seed" in _REGISTRY["FEDformer"].uses


# ---------------------------------------------------------------------------------------------- decomposition


def loop_moving_average(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """Mean of the window around each step, the series extended by repeating its first/last value."""
    length = x.shape[1]
    back = (kernel - 1) // 2
    front = kernel - 1 - back
    out = torch.empty_like(x)
    for t in range(length):
        window = [x[:, min(max(s, 0), length - 1)] for s in range(t - front, t + back + 1)]
        out[:, t] = torch.stack(window).mean(0)
    return out


@pytest.mark.parametrize("kernel", [1, 4, 5, 25])
def test_series_decomposition_matches_loop(kernel):
    x = torch.randn(2, 13, 3, dtype=torch.float64)
    seasonal, trend = SeriesDecomposition(kernel)(x)
    expected = loop_moving_average(x, kernel)
    torch.testing.assert_close(trend, expected)
    torch.testing.assert_close(seasonal, x - expected)


# ---------------------------------------------------------------------------------------------- auto-correlation


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("length,source", [(20, 20), (21, 16), (14, 20)])
@pytest.mark.parametrize("gram_max_length", [0, AutoCorrelation.gram_max_length])  # evaluation: FFTs, Gram path
def test_autocorrelation_matches_roll_loop(training, length, source, gram_max_length):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(3, length, 2, 4, generator=g, dtype=torch.float64)
    k = torch.randn(3, source, 2, 4, generator=g, dtype=torch.float64)
    v = torch.randn(3, source, 2, 4, generator=g, dtype=torch.float64)
    mech = AutoCorrelation(factor=2).train(training)
    mech.gram_max_length = gram_max_length
    # The reference's algorithm: one roll (training) or gather (inference) per delay, [B, H, E, L] layout.
    torch.testing.assert_close(mech(q, k, v), ReferenceAutoCorrelation(2).train(training)(q, k, v))


def test_evaluation_takes_the_gram_path_for_short_windows_only(monkeypatch):
    calls: list[int] = []
    real = AutoCorrelation._real_mean_correlation
    monkeypatch.setattr(AutoCorrelation, "_real_mean_correlation",
                        lambda self, q, k: calls.append(q.shape[1]) or real(self, q, k))
    mech = AutoCorrelation(factor=1).eval()
    mech.gram_max_length = 16
    for length in (16, 17):
        mech(*(torch.randn(2, length, 2, 4) for _ in range(3)))
    mech.train()(*(torch.randn(2, 16, 2, 4) for _ in range(3)))
    assert calls == [16]  # evaluation at 16 steps; not at 17, nor in training


def test_autocorrelation_train_shares_delays_eval_does_not():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(4, 16, 2, 4, generator=g) for _ in range(3))
    mech = AutoCorrelation(factor=1)
    # A single sample in a batch of one behaves the same in both modes.
    torch.testing.assert_close(mech.train()(q[:1], k[:1], v[:1]), mech.eval()(q[:1], k[:1], v[:1]))
    assert not torch.allclose(mech.train()(q, k, v), mech.eval()(q, k, v))


# ---------------------------------------------------------------------------------------------- Fourier blocks


@pytest.mark.parametrize("mode_select", ["random", "low"])
@pytest.mark.parametrize("length", [20, 21])
def test_fourier_block_matches_mode_loop(mode_select, length):
    torch.manual_seed(0)
    block = FourierBlock(16, 2, length, modes=6, mode_select=mode_select, generator=torch.Generator().manual_seed(3))
    q = torch.randn(3, length, 2, 8)
    index = block.index.tolist()
    assert index == sorted(index) and len(index) == 6 and max(index) < length // 2
    if mode_select == "low":
        assert index == list(range(6))
    expected = ReferenceFourierBlock(block)(q).detach()  # the official loop over kept modes
    torch.testing.assert_close(block(q, q, q), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode_select", ["random", "low"])
def test_fourier_cross_attention_matches_mode_loop(mode_select):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(4)
    block = FourierCrossAttention(16, 2, seq_len_q=18, seq_len_kv=24, modes=5, mode_select=mode_select, generator=gen)
    # Enlarge the weights so the 1/(in*out) scaling does not make the comparison trivially ~0.
    with torch.no_grad():
        block.weight.mul_(256.0)
    q, k = torch.randn(3, 18, 2, 8), torch.randn(3, 24, 2, 8)
    expected = ReferenceFourierCrossAttention(block)(q, k).detach()  # the official per-mode copy loops
    out = block(q, k, torch.randn_like(k))
    assert out.abs().max() > 1e-3
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-6)


def test_mode_selection_reproducible_and_seeded():
    a = select_modes(40, 7, "random", torch.Generator().manual_seed(11))
    b = select_modes(40, 7, "random", torch.Generator().manual_seed(11))
    c = select_modes(40, 7, "random", torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(select_modes(10, 64, "random", torch.Generator().manual_seed(0))) == 5  # min(modes, L // 2)


def test_fedformer_modes_follow_seed_and_survive_reload(tmp_path):
    from safetensors.torch import load_model, save_model

    config = tiny_config("FEDformer", mode_seed=7)
    torch.manual_seed(0)
    model = FEDformer(config).eval()
    torch.manual_seed(1)
    same_seed = FEDformer(config)
    other = FEDformer(dataclasses.replace(config, mode_seed=8)).eval()
    buffers = dict(model.named_buffers())
    assert set(buffers) == {n for n, _ in other.named_buffers()} and buffers
    assert all(torch.equal(b, dict(same_seed.named_buffers())[n]) for n, b in buffers.items())
    assert any(not torch.equal(b, dict(other.named_buffers())[n]) for n, b in buffers.items())
    assert all(n in model.state_dict() for n in buffers)  # persistent: part of the checkpoint

    batch = inputs(config)
    with torch.no_grad():
        expected = model(*batch)
        other.load_state_dict(model.state_dict())
        torch.testing.assert_close(other(*batch), expected, rtol=0, atol=0)

        # Through safetensors (complex64 weights; the blocks shared across layers need save_model/load_model).
        path = tmp_path / "model.safetensors"
        save_model(model, str(path))
        third = FEDformer(dataclasses.replace(config, mode_seed=9)).eval()
        load_model(third, str(path))
        torch.testing.assert_close(third(*batch), expected, rtol=0, atol=0)


def test_fedformer_shares_blocks_across_layers_like_reference():
    model = FEDformer(tiny_config("FEDformer", e_layers=3))
    inner = [layer.attention.inner for layer in model.encoder.layers]
    assert all(block is inner[0] for block in inner)
    assert model.encoder.layers[0].attention.query is not model.encoder.layers[1].attention.query


def test_complex_tanh_matches_torch_including_large_real_parts_and_gradients():
    from tsprune.models.layers.fourier import complex_tanh

    torch.manual_seed(5)
    z = torch.complex(torch.randn(100_000) * 3, torch.randn(100_000) * 3)
    near_poles = torch.complex(torch.tensor([1e-8, -1e-6, 0.0]), torch.tensor([1.5707964, -1.5707960, 4.712389]))
    huge = torch.complex(torch.tensor([80.0, -80.0, 400.0]), torch.tensor([1.0, -3.0, 1e4]))
    z = torch.cat([z, near_poles, huge])
    exact = torch.tanh(z.to(torch.complex128))
    relative_error = (complex_tanh(z).to(torch.complex128) - exact).abs() / exact.abs()
    assert relative_error.max() < 1e-6  # as accurate as torch's complex64 tanh, poles included (no cancellation)
    mine, theirs = z.clone().requires_grad_(), z.clone().requires_grad_()
    torch.view_as_real(complex_tanh(mine)).sum().backward()
    torch.view_as_real(torch.tanh(theirs)).sum().backward()
    torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("real_dft", [False, True])
@pytest.mark.parametrize("block", ["self", "cross"])
def test_inference_reuses_the_relaid_fourier_weight_until_the_weight_changes(block, real_dft):
    """The mixing weight relaid for inference (``fourier.modes_first``; its real and imaginary parts on the real
    path, ``modes_first_parts``) gives the training path's numbers bit for bit, and follows in-place edits (pruning
    masks), copies and new tensors."""
    torch.manual_seed(0)
    module = FourierBlock(64, 8, 96, 32) if block == "self" else FourierCrossAttention(64, 8, 96, 96, 32)
    module.real_dft = real_dft
    inputs = [torch.randn(3, 96, 8, 8) for _ in range(1 if block == "self" else 2)]

    def both() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            inference = module(*inputs)
        with torch.no_grad():
            no_grad = module(*inputs)
        return module(*inputs).detach(), no_grad, inference

    trained, *inferred = both()
    assert all(torch.equal(trained, other) for other in inferred)
    with torch.no_grad():
        module.weight.mul_(torch.rand_like(module.weight.real) > 0.5)  # a mask applied in place
    masked, *inferred = both()
    assert not torch.equal(masked, trained) and all(torch.equal(masked, other) for other in inferred)
    twin = copy.deepcopy(module)
    with torch.no_grad():
        twin.weight.zero_()
        assert torch.equal(module(*inputs), masked) and not twin(*inputs).any()
    module.weight = torch.nn.Parameter(torch.ones_like(module.weight))  # a new tensor
    fresh, *inferred = both()
    assert not torch.equal(fresh, masked) and all(torch.equal(fresh, other) for other in inferred)


def test_a_frozen_mode_layout_computes_the_same_and_leaves_the_state_alone():
    """``freeze_mode_layout`` (exports) gives the real path constant relaid weights: the same numbers, traced or not,
    and the same state dict."""
    from tsprune.models.layers.fourier import freeze_mode_layout

    torch.manual_seed(0)
    model = torch.nn.ModuleList([FourierBlock(64, 8, 96, 32), FourierCrossAttention(64, 8, 96, 96, 32)]).eval()
    for block in model:
        block.real_dft = True
    q, k = torch.randn(2, 96, 8, 8), torch.randn(2, 96, 8, 8)
    with torch.no_grad():
        before = [model[0](q), model[1](q, k)]
    keys = set(model.state_dict())
    assert freeze_mode_layout(model) == 2 and set(model.state_dict()) == keys
    with torch.no_grad():
        assert torch.equal(model[0](q), before[0]) and torch.equal(model[1](q, k), before[1])
        compiled = torch.compile(model[1], backend="eager", fullgraph=True)  # traced: reads the buffers
        torch.testing.assert_close(compiled(q, k), before[1])
        model[1].frozen_real.zero_()  # the buffers, not the parameter, are what the frozen copy multiplies by
        model[1].frozen_imag.zero_()
        assert not model[1](q, k).any() and not torch.compile(model[1], backend="eager")(q, k).any()
