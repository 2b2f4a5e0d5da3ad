"""Cost measurement: exact FLOP counts on hand-computable blocks, sparsity accounting, and ``measure`` on every
forecaster with real windows. Latency is checked for consistency only, never against wall-clock values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils.flop_counter import FlopCounterMode

from conftest import TINY
from tsprune.config import DataConfig
from tsprune.data.dataset import prepare_data
from tsprune.measure import (compare_latency, count_flops, count_params, example_inputs, flop_formulas, measure,
                             measure_latency)
from tsprune.models.layers.attention import SHORT_KEYS, AttentionLayer, FullAttention
from tsprune.models.layers.autocorrelation import AutoCorrelation
from tsprune.models.layers.fourier import FourierBlock
from tsprune.models.registry import build_model, default_config, model_names

aten = torch.ops.aten


@pytest.fixture(scope="module")
def data():
    return prepare_data(DataConfig(dataset="ETTh1"))


class Apply(nn.Module):
    """A module around a plain function, to count one operator alone."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


# ---------------------------------------------------------------------------------------------- FLOPs


def test_linear_flops_are_exact():
    batch, length, d_in, d_out = 2, 5, 6, 4
    result = count_flops(nn.Linear(d_in, d_out), (torch.randn(batch, length, d_in),))
    assert result["flops"] == 2 * batch * length * d_in * d_out
    assert result["flops_dense_equivalent"] == result["flops"] == result["flops_effective"]


@pytest.mark.parametrize("source", [7, 40])  # CPU inference: <= SHORT_KEYS keys run as two bmm, more through SDPA
def test_attention_block_flops_match_hand_count(source):
    batch, length, d_model, heads = 2, 5, 8, 2
    head_dim = d_model // heads
    layer = AttentionLayer(FullAttention(), d_model, heads)
    q, kv = torch.randn(batch, length, d_model), torch.randn(batch, source, d_model)
    result = count_flops(layer, (q, kv, kv))
    projections = 2 * (2 * batch * length * d_model * d_model) + 2 * (2 * batch * source * d_model * d_model)
    attention = 2 * batch * heads * length * source * head_dim * 2  # QK^T, then AV (E == Ev)
    assert result["flops"] == projections + attention
    # Either way the attention products are counted; the fused CPU kernel has no upstream formula, ours is used.
    operator = "aten.bmm" if source <= SHORT_KEYS else "aten._scaled_dot_product_flash_attention_for_cpu"
    assert result["flops_by_operator"][operator] == attention
    assert set(result["flops_by_module"]) == {"query", "key", "value", "out"}


def test_attention_kernels_of_every_device_have_formulas():
    registry = FlopCounterMode(display=False, custom_mapping=flop_formulas()).flop_registry
    for op in (aten._scaled_dot_product_flash_attention_for_cpu, aten._scaled_dot_product_flash_attention,
               aten._scaled_dot_product_efficient_attention, aten._scaled_dot_product_cudnn_attention):
        assert op in registry


def test_fourier_block_counts_ffts_and_complex_einsum():
    batch, length, d_model, heads, modes = 2, 16, 8, 2, 3
    head_dim = d_model // heads
    block = FourierBlock(d_model, heads, length, modes, mode_select="low")
    q = torch.randn(batch, length, heads, head_dim)
    by_op = count_flops(block, (q,))["flops_by_operator"]
    transforms = batch * heads * head_dim
    real_fft = round(2.5 * length * math.log2(length) * transforms)
    assert by_op["aten._fft_r2c"] == real_fft
    assert by_op["aten._fft_c2r"] == real_fft
    # [B, M, H, E] x [H, E, E, M]: B*M*H*E*E complex multiply-adds, 8 real FLOPs each.
    assert by_op["aten.bmm"] == 4 * (2 * batch * modes * heads * head_dim * head_dim)


