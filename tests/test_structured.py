"""Structured (DepGraph) pruning: every model shrinks, runs, keeps its output shape and reloads exactly; and the
channels DepGraph couples are the right ones (removing channels that carry nothing changes nothing)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import TINY, random_inputs
from tsprune.models.crossformer import SegmentMerging
from tsprune.models.layers.fourier import FourierBlock
from tsprune.models.registry import build_model, default_config, get_spec, model_names
from tsprune.measure import count_params
from tsprune.prune import structured
from tsprune.run import Run, load_run, save_run
from tsprune.data.dataset import Scaler

MODELS = [name for name in model_names() if get_spec(name).channels]  # DLinear has none: test_small_models
SIZE = {**TINY, "d_model": 32, "d_ff": 64, "n_heads": 4}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


def tiny_model(name: str, seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(seed)
    config = default_config(name, **SIZE)
    return build_model(config).eval(), random_inputs(config, device="cpu")


def forward(model: nn.Module, inputs: tuple) -> torch.Tensor:
    torch.manual_seed(0)  # Informer samples keys even in eval mode
    with torch.no_grad():
        return model.eval()(*inputs)


@pytest.mark.parametrize("name", MODELS)
def test_depgraph_targets_run_shrink_and_reload_exactly(name, tmp_path):
    model, inputs = tiny_model(name)
    dense_params = count_params(model)["params"]
    dense_out = forward(model, inputs)
    for density in (0.8, 0.5, 0.25):
        pruned, result = structured.prune_to_density(model, inputs, density, tolerance=0.03, max_trials=6)
        assert result.reached, result.reason
        assert result.params_after < dense_params
        assert result.density <= density and result.density == pytest.approx(density, abs=0.06)
        out = forward(pruned, inputs)
        assert out.shape == dense_out.shape and torch.isfinite(out).all()
        # The pruned architecture is saved with the run and rebuilt from config.json on load.
        run = Run(default_config_run(model), pruned, Scaler.fit(torch.randn(20, 7).numpy()), list("abcdefg"), "h",
                  architecture=structured.architecture(pruned))
        save_run(run, tmp_path / f"{density}")
        reloaded = load_run(tmp_path / f"{density}").model
        assert torch.equal(forward(reloaded, inputs), out)
    # The dense model is left as it was.
    assert count_params(model)["params"] == dense_params
    assert torch.equal(forward(model, inputs), dense_out)


def default_config_run(model: nn.Module):
    from tsprune.config import RunConfig

    return RunConfig(model=model.config)


def test_unreachable_target_is_reported_not_raised():
    model, inputs = tiny_model("Transformer")
    pruned, result = structured.prune_to_density(model, inputs, 0.001, max_trials=2)
    assert not result.reached and "out of reach" in result.reason
    assert count_params(pruned)["params"] < count_params(model)["params"]


def test_wide_models_keep_channel_counts_multiples_of_8():
    """Default rounding: a model with d_model >= 128 keeps every pruned width a multiple of 8 (fast GEMM shapes);
    a narrow one keeps exact counts; round_to=1 turns rounding off."""
    torch.manual_seed(0)
    config = default_config("Transformer", **{**TINY, "d_model": 128, "d_ff": 256, "n_heads": 8})
    model, inputs = build_model(config).eval(), random_inputs(config, device="cpu")
    pruned, result = structured.prune_to_density(model, inputs, 0.5, tolerance=0.03, max_trials=4)
    assert result.reached and result.round_to == structured.ROUND_TO == 8
    fixed = {config.enc_in, config.c_out, config.n_time_features}  # input/output widths never change
    widths = [w for m in pruned.modules() if isinstance(m, (nn.Linear, nn.Conv1d))
              for w in m.weight.shape[:2] if w not in fixed]
    assert widths and all(w % 8 == 0 for w in widths)
    assert any(w not in (128, 256) for w in widths)  # something was pruned
    assert structured.prune_to_density(model, inputs, 0.5, round_to=1, max_trials=1)[1].round_to is None
    assert structured.default_round_to(tiny_model("Transformer")[0]) is None


def test_whole_head_pruning_writes_n_heads_back():
    model, inputs = tiny_model("Transformer")
    pruned = structured.prune_channels(copy.deepcopy(model), inputs, 0.5, heads="heads")
    layers = [m for m in pruned.modules() if isinstance(m, structured.AttentionLayer)]
    assert any(layer.n_heads < SIZE["n_heads"] for layer in layers)
    for layer in layers:  # head dim unchanged, head count reduced consistently with the projections
        assert layer.query.out_features == layer.n_heads * (SIZE["d_model"] // SIZE["n_heads"])
    assert forward(pruned, inputs).shape == forward(model, inputs).shape


def test_timeout_turns_a_hang_into_an_error(monkeypatch):
    import time

    model, inputs = tiny_model("Transformer")
    monkeypatch.setattr(structured, "_pruner", lambda *args, **kwargs: time.sleep(5))
    with pytest.raises(structured.PruningTimeout):
        structured.prune_channels(model, inputs, 0.5, timeout_s=0.2)


# --------------------------------------------------------------------------------------- coupling is right


def _zero_out_channels(dep_fn, module: nn.Module, idxs: list[int]) -> bool:
    """Zero what an out-channel removal would remove; False when the group has a module we cannot zero exactly."""
    with torch.no_grad():
        if isinstance(module, nn.Linear):
            module.weight[idxs] = 0
            if module.bias is not None:
                module.bias[idxs] = 0
            return True
        if isinstance(module, FourierBlock) or type(module).__name__ == "FourierCrossAttention":
            heads, _, head_dim, _ = module.weight.shape
            for i in idxs:
                module.weight[i // head_dim, :, i % head_dim] = 0
            return True
    return False


def _inner_groups(pruner, model: nn.Module) -> list:
    """Groups of channels that never pass through a normalisation: the FFN hidden units and attention head dims."""
    groups = []
    outputs = [model.get_submodule(name) for name in model.output_layers]
    for group in pruner.DG.get_all_groups(ignored_layers=outputs,
                                          root_module_types=[nn.Linear, *structured.CUSTOM_PRUNERS]):
        modules = [dep.target.module for dep, _ in group]
        if any(isinstance(m, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm, nn.Parameter, SegmentMerging,
                              nn.Conv1d)) for m in modules):
            continue
        if any(not isinstance(m, (nn.Linear, *structured.CUSTOM_PRUNERS)) and isinstance(m, nn.Module)
               and not type(m).__name__.startswith("_") for m in modules):
            continue
        groups.append(group)
    return groups


@pytest.mark.parametrize("name", MODELS)
def test_removing_dead_channels_leaves_outputs_unchanged(name):
    """Zero the channels DepGraph groups together, then remove them: the output must not move.

    This pins the coupling (query/key/value/out projections of a head, the Fourier weights' head dims, FFN hidden
    units): a channel removed from one layer but not from the layer that reads it would change the output.
    """
    model, inputs = tiny_model(name)
    structured.freeze_attention_scales(model)  # removing head dims must not rescale the softmax
    traced = copy.deepcopy(model)
    pruner = structured._pruner(traced, inputs, 0.0, "global", "dims", None)
    groups = _inner_groups(pruner, traced)
    assert groups, "no inner groups found"
    names = {m: n for n, m in pruner.model.named_modules()}
    for group in groups:
        root_dep, root_idxs = group[0]
        root = root_dep.target.module
        heads = pruner.num_heads.get(root, 1)
        width = len(root_idxs)
        per_head = width // heads
        idxs = [h * per_head + j for h in range(heads) for j in (0, per_head - 1)] if per_head > 2 else None
        if idxs is None:
            continue
        dead = copy.deepcopy(model)
        modules = dict(dead.named_modules())
        for dep, dep_idxs in pruner.DG.get_pruning_group(root, root_dep.handler, idxs):
            if pruner.DG.is_out_channel_pruning_fn(dep.handler) and dep.target.module in names:
                target = modules[names[dep.target.module]]
                assert _zero_out_channels(dep.handler, target, list(dep_idxs)), type(target)
        expected = forward(dead, inputs)
        # Rebuild the graph on the zeroed copy and remove exactly those channels.
        graph_pruner = structured._pruner(dead, inputs, 0.0, "global", "dims", None)
        graph_root = dict(dead.named_modules())[names[root]]
        graph_pruner.DG.get_pruning_group(graph_root, root_dep.handler, idxs).prune()
        assert count_params(dead)["params"] < count_params(model)["params"]
        torch.testing.assert_close(forward(dead, inputs), expected, rtol=1e-5, atol=1e-5,
                                   msg=f"{name}: group rooted at {names[root]}")


def test_segment_merging_pruner_removes_a_channel_from_every_window_position():
    merge = SegmentMerging(d_model=4, win_size=2)
    x = torch.randn(1, 1, 6, 4)
    keep = [0, 2, 3]
    reference = copy.deepcopy(merge)
    structured.SegmentMergingPruner().prune_in_channels(merge, [1])
    # The merged vector of a window is [segment 0 channels, segment 1 channels]: channel 1 goes from both halves.
    wide = [0, 2, 3, 4, 6, 7]
    torch.testing.assert_close(merge.proj.weight, reference.proj.weight[:, wide])
    torch.testing.assert_close(merge.norm.weight, reference.norm.weight[wide])
    assert merge(x[..., keep]).shape == (1, 1, 3, 4)


def test_informer_tslib_layout_refuses_whole_heads_with_a_clear_error():
    from tsprune.errors import TsPruneError

    torch.manual_seed(0)
    config = default_config("Informer", **SIZE)
    assert config.prob_layout == "tslib"
    model = build_model(config).eval()
    dense_params = count_params(model)["params"]
    with pytest.raises(TsPruneError, match="whole heads cannot be removed from Informer's prob_layout 'tslib'"):
        structured.prune_to_density(model, random_inputs(config, device="cpu"), 0.5, heads="heads")
    assert count_params(model)["params"] == dense_params  # untouched
