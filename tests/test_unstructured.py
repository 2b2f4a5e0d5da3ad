"""Unstructured magnitude pruning: the right weights, the right counts, and masks that hold through fine-tuning."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from conftest import DEVICE, TINY, random_inputs
from tsprune import api
from tsprune import configure
from tsprune.config import TrainConfig
from tsprune.data.dataset import prepare_data
from tsprune.errors import TsPruneError
from tsprune.models.registry import build_model, default_config, model_names
from tsprune.prune.unstructured import (
    STUDY_SCHEDULE,
    MaskEnforcer,
    apply_masks,
    density_report,
    finetune,
    magnitude_masks,
    masks_from_zeros,
    parse_densities,
    _under,
    prunable_parameters,
    prune_magnitude,
)
from tsprune.train import fit

MODELS = model_names()


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


def tiny_model(name: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_model(default_config(name, **{**TINY, **overrides})).to(DEVICE)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def module_params(model: nn.Module, module_names) -> list[str]:
    return [f"{m}.{p}" for m in module_names for p, _ in model.get_submodule(m).named_parameters()]


@pytest.mark.parametrize("name", MODELS)
def test_prunable_set_is_every_linear_and_conv_weight_but_output_and_embedding_layers(name):
    model = tiny_model(name)
    # DLinear's two maps are the whole model, read the input and give the output: they are neither, or nothing
    # would be left to prune (its maps' outputs are fixed for structured pruning only)
    assert (model.output_layers and model.embedding_layers) or name == "DLinear"
    kept_dense = (*model.output_layers, *model.embedding_layers)  # a name covers the modules inside it
    expected = {f"{n}.weight" for n, m in model.named_modules()
                if isinstance(m, (nn.Linear, nn.Conv1d)) and not _under(n, kept_dense)}
    assert set(prunable_parameters(model)) == expected
    with_embeddings = set(prunable_parameters(model, include_embeddings=True))
    assert with_embeddings == expected | {f"{n}.weight" for n in model.embedding_layers}


def test_embedding_layers_follow_the_config():
    assert tiny_model("Transformer", n_time_features=0).embedding_layers == (
        "enc_embedding.value.proj.conv", "dec_embedding.value.proj.conv")
    assert "enc_embedding.temporal.proj" in tiny_model("Autoformer").embedding_layers


@pytest.mark.parametrize("name", MODELS)
def test_global_masks_equal_torch_global_l1_pruning(name):
    model = tiny_model(name)
    params = prunable_parameters(model)
    with torch.no_grad():  # DLinear starts with all weights equal: ties, which two rankings may break differently
        for param in params.values():
            param.add_(torch.randn_like(param) * 1e-3)
    reference = copy.deepcopy(model)
    targets = [(reference.get_submodule(key.rsplit(".", 1)[0]), "weight") for key in params]
    total = sum(p.numel() for p in params.values())
    density = 0.8**5
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured,
                              amount=total - round(density * total))
    masks = magnitude_masks(params, density)
    for key, (module, _) in zip(params, targets):
        assert torch.equal(masks[key], module.weight_mask.bool()), key


@pytest.mark.parametrize("name", MODELS)
def test_layer_scope_gives_each_tensor_its_own_density(name):
    params = prunable_parameters(tiny_model(name))
    masks = magnitude_masks(params, 0.3, scope="uniform")
    for key, mask in masks.items():
        assert int(mask.sum()) == round(0.3 * mask.numel()), key
        # the kept entries are that tensor's largest
        scores = params[key].detach().abs()
        if mask.any() and (~mask).any():
            assert scores[mask].min() >= scores[~mask].max()


@pytest.mark.parametrize("name", MODELS)
def test_study_schedule_densities_are_hit(name):
    base = tiny_model(name)
    dense_nonzero = density_report(base, prunable_parameters(base))["nonzero_params"]  # norm biases start at 0
    for density in STUDY_SCHEDULE:
        model = copy.deepcopy(base)
        masks, report = prune_magnitude(model, density)
        assert abs(report["density_prunable"] - density) <= 0.005 * density
        assert report["prunable_params"] == sum(m.numel() for m in masks.values())
        # everything outside the prunable weights is dense: the whole-model density follows
        pruned = report["prunable_params"] - report["nonzero_prunable"]
        assert report["nonzero_params"] == dense_nonzero - pruned


@pytest.mark.parametrize("name", MODELS)
def test_output_and_embedding_layers_stay_dense(name):
    model = tiny_model(name)
    before = snapshot(model)
    prune_magnitude(model, 0.2)
    after = snapshot(model)
    prunable = set(prunable_parameters(model))
    for key in before.keys() - prunable:  # biases, norms, output and embedding layers
        assert torch.equal(before[key], after[key]), key
    assert set(module_params(model, model.embedding_layers)).isdisjoint(prunable)

    model = tiny_model(name)
    prune_magnitude(model, 0.2, include_embeddings=True)
    after = snapshot(model)
    for key in module_params(model, model.output_layers):
        assert torch.equal(before[key], after[key]), key
    embedding_weights = [after[f"{n}.weight"] for n in model.embedding_layers]
    assert any(bool((w == 0).any()) for w in embedding_weights) or not model.embedding_layers


def test_fourier_weights_are_pruned_by_modulus_and_counted_once():
    model = tiny_model("FEDformer")
    fourier = [p for p in model.parameters() if p.is_complex()]
    assert len(fourier) == 3  # encoder, decoder self and cross blocks; the encoder's is shared by two layers
    params = prunable_parameters(model, include_fourier=True)
    complex_keys = [k for k, p in params.items() if p.is_complex()]
    assert sorted(map(id, (params[k] for k in complex_keys))) == sorted(map(id, fourier))
    assert not any(p.is_complex() for p in prunable_parameters(model).values())

    masks, report = prune_magnitude(model, 0.3, include_fourier=True)
    assert report["params"] == sum(p.numel() for p in model.parameters())
    assert report["prunable_params"] == sum(p.numel() for p in params.values())
    assert abs(report["density_prunable"] - 0.3) < 0.005 * 0.3
    kept = torch.cat([params[k].detach().abs()[masks[k]] for k in params])
    cut = torch.cat([params[k].detach()[~masks[k]] for k in params])
    assert (cut == 0).all() and kept.min() > 0
    assert any(bool((~masks[k]).any()) for k in complex_keys)

    # Modulus, not real part: 0.1+5j outranks 3 and 1.
    weights = {"w": torch.tensor([1 + 0j, 0.1 + 5j, 3 + 0j, 0.5 + 0.5j])}
    assert magnitude_masks(weights, 0.5)["w"].tolist() == [False, True, True, False]


def test_ties_do_not_change_the_count():
    params = {"a": torch.ones(6, 5), "b": torch.ones(7)}
    assert sum(int(m.sum()) for m in magnitude_masks(params, 0.3).values()) == round(0.3 * 37)
    assert [int(m.sum()) for m in magnitude_masks(params, 0.3, scope="uniform").values()] == [9, 2]


@pytest.mark.parametrize("scope", ["global", "uniform"])
@pytest.mark.parametrize("name", ["Informer", "FEDformer"])
def test_iterative_pruning_keeps_previous_zeros(name, scope):
    model = tiny_model(name)
    masks, _ = prune_magnitude(model, 0.5, scope=scope, include_fourier=True)
    params = prunable_parameters(model, include_fourier=True)
    assert all(torch.equal(masks_from_zeros(params)[k], masks[k]) for k in masks)
    for density in (0.25, 0.8**10):
        nested, report = prune_magnitude(model, density, scope=scope, include_fourier=True)
        for key in masks:
            assert not (nested[key] & ~masks[key]).any(), key  # nothing pruned comes back
        kept = sum(round(density * p.numel()) for p in params.values()) if scope == "uniform" else round(
            density * report["prunable_params"])
        assert report["nonzero_prunable"] == kept
        masks = nested


def test_apply_masks_and_report_on_a_parameter_dict():
    params = {"w": torch.tensor([[0.5, -2.0], [0.1, 3.0]])}
    masks = magnitude_masks(params, 0.5)
    apply_masks(params, masks)
    assert params["w"].tolist() == [[0.0, -2.0], [0.0, 3.0]]
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(params["w"])
    report = density_report(model, {"weight": model.weight})
    assert report["density_prunable"] == 0.5 and report["params"] == 6 and report["nonzero_params"] == 4


def test_gradient_hooks_zero_masked_gradients_until_removed():
    model = tiny_model("Transformer")
    masks, _ = prune_magnitude(model, 0.3)
    enforcer = MaskEnforcer(masks)
    enforcer.hook_gradients(model)
    model(*random_inputs(model.config)).square().mean().backward()
    for key, mask in masks.items():
        assert (model.get_parameter(key).grad[~mask] == 0).all(), key
    enforcer.remove_hooks()
    model.zero_grad()
    model(*random_inputs(model.config)).square().mean().backward()
    assert any(bool((model.get_parameter(k).grad[~m] != 0).any()) for k, m in masks.items())
    # the step-time half: whatever the optimiser did, calling the enforcer zeroes the pruned weights again
    with torch.no_grad():
        for key in masks:
            model.get_parameter(key).add_(1.0)
    enforcer(model)
    assert all(torch.equal(model.get_parameter(k) != 0, m) for k, m in masks.items())


@pytest.fixture(scope="module")
def etth1():
    """Real ETTh1 windows; the validation split cut to its first 64 windows, as fit scores all of them each epoch."""
    config = api.make_config("Transformer", data={"dataset": "ETTh1", "seq_len": 48, "label_len": 24, "pred_len": 24})
    data = prepare_data(config.data)
    val = data.splits["val"]
    rows = 64 + config.data.seq_len + config.data.pred_len - 1
    data.splits["val"] = dataclasses.replace(val, values=val.values[:rows], marks=val.marks[:rows],
                                             dates=val.dates[:rows])
    assert data.n_windows("val") == 64
    return config, data


def test_hooks_are_removed_when_finetuning_fails(etth1):
    _, data = etth1
    model = tiny_model("Transformer")
    masks, _ = prune_magnitude(model, 0.5)
    with pytest.raises(TsPruneError):
        finetune(model, masks, data, TrainConfig(epochs=0), DEVICE)
    weight = model.get_parameter(next(iter(masks)))
    assert not weight._backward_hooks


def pruned_for_data(name: str, config, data) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    model_config = configure.bind_to_data(api.make_config(name, data=vars(config.data), **TINY), data).model
    torch.manual_seed(0)
    model = build_model(model_config).to(DEVICE)
    masks, _ = prune_magnitude(model, 0.3, include_fourier=True)
    return model, masks


SHORT = TrainConfig(epochs=1, max_steps=3, batch_size=32, lr=1e-3, seed=0)


def test_plain_training_regrows_pruned_weights(etth1):
    # The control for the next test: without the masks held, fit alone does not keep zeros.
    model, masks = pruned_for_data("Transformer", *etth1)
    fit(model, etth1[1], SHORT, torch.device(DEVICE), progress=False)
    assert any(bool((model.get_parameter(k)[~m] != 0).any()) for k, m in masks.items())


@pytest.mark.parametrize("name", MODELS)
def test_masks_survive_finetuning(name, etth1):
    model, masks = pruned_for_data(name, *etth1)
    before = snapshot(model)
    finetune(model, masks, etth1[1], SHORT, DEVICE)
    changed = False
    for key, mask in masks.items():
        weight = model.get_parameter(key).detach()
        assert (weight[~mask] == 0).all(), key
        changed |= bool((weight[mask] != before[key][mask]).any())
    assert changed
    assert all(not model.get_parameter(k)._backward_hooks for k in masks)


@pytest.mark.parametrize("spec, expected", [
    ("0.8^0..2", [1.0, 0.8, 0.8**2]),
    ("study", list(STUDY_SCHEDULE)),
    ("0.5,0.25", [0.5, 0.25]),
    (" 0.5 , 1 ", [0.5, 1.0]),
    (0.3, [0.3]),
    ([1, 0.5], [1.0, 0.5]),
])
def test_parse_densities(spec, expected):
    assert parse_densities(spec) == pytest.approx(expected)


def test_study_schedule():
    assert len(STUDY_SCHEDULE) == 11 and STUDY_SCHEDULE[0] == 1.0
    assert STUDY_SCHEDULE[-1] == pytest.approx(0.107, abs=5e-4)
    assert parse_densities("0.8^0..10") == list(STUDY_SCHEDULE)


@pytest.mark.parametrize("spec, shown", [(0, "0"), (1.5, "1.5"), ("abc", "abc"), ("0.5,2", "2.0"),
                                         ("0.8^-1..1", "1.25"), ([], "[]"), ("nan", "nan")])
def test_parse_densities_rejects(spec, shown):
    with pytest.raises(TsPruneError, match="densit") as error:
        parse_densities(spec)
    assert shown in str(error.value) and "\n" not in str(error.value)


def test_bad_density_or_scope_for_masks():
    params = {"w": torch.randn(4)}
    with pytest.raises(TsPruneError, match="0"):
        magnitude_masks(params, 0.0)
    with pytest.raises(TsPruneError, match="scope"):
        magnitude_masks(params, 0.5, scope="row")
