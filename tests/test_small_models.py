"""The small forecasters (DLinear, PatchTST, iTransformer): what each is, beyond the contract every model meets
(``test_models.py`` and the method, engine and export tests run over every registered model)."""

from __future__ import annotations

import pytest
import torch

from conftest import random_inputs
from tsprune.errors import TsPruneError
from tsprune.models.layers.embed import PatchEmbedding
from tsprune.models.layers.normalization import denormalize, normalize
from tsprune.models.registry import build_model, default_config, get_spec, model_names

SMALL = model_names("small")
WINDOW = {"seq_len": 96, "label_len": 48, "pred_len": 96, "enc_in": 7, "dec_in": 7, "c_out": 7,
          "n_time_features": 4}
NARROW = {"d_model": 16, "d_ff": 32, "n_heads": 2}


def small(name: str, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    overrides = {} if name == "DLinear" else NARROW
    return build_model(default_config(name, **{**WINDOW, **overrides, **extra})).eval()


def test_the_published_sizes():
    """DLinear's 18.6 k parameters at 96/96 (the issue's count); the three are far smaller than the study's five."""
    counts = {name: sum(p.numel() for p in build_model(default_config(name, **WINDOW)).parameters())
              for name in model_names()}
    assert counts["DLinear"] == 2 * (96 * 96 + 96) == 18_624
    assert max(counts[name] for name in SMALL) < min(counts[name] for name in model_names("study")) / 2
    assert all(get_spec(name).group == "small" for name in SMALL)


def test_patches_are_cut_with_the_end_replicated():
    """96 steps, patch 16, stride 8: 12 patches (11 inside the series, one over its replicated last step)."""
    assert PatchEmbedding.patch_count(96, 16, 8) == 12
    embedding = PatchEmbedding(d_model=4, patch_len=16, stride=8, dropout=0.0)
    with torch.no_grad():
        embedding.value.weight.zero_()
        embedding.value.weight[0, 15] = 1.0  # channel 0 reads the last step of each patch
    x = torch.arange(96.0).view(1, 96, 1)
    out = embedding(x) - embedding.position(12, 4, x)
    assert out[0, :, 0].tolist() == [min(8 * p + 15, 95) for p in range(12)]


def test_series_normalisation_round_trips():
    x = torch.randn(3, 96, 7) * 5 + 2
    normalised, mean, std = normalize(x)
    torch.testing.assert_close(normalised.mean(1), torch.zeros(3, 7), atol=1e-5, rtol=0)
    torch.testing.assert_close(denormalize(normalised, mean, std), x, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", ["PatchTST", "iTransformer"])
def test_normalised_models_follow_a_shift_and_scale_of_their_input(name):
    """Series normalisation: forecasting ``a * x + b`` gives ``a * forecast(x) + b`` (up to the variance epsilon)."""
    model = small(name)
    inputs = random_inputs(model.config, batch=2, device="cpu")
    with torch.no_grad():
        base = model(*inputs)
        moved = model(inputs[0] * 3.0 + 5.0, *inputs[1:])
    torch.testing.assert_close(moved, base * 3.0 + 5.0, rtol=1e-3, atol=1e-3)


def test_patchtst_channels_are_independent():
    model = small("PatchTST")
    inputs = random_inputs(model.config, batch=2, device="cpu")
    changed = inputs[0].clone()
    changed[:, :, 3] += torch.randn(2, 96)
    with torch.no_grad():
        base, other = model(*inputs), model(changed, *inputs[1:])
    untouched = [c for c in range(7) if c != 3]
    torch.testing.assert_close(other[:, :, untouched], base[:, :, untouched])
    assert not torch.allclose(other[:, :, 3], base[:, :, 3])


def test_itransformer_mixes_variates_and_reads_the_calendar():
    model = small("iTransformer")
    inputs = random_inputs(model.config, batch=2, device="cpu")
    changed = inputs[0].clone()
    changed[:, :, 3] += torch.randn(2, 96)
    with torch.no_grad():
        base = model(*inputs)
        other = model(changed, *inputs[1:])
        no_calendar = model(inputs[0], None, *inputs[2:])
    assert not torch.allclose(other[:, :, 0], base[:, :, 0])  # attention carries variate 3 to variate 0
    assert not torch.allclose(no_calendar, base)  # the calendar tokens take part


def test_dlinear_is_two_maps_over_time():
    """Initialised as the references do, each map forecasts its part's mean; the sum is the look-back's mean."""
    model = small("DLinear")
    with torch.no_grad():
        model.seasonal.bias.zero_()
        model.trend.bias.zero_()
        x = torch.randn(2, 96, 7)
        out = model(x, None, None, None)
    torch.testing.assert_close(out, x.mean(1, keepdim=True).expand(2, 96, 7), atol=1e-5, rtol=1e-5)


def test_dlinear_has_no_channel_for_structured_pruning():
    from tsprune.prune.structured import prune_to_density

    model = small("DLinear")
    inputs = random_inputs(model.config, batch=2, device="cpu")
    pruned, result = prune_to_density(model, inputs, 0.5, timeout_s=None)
    assert not result.reached and "out of reach" in result.reason and result.params_after == result.params_before


def test_patch_settings_are_checked():
    with pytest.raises(TsPruneError, match="patch_len must be at least 1"):
        default_config("PatchTST", patch_len=0)
    with pytest.raises(TsPruneError, match="patch_len 40 is longer than the look-back"):
        build_model(default_config("PatchTST", seq_len=24, patch_len=40, patch_stride=8))