@pytest.mark.parametrize("real_dft", [False, True])
def test_autocorrelation_is_counted_in_its_fft_form_whichever_form_runs(real_dft):
    """Evaluation runs short windows with Gram products, an export with real DFTs; the FLOP count is the FFT form's
    either way, and the forms set on the layer are left as they were."""
    batch, length, heads, dim = 2, 16, 2, 4
    mech = AutoCorrelation(factor=1)
    q, k, v = (torch.randn(batch, length, heads, dim) for _ in range(3))
    mech.real_dft = real_dft
    by_op = count_flops(mech, (q, k, v))["flops_by_operator"]
    assert mech.real_dft is real_dft and "gram_max_length" not in vars(mech)
    transform = 2.5 * length * math.log2(length)
    # rfft of q, k (H * E channels each) and v, the lag kernel (one per sample); irfft of the mean and of v
    assert by_op["aten._fft_r2c"] == round(transform * batch * (3 * heads * dim + 1))
    assert by_op["aten._fft_c2r"] == round(transform * batch * (1 + heads * dim))
    assert "aten.bmm" not in by_op


def test_complex_fft_and_complex_matmul():
    x = torch.randn(3, 8, dtype=torch.cfloat)
    assert count_flops(Apply(lambda t: torch.fft.fft(t, dim=1)), (x,))["flops"] == 5 * 8 * 3 * 3
    real = count_flops(Apply(lambda t: t @ t.T), (x.real.contiguous(),))["flops"]
    assert real == 2 * 3 * 8 * 3
    assert count_flops(Apply(lambda t: t @ t.T), (x,))["flops"] == 4 * real


def test_flops_effective_discounts_zero_weights():
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    x = torch.randn(1, 4, 8)
    dense = count_flops(model, (x,))
    assert dense["flops_effective"] == dense["flops"]
    with torch.no_grad():
        model[0].weight[:3] = 0.0  # half of the first layer's weights
    result = count_flops(model, (x,))
    first = dense["flops_by_module"]["0"]
    assert first == 2 * 4 * 8 * 6
    assert result["flops"] == dense["flops"]
    assert result["flops_effective"] == dense["flops"] - first // 2


def test_flops_effective_of_half_zero_linear_is_half():
    layer = nn.Linear(10, 6)
    with torch.no_grad():
        layer.weight[:, ::2] = 0.0
    result = count_flops(layer, (torch.randn(3, 10),))
    assert result["flops_effective"] * 2 == result["flops"]


def test_count_params_sees_zeros_and_prune_masks():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    with torch.no_grad():
        for layer in model:
            layer.weight.fill_(1.0)
            layer.bias.fill_(1.0)
        model[0].weight[0, :] = 0.0  # 4 zeros
    assert count_params(model) == {"params": 12 + 3 + 6 + 2, "nonzero_params": 23 - 4}
    prune.l1_unstructured(model[1], "weight", amount=3)  # weight_orig + weight_mask; 3 of 6 masked
    assert count_params(model) == {"params": 23, "nonzero_params": 23 - 4 - 3}


def test_count_flops_leaves_model_state_alone():
    model = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)).train()
    model[0].bias.requires_grad_(False)
    count_flops(model, (torch.randn(2, 4),))
    assert model.training
    assert model[0].weight.requires_grad and not model[0].bias.requires_grad


# ---------------------------------------------------------------------------------------------- inputs & latency


def test_example_inputs_are_real_windows_repeated_when_short(data, monkeypatch):
    first = data.batch("test", torch.arange(4))
    assert all(torch.equal(got, want) for got, want in zip(example_inputs(data, 4), first.inputs(), strict=True))
    monkeypatch.setattr(data, "n_windows", lambda split: 3)
    x_enc = example_inputs(data, 7)[0]
    assert x_enc.shape[0] == 7
    assert torch.equal(x_enc[3:6], x_enc[:3]) and torch.equal(x_enc[6], x_enc[0])


def test_latency_pins_and_restores_threads():
    before = torch.get_num_threads()
    result = measure_latency(nn.Linear(4, 2), (torch.randn(5, 4),), repeats=3, warmup=1, threads=1)
    assert torch.get_num_threads() == before
    assert result["threads"] == 1 and result["batch_size"] == 5 and result["repeats"] == 3
    assert result["p25_ms"] <= result["median_ms"] <= result["p75_ms"]
    assert result["iqr_ms"] == pytest.approx(result["p75_ms"] - result["p25_ms"])


