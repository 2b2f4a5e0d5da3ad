"""The correctness contract of structured pruning: a DepGraph-pruned model computes exactly what the unpruned model
computes with the removed weights set to zero. That is what tells "pruned right" from "pruned into a different
model" (a positional table rebuilt at the new width, heads re-read in another order, a softmax re-scaled...).

Two allowances, both properties of the operations and not of the pruning:
- attention temperatures and Auto-Correlation's channel average are frozen at their trained values
  (``freeze_attention_scales``), in both models;
- a LayerNorm normalises over the channels it has. Zeroed channels would still count in the dense model's mean and
  variance, so there each LayerNorm whose channels were removed normalises over its kept channels only.

Removed weights are found by value: every parameter gets distinct values first, so a value left in the pruned
model marks the original position it came from.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from conftest import TINY, random_inputs
from tsprune.models.registry import build_model, default_config, get_spec, model_names
from tsprune.measure import count_params
from tsprune.prune import structured

SIZE = {**TINY, "d_model": 32, "d_ff": 64, "n_heads": 4}
CASES = [(name, {}) for name in model_names() if name != "Informer" and get_spec(name).channels] + [
    ("Informer", {"prob_layout": "tslib"}), ("Informer", {"prob_layout": "paper"})]

pytestmark = pytest.mark.usefixtures("one_thread")


def distinct_values(model: nn.Module, seed: int = 0) -> None:
    """Give every parameter element a different value, around the magnitude it had (LayerNorm gains near 1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            count = param.numel() * (2 if param.is_complex() else 1)
            values = torch.linspace(-0.5, 0.5, count + 2, dtype=torch.float64)[1:-1]
            values = values[torch.randperm(count, generator=generator)]
            scale = max(float(param.abs().max()), 0.05)
            values = (values * 2 * scale).view(*param.shape, *((2,) if param.is_complex() else ()))
            if param.is_complex():
                param.copy_(torch.view_as_complex(values.to(torch.float32).contiguous()))
            else:
                param.copy_(values.to(param.dtype) + (1.0 if float(param.mean()) > 0.5 else 0.0))


def kept_mask(original: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """Which elements of ``original`` are still in ``pruned`` (values are distinct, see ``distinct_values``)."""
    if original.is_complex():
        original, pruned = torch.view_as_real(original)[..., 0], torch.view_as_real(pruned)[..., 0]
    return torch.isin(original, pruned)


class KeptLayerNorm(nn.Module):
    """A LayerNorm over the kept channels only; removed channels output zero. ``[..., channels]``."""

    def __init__(self, norm: nn.LayerNorm, kept: torch.Tensor) -> None:
        super().__init__()
        self.norm, self.kept = norm, kept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        out[..., self.kept] = F.layer_norm(x[..., self.kept], (int(self.kept.sum()),), self.norm.weight[self.kept],
                                           self.norm.bias[self.kept], self.norm.eps)
        return out


def zeroed_reference(model: nn.Module, pruned: nn.Module) -> tuple[nn.Module, int]:
    """``model`` with every weight the pruned model lacks set to zero; returns it and how many were zeroed."""
    reference = copy.deepcopy(model)
    structured.freeze_attention_scales(reference)
    kept_params = dict(pruned.named_parameters())
    zeroed = 0
    with torch.no_grad():
        for name, param in reference.named_parameters():
            kept = kept_mask(param, kept_params[name])
            assert int(kept.sum()) == kept_params[name].numel(), f"{name}: values not matched one to one"
            param[~kept] = 0
            zeroed += int((~kept).sum())
    for name, module in list(reference.named_modules()):
        if isinstance(module, nn.LayerNorm):
            kept = kept_mask(dict(model.named_parameters())[f"{name}.weight"], kept_params[f"{name}.weight"])
            if not kept.all():
                parent, _, child = name.rpartition(".")
                setattr(reference.get_submodule(parent) if parent else reference, child, KeptLayerNorm(module, kept))
    return reference, zeroed


def forward(model: nn.Module, inputs: tuple) -> torch.Tensor:
    torch.manual_seed(0)  # Informer samples keys even in eval mode: the same sample in both models
    with torch.no_grad():
        return model.eval()(*inputs)


@pytest.mark.parametrize("heads", ["dims", "heads"])
@pytest.mark.parametrize("name, options", CASES, ids=[f"{n}-{o.get('prob_layout', '')}".rstrip("-")
                                                       for n, o in CASES])
def test_depgraph_pruned_model_is_the_dense_model_with_the_removed_weights_zeroed(name, options, heads):
    torch.manual_seed(0)
    config = default_config(name, **SIZE, **options)
    model = build_model(config).eval()
    distinct_values(model)
    inputs = random_inputs(config, device="cpu")
    if heads == "heads" and name == "FEDformer":
        pytest.skip("whole-head pruning is refused for Fourier blocks (tested in test_structured)")
    if heads == "heads" and options.get("prob_layout") == "tslib":
        with pytest.raises(structured.TsPruneError, match="whole heads"):
            structured.prune_channels(copy.deepcopy(model), inputs, 0.5, heads="heads")
        return
    pruned = structured.prune_channels(copy.deepcopy(model), inputs, 0.5, heads=heads)
    assert count_params(pruned)["params"] < 0.75 * count_params(model)["params"]
    reference, zeroed = zeroed_reference(model, pruned)
    assert zeroed == count_params(model)["params"] - count_params(pruned)["params"]
    expected = forward(reference, inputs)
    torch.testing.assert_close(forward(pruned, inputs), expected, rtol=1e-4, atol=1e-5)
    # and the contract has teeth: the removed weights mattered, so the model before zeroing computes otherwise
    assert not torch.allclose(forward(model, inputs), expected, rtol=1e-3, atol=1e-3)
