"""Crossformer: shapes, padding, segment merging, MS output, channel equivariance, no per-channel loops."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tsprune.config import ModelConfig
from tsprune.models.crossformer import Crossformer, SegmentMerging

torch.set_num_threads(1)


def tiny_config(**overrides) -> ModelConfig:
    values = dict(
        name="Crossformer", enc_in=3, dec_in=3, c_out=3, seq_len=96, label_len=48, pred_len=24,
        d_model=16, d_ff=32, n_heads=2, e_layers=3, dropout=0.1, seg_len=12, win_size=2, n_routers=3,
    )
    values.update(overrides)
    return ModelConfig(**values)


def run(model: Crossformer, x: torch.Tensor) -> torch.Tensor:
    cfg = model.config
    mark = torch.zeros(x.shape[0], cfg.seq_len, cfg.n_time_features)
    x_dec = torch.zeros(x.shape[0], cfg.label_len + cfg.pred_len, cfg.dec_in)
    mark_dec = torch.zeros(x.shape[0], cfg.label_len + cfg.pred_len, cfg.n_time_features)
    return model(x, mark, x_dec, mark_dec)


@pytest.mark.parametrize("pred_len", [96, 192, 336, 720])
def test_output_shape(pred_len: int) -> None:
    torch.manual_seed(0)
    model = Crossformer(tiny_config(pred_len=pred_len, e_layers=2))
    out = run(model, torch.randn(2, 96, 3))
    assert out.shape == (2, pred_len, 3)
    assert torch.isfinite(out).all()


def test_indivisible_lengths_and_all_parameters_train() -> None:
    # seq_len 50 -> 5 segments (front pad 10), merged 5 -> 3 -> 2 with tail padding; pred_len 30 -> 3 segments.
    torch.manual_seed(0)
    model = Crossformer(tiny_config(seq_len=50, pred_len=30, e_layers=3))
    out = run(model, torch.randn(2, 50, 3))
    assert out.shape == (2, 30, 3)
    out.square().mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_front_padding_replicates_first_value() -> None:
    # seq_len 90 pads 6 copies of the first step: same as a seq_len-96 model fed that padded input (same weights).
    torch.manual_seed(0)
    short = Crossformer(tiny_config(seq_len=90)).eval()
    full = Crossformer(tiny_config(seq_len=96)).eval()
    full.load_state_dict(short.state_dict())
    x = torch.randn(2, 90, 3)
    padded = torch.cat([x[:, :1].expand(-1, 6, -1), x], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(run(short, x), run(full, padded))


def test_segment_merging_concatenates_windows_and_repeats_last_segments() -> None:
    merge = SegmentMerging(d_model=2, win_size=3)
    merge.norm, merge.proj = nn.Identity(), nn.Identity()  # expose the concatenation itself
    segs = torch.arange(4.0).view(1, 1, 4, 1).expand(1, 1, 4, 2)  # segment k holds the value k
    out = merge(segs)
    # 4 segments, window 3: padded with the last 2 segments -> [0 1 2 | 3 2 3].
    expected = torch.tensor([[0, 0, 1, 1, 2, 2], [3, 3, 2, 2, 3, 3]], dtype=torch.float32)
    torch.testing.assert_close(out[0, 0], expected)


def test_ms_mode_returns_last_channels() -> None:
    torch.manual_seed(0)
    full = Crossformer(tiny_config()).eval()
    target_only = Crossformer(tiny_config(c_out=1)).eval()
    target_only.load_state_dict(full.state_dict())
    x = torch.randn(2, 96, 3)
    with torch.no_grad():
        out = run(target_only, x)
        assert out.shape == (2, 24, 1)
        torch.testing.assert_close(out, run(full, x)[..., -1:])


def test_channel_equivariance_with_shared_positions() -> None:
    # With the same position vectors for every channel, nothing distinguishes channels but their values:
    # the routers treat channels as a set, so permuting input channels permutes the forecast.
    torch.manual_seed(0)
    model = Crossformer(tiny_config(enc_in=4, c_out=4)).eval()
    with torch.no_grad():
        model.enc_position.copy_(model.enc_position[:, :1].expand_as(model.enc_position))
        model.dec_position.copy_(model.dec_position[:, :1].expand_as(model.dec_position))
        x = torch.randn(2, 96, 4)
        perm = torch.tensor([2, 0, 3, 1])
        torch.testing.assert_close(run(model, x[..., perm]), run(model, x)[..., perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("channels", [2, 7])
def test_attention_runs_once_per_stage_whatever_the_channel_count(channels: int) -> None:
    # Channels and segments are folded into the batch: each attention module is called exactly once per forward.
    model = Crossformer(tiny_config(enc_in=channels, c_out=channels, e_layers=2)).eval()
    calls: dict[str, int] = {}
    for name, module in model.named_modules():
        if name.endswith(("time_attention", "dim_sender", "dim_receiver", "cross_attention")):
            calls[name] = 0
            module.register_forward_hook(lambda mod, inp, out, name=name: calls.__setitem__(name, calls[name] + 1))
    with torch.no_grad():
        run(model, torch.randn(2, 96, channels))
    assert len(calls) == 3 * (2 + 3) + 3  # TSA in 2 encoder + 3 decoder layers, cross-attention in 3 decoder layers
    assert set(calls.values()) == {1}


def test_registered_defaults_and_output_layers() -> None:
    from tsprune.models.registry import _REGISTRY

    spec = _REGISTRY["Crossformer"]
    assert spec.cls is Crossformer
    assert spec.defaults == dict(
        d_model=256, d_ff=512, n_heads=4, e_layers=3, dropout=0.2, seg_len=12, win_size=2, n_routers=10
    )
    model = Crossformer(tiny_config(e_layers=2))
    assert model.output_layers == ("decoder.0.predict", "decoder.1.predict", "decoder.2.predict")
    for name in model.output_layers:
        layer = model.get_submodule(name)
        assert isinstance(layer, nn.Linear) and layer.out_features == model.config.seg_len
    assert len(Crossformer.output_layers) == 4  # class default matches the default e_layers=3