class Logged(nn.Linear):
    """A linear layer that writes its name into a shared call log on every forward."""

    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__(4, 2)
        self.tag, self.log = name, log

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append(self.tag)
        return super().forward(x)


def test_compare_latency_alternates_and_turns_the_order_round():
    log: list[str] = []
    models = {name: Logged(name, log) for name in ("a", "b", "c")}
    result = compare_latency(models, (torch.randn(5, 4),), repeats=4, warmup=1, threads=1)
    timed = log[3:]  # after one warm-up pass of each
    assert timed == list("abc" "cba" "abc" "cba")
    assert {name: result[name]["repeats"] for name in models} == {"a": 4, "b": 4, "c": 4}


def test_compare_latency_rewarms_each_model_before_its_timed_pass(monkeypatch):
    log: list[str] = []
    models = {name: Logged(name, log) for name in ("a", "b")}
    clock = iter(range(1000))  # every perf_counter call one second later: a rewarm of 2.5 s runs three passes
    monkeypatch.setattr("tsprune.measure.time.perf_counter", lambda: float(next(clock)))
    compare_latency(models, (torch.randn(5, 4),), repeats=2, warmup=1, threads=1, rewarm_s=2.5)
    assert log == ["a", "b"] + ["a"] * 4 + ["b"] * 4 + ["b"] * 4 + ["a"] * 4  # 3 untimed, then the timed pass
    log.clear()
    compare_latency(models, (torch.randn(5, 4),), repeats=1, warmup=0, threads=1, rewarm_s=1e-9)
    assert log == ["a", "a", "b", "b"]  # at least one untimed pass each
    with pytest.raises(ValueError, match="rewarm_s"):
        compare_latency(models, (torch.randn(5, 4),), repeats=1, rewarm_s=-1)


# ---------------------------------------------------------------------------------------------- every model


@pytest.mark.parametrize("name", model_names())
def test_measure_every_model(name, data):
    config = default_config(name, **TINY, enc_in=7, dec_in=7, c_out=7)
    model = build_model(config).train()
    threads, rng = torch.get_num_threads(), torch.random.get_rng_state()
    result = measure(model, data, batch_sizes=(1, 3), repeats=3, warmup=1, threads=1)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), rng)  # Informer's key sampling ran on a forked RNG
    assert model.training

    assert 0 < result["flops"] < float("inf") and result["flops_batch_size"] == 1
    assert result["flops_dense_equivalent"] == result["flops"]
    assert 0 < result["flops_effective"] <= result["flops"]
    assert 0 < result["nonzero_params"] <= result["params"]
    assert set(result["latency"]) == {"1", "3"}
    for size, timing in result["latency"].items():
        assert timing["batch_size"] == int(size) and timing["threads"] == 1
        assert 0 < timing["p25_ms"] <= timing["median_ms"] <= timing["p75_ms"] < float("inf")
    assert result["latency_ms"] == result["latency"]["3"]["median_ms"]
    assert result["environment"]["threads"] == 1 and result["environment"]["torch"] == torch.__version__
    # The count does not depend on which keys Informer samples, nor on repeated calls.
    assert measure(model, data, latency=False)["flops"] == result["flops"]


def test_cpu_name_reads_the_model_and_falls_back_to_platform(monkeypatch):
    import builtins
    import platform

    from tsprune.runtime import cpu_name

    cpuinfo = Path("/proc/cpuinfo")
    models = {line.split(":", 1)[1].strip() for line in (cpuinfo.read_text() if cpuinfo.is_file() else "").splitlines()
              if line.startswith("model name")}
    if models:  # Linux: the model (e.g. "AMD EPYC 7B13"), not the architecture platform gives
        assert cpu_name() in models
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: (_ for _ in ()).throw(OSError("no cpuinfo"))
                        if str(path) == "/proc/cpuinfo" else real_open(path, *a, **k))
    assert cpu_name() == (platform.processor() or platform.machine())
