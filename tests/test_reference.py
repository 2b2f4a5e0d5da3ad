"""The reference layouts compute what our optimised layers compute (the speed benchmark compares like with like)."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY, random_inputs
from tsprune.models.reference import reference_layout
from tsprune.models.registry import build_model, default_config, model_names


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("name", model_names())
def test_reference_layout_computes_the_same_function(name, training):
    config = default_config(name, **{**TINY, "dropout": 0.0})
    torch.manual_seed(0)
    model = build_model(config).train(training)
    reference = reference_layout(model).train(training)
    inputs = random_inputs(config, batch=3, device="cpu")
    torch.manual_seed(1)  # ProbSparse samples keys
    ours = model(*inputs)
    torch.manual_seed(1)
    theirs = reference(*inputs)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    swapped = {type(m).__name__ for m in reference.modules()} - {type(m).__name__ for m in model.modules()}
    assert swapped, "nothing was swapped for the reference layout"
    if name in ("Autoformer", "FEDformer"):
        assert {"ReferenceMovingAverage", "ReferenceFeedForward"} <= swapped


def test_reference_layout_gradients_match():
    config = default_config("FEDformer", **{**TINY, "dropout": 0.0})
    torch.manual_seed(0)
    model = build_model(config)
    reference = reference_layout(model)
    inputs = random_inputs(config, batch=2, device="cpu")
    model(*inputs).square().mean().backward()
    reference(*inputs).square().mean().backward()
    ours = dict(model.named_parameters())
    theirs = dict(reference.named_parameters())
    for name in ("encoder.layers.0.attention.query.weight", "decoder.projection.weight"):
        torch.testing.assert_close(ours[name].grad, theirs[name].grad, rtol=1e-4, atol=1e-6)
