"""Sparse kernels for pruned layers: exact equivalence with the masked dense model, the timing rule, plan replay."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tsprune.config import DataConfig
from tsprune.data.dataset import prepare_data
from tsprune.errors import TsPruneError
from tsprune.measure import example_inputs
from tsprune.models.registry import build_model, default_config, model_names
from tsprune.sparse import engine as sparse
from tsprune.sparse import kernel as pcsr
from tsprune.sparse.engine import (
    apply_plan,
    choose_kernel,
    compile_sparse,
    dense_state_dict,
    densify_model,
    sparse_candidates,
)
from tsprune.sparse.rewrites import epilogue_candidates
from tsprune.sparse.layers import SkippedLinear, SparseConv1d, SparseLinear, SparseWeight, ZeroLinear
from tsprune.prune.unstructured import prune_magnitude

DENSITY = 0.107
TOLERANCE = 1e-5
SMALL = {"d_model": 32, "d_ff": 64, "n_heads": 4, "e_layers": 2, "d_layers": 1, "modes": 8, "seg_len": 12}


@pytest.fixture(scope="module")
def windows() -> tuple[torch.Tensor, ...]:
    return example_inputs(prepare_data(DataConfig(dataset="ETTh1")), 4)


def pruned_model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(default_config(name, **SMALL)).eval()
    prune_magnitude(model, DENSITY)
    return model


def forward(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Seeded inference pass: Informer samples keys even in eval."""
    torch.manual_seed(123)
    with torch.inference_mode():
        return model(*inputs)


def masked(layer: nn.Module, density: float = 0.2, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.mul_(torch.rand(layer.weight.shape, generator=gen) < density)
    return layer


def sparse_modules(model: nn.Module) -> list[SparseWeight]:
    return [module for module in model.modules() if isinstance(module, SparseWeight)]


# ------------------------------------------------------------------------------------------------ layers


OWN = pytest.param("pcsr", None, marks=pytest.mark.skipif(not pcsr.available(), reason="the C++ kernel does not build"))


@pytest.mark.parametrize("layout,block", [("csr", None), ("bsr", 4), ("bsr", 16), OWN])
@pytest.mark.parametrize("shape", [(5, 32), (2, 7, 32)])
@pytest.mark.parametrize("bias", [True, False])
def test_sparse_linear_equals_linear(layout, block, shape, bias):
    torch.manual_seed(0)
    linear = masked(nn.Linear(32, 48, bias=bias))
    layer = SparseLinear(linear, layout, block)
    x = torch.randn(*shape)
    with torch.inference_mode():
        out = layer(x)
        expected = linear(x)
    assert out.shape == expected.shape and out.is_contiguous()
    torch.testing.assert_close(out, expected, atol=TOLERANCE, rtol=0)
    assert torch.equal(layer.weight, linear.weight)


@pytest.mark.parametrize("layout,block", [("csr", None), ("bsr", 8), OWN])
@pytest.mark.parametrize("options", [{}, {"padding": 1}, {"stride": 2, "padding": 2, "dilation": 2},
                                     {"padding": 1, "padding_mode": "circular"}, {"bias": False}])
def test_sparse_conv1d_equals_conv1d(layout, block, options):
    torch.manual_seed(0)
    conv = masked(nn.Conv1d(8, 16, 3, **options))
    layer = SparseConv1d(conv, layout, block)
    x = torch.randn(3, 8, 20)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), conv(x), atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(layer(x[0]), conv(x[0]), atol=TOLERANCE, rtol=0)  # unbatched


def test_sparse_layer_state_dict_keeps_dense_keys_and_loads_back():
    torch.manual_seed(0)
    linear = masked(nn.Linear(16, 8))
    layer = SparseLinear(linear, "csr")
    state = layer.state_dict()
    assert list(state) == list(linear.state_dict())
    assert torch.equal(state["weight"], linear.weight) and state["weight"].layout == torch.strided
    other = masked(nn.Linear(16, 8), seed=1)
    layer.load_state_dict(other.state_dict(), strict=True)  # a dense checkpoint loads into the sparse layer
    x = torch.randn(4, 16)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), other(x), atol=TOLERANCE, rtol=0)
    clone = copy.deepcopy(layer).double()  # plain buffers: deepcopy and dtype casts work
    assert clone.values.dtype == torch.float64 and clone.col_indices.dtype == torch.int32


def test_sparse_layer_stores_only_the_nonzeros():
    linear = masked(nn.Linear(64, 64), density=0.1)
    layer = SparseLinear(linear, "csr")
    assert layer.values.numel() == int(torch.count_nonzero(linear.weight))
    assert not any(t.numel() == linear.weight.numel() for t in layer.buffers())  # no dense copy kept


# ------------------------------------------------------------------------------------------------ models


@pytest.mark.parametrize("force", ["csr", "bsr", "pcsr"])
@pytest.mark.parametrize("name", model_names())
def test_compiled_model_equals_masked_model(name, force, windows):
    model = pruned_model(name)
    expected = forward(model, windows)
    compiled, plan = compile_sparse(copy.deepcopy(model), windows, force=force)
    kernels = [entry["kernel"] for entry in plan["layers"].values()]
    chosen = "csr" if force == "pcsr" and not pcsr.available() else force  # pcsr falls back where it cannot build
    assert kernels and set(kernels) <= {chosen, "zero", "skip"}  # all-zero layers are rewritten exactly, untimed
    assert len(sparse_modules(compiled)) == kernels.count(chosen)
    assert (forward(compiled, windows) - expected).abs().max().item() <= TOLERANCE
    json.dumps(plan)


@pytest.mark.parametrize("name, first_name, second_name", [
    ("Transformer", "encoder.layers.0.feed_forward.linear1", "encoder.layers.0.feed_forward.linear2"),
    ("Crossformer", "encoder.0.tsa.mlp1.0", "encoder.0.tsa.mlp1.2"),  # nn.Sequential(Linear, GELU, Linear)
])
def test_all_zero_feed_forward_is_skipped_exactly(name, first_name, second_name, windows):
    """An emptied FFN output layer (global magnitude pruning can zero a whole layer) makes the block's first layer
    dead: both are rewritten without timing, outputs stay equal, weights and keys are kept, and a plan replays."""
    model = pruned_model(name)
    with torch.no_grad():
        model.get_submodule(second_name).weight.zero_()
    first = model.get_submodule(first_name).weight.detach().clone()
    assert torch.count_nonzero(first) > 0  # its own weights are not zero: it is dead only because of linear2
    expected = forward(model, windows)
    compiled, plan = compile_sparse(copy.deepcopy(model), windows, force="csr")
    assert isinstance(compiled.get_submodule(first_name), SkippedLinear)
    assert isinstance(compiled.get_submodule(second_name), ZeroLinear)
    assert (plan["layers"][first_name]["kernel"], plan["layers"][second_name]["kernel"]) == ("skip", "zero")
    assert plan["layers"][first_name]["relies_on"] == second_name
    torch.testing.assert_close(forward(compiled, windows), expected, rtol=0, atol=TOLERANCE)
    state = dense_state_dict(compiled)
    assert list(state) == list(model.state_dict()) and torch.equal(state[f"{first_name}.weight"], first)
    fresh = pruned_model(name)
    fresh.load_state_dict(state)
    fresh = apply_plan(fresh, json.loads(json.dumps(plan)))
    assert isinstance(fresh.get_submodule(first_name), SkippedLinear)
    torch.testing.assert_close(forward(fresh, windows), expected, rtol=0, atol=TOLERANCE)
    restored = densify_model(fresh)
    assert type(restored.get_submodule(first_name)) is nn.Linear
    # A skip whose partner the plan does not zero (a hand-edited plan) is refused: its width-0 output needs it.
    edited = json.loads(json.dumps(plan))
    edited["layers"][second_name].update(kernel="csr", block=None)
    reloaded = pruned_model(name)
    reloaded.load_state_dict(state)
    with pytest.raises(TsPruneError, match="does not plan"):
        apply_plan(reloaded, edited)
    # A plan that skips a layer whose partner is not zero (weights changed since) is refused, not applied.
    other = build_model(default_config(name, **SMALL)).eval()
    with pytest.raises(TsPruneError, match="not zero"):
        apply_plan(other, plan)


def test_density_one_layers_stay_dense(windows):
    model = pruned_model("Transformer")
    dense_layers = [name for name, m in model.named_modules()
                    if isinstance(m, nn.Linear) and bool((m.weight != 0).all())]
    assert dense_layers  # the output projection is never pruned
    compiled, plan = compile_sparse(model, windows, force="csr")
    for name in dense_layers:
        assert type(compiled.get_submodule(name)) is nn.Linear and name not in plan["layers"]
    unpruned = build_model(default_config("Transformer", **SMALL))
    assert sparse_candidates(unpruned) == {}
    same, plan = compile_sparse(unpruned, windows)
    assert plan["layers"] == {} and not sparse_modules(same)


# ------------------------------------------------------------------------------------------------ timing rule


def test_choose_kernel_keeps_dense_unless_sparse_is_faster_enough():
    dense = ("dense", None)
    assert choose_kernel({dense: 1.0, ("csr", None): 2.0, ("bsr", 4): 3.0}) == dense
    assert choose_kernel({dense: 1.0, ("csr", None): 0.97}, min_speedup=1.05) == dense  # within the margin
    assert choose_kernel({dense: 1.0, ("csr", None): 0.5, ("bsr", 8): 0.4}) == ("bsr", 8)
    assert choose_kernel({dense: 1.0}) == dense


def test_slow_sparse_kernel_leaves_layer_dense(monkeypatch, windows):
    model = pruned_model("Transformer")
    slow = "encoder.layers.0.attention.query"
    assert slow in sparse_candidates(model)

    def fake_timings(candidates, calls, repeats, warmup):
        layer = candidates[("dense", None)]
        factor = 3.0 if layer is model.get_submodule(slow) else 0.5  # sparse 3x slower / 2x faster than dense
        return {key: 1.0 if key[0] == "dense" else factor for key in candidates}

    monkeypatch.setattr(sparse, "time_candidates", fake_timings)
    compiled, plan = compile_sparse(model, windows, threads=1)
    assert type(compiled.get_submodule(slow)) in (nn.Linear, nn.Conv1d)
    assert plan["layers"][slow]["kernel"] == "dense" and plan["layers"][slow]["dense_ms"] == 1.0
    others = [name for name in plan["layers"] if name != slow]
    assert others and all(plan["layers"][name]["kernel"] != "dense" for name in others)
    assert plan["threads"] == 1 and plan["batch_size"] == windows[0].shape[0]


def test_timed_compile_runs_and_matches(windows):
    model = pruned_model("FEDformer")
    expected = forward(model, windows)
    compiled, plan = compile_sparse(model, {4: windows}, batch_size=4, repeats=1, warmup=0, blocks=(8,))
    timed = [entry for entry in plan["layers"].values() if entry["kernel"] not in ("zero", "skip")]
    assert timed
    for entry in timed:
        assert entry["dense_ms"] > 0 and entry["csr_ms"] > 0 and entry["kernel"] in ("dense", "csr", "bsr", "pcsr")
    assert (forward(compiled, windows) - expected).abs().max().item() <= TOLERANCE


# ------------------------------------------------------------------------------------------------ plans


@pytest.mark.parametrize("name", ["Informer", "Autoformer"])
def test_plan_round_trip_through_safetensors(name, windows, tmp_path):
    model = pruned_model(name)
    keys = list(model.state_dict())
    compiled, plan = compile_sparse(model, windows, force="csr")
    assert list(compiled.state_dict()) == keys  # same keys, same order as the masked model
    # Mix kernels so the replay has something to get right: every other layer BSR.
    for index, entry in enumerate(plan["layers"].values()):
        if index % 2 and entry["shape"][0] % 4 == 0 and entry["kernel"] not in ("zero", "skip"):
            entry.update(kernel="bsr", block=4)
    compiled = apply_plan(compiled, plan)  # re-lays out an already compiled model
    expected = forward(compiled, windows)
    save_file(dense_state_dict(compiled), str(tmp_path / "model.safetensors"))
    (tmp_path / "plan.json").write_text(json.dumps(plan))

    fresh = build_model(default_config(name, **SMALL)).eval()
    assert sorted(load_file(str(tmp_path / "model.safetensors"))) == sorted(fresh.state_dict())
    fresh.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=True)
    fresh = apply_plan(fresh, json.loads((tmp_path / "plan.json").read_text()))
    for layer_name, entry in plan["layers"].items():
        layer = fresh.get_submodule(layer_name)
        assert (layer.kernel, layer.block) == (entry["kernel"], entry["block"])
    assert torch.equal(forward(fresh, windows), expected)


def test_plans_of_the_first_format_still_load(windows):
    """Plans written before the rename called each layer's kernel its "engine": they replay to the same model."""
    model = pruned_model("Transformer")
    compiled, plan = compile_sparse(copy.deepcopy(model), windows, force="csr")
    old = {**plan, "format": "tsprune-sparse-plan/1",
           "layers": {name: {("engine" if key == "kernel" else key): value for key, value in entry.items()}
                      for name, entry in plan["layers"].items()}}
    replayed = apply_plan(copy.deepcopy(model), old)
    assert [(n, type(m)) for n, m in replayed.named_modules()] == [(n, type(m)) for n, m in compiled.named_modules()]
    assert torch.equal(forward(replayed, windows), forward(compiled, windows))
    assert sparse.read_plan(old)["layers"] == plan["layers"] and sparse.plan_summary(old) == sparse.plan_summary(plan)


def test_apply_plan_rejects_a_foreign_plan():
    model = pruned_model("Transformer")
    with pytest.raises(TsPruneError):
        apply_plan(model, {"format": "something else", "layers": {}})
    plan = {"format": sparse.PLAN_FORMAT, "layers": {"no.such.layer": {"kernel": "csr", "block": None}}}
    with pytest.raises(TsPruneError):
        apply_plan(model, plan)


def test_densify_model_undoes_compile(windows):
    model = pruned_model("Crossformer")
    expected = forward(model, windows)
    compiled, _ = compile_sparse(copy.deepcopy(model), windows, force="bsr")
    restored = densify_model(compiled)
    assert not sparse_modules(restored)
    assert (forward(restored, windows) - expected).abs().max().item() <= TOLERANCE
    assert list(restored.state_dict()) == list(model.state_dict())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("layout,block", [("csr", None), ("bsr", 16)])
def test_sparse_layers_on_cuda(layout, block):
    torch.manual_seed(0)
    linear = masked(nn.Linear(64, 128)).cuda()
    conv = masked(nn.Conv1d(32, 64, 3)).cuda()
    x, y = torch.randn(4, 9, 64, device="cuda"), torch.randn(4, 32, 20, device="cuda")
    with torch.inference_mode():
        torch.testing.assert_close(SparseLinear(linear, layout, block)(x), linear(x), atol=1e-4, rtol=0)
        torch.testing.assert_close(SparseConv1d(conv, layout, block)(y), conv(y), atol=1e-4, rtol=0)


def test_own_kernel_is_timed_and_plans_fall_back_without_it(windows, monkeypatch):
    """Where the C++ kernel builds it is one more candidate (its timing in the plan) and a plan that chose it
    replays to the same layers; where it cannot (simulated), the same plan replays on torch's CSR, same outputs."""
    if not pcsr.available():
        pytest.skip(f"the C++ kernel does not build here: {pcsr.reason()}")
    model = pruned_model("Transformer")
    expected = forward(model, windows)
    compiled, plan = compile_sparse(copy.deepcopy(model), windows, repeats=2, warmup=1)
    timed = [entry for entry in plan["layers"].values() if entry["kernel"] not in ("zero", "skip")]
    assert timed and all(entry["pcsr_ms"] > 0 for entry in timed)
    forced, forced_plan = compile_sparse(copy.deepcopy(model), windows, force="pcsr")
    replayed = apply_plan(copy.deepcopy(model), forced_plan)
    assert [type(m) for m in replayed.modules()] == [type(m) for m in forced.modules()]
    assert {m.kernel for m in sparse_modules(replayed)} == {"pcsr"}
    assert (forward(replayed, windows) - expected).abs().max().item() <= TOLERANCE
    monkeypatch.setattr(pcsr, "available", lambda: False)
    fallback = apply_plan(copy.deepcopy(model), forced_plan)
    assert {m.kernel for m in sparse_modules(fallback)} == {"csr"}
    assert (forward(fallback, windows) - expected).abs().max().item() <= TOLERANCE
    _, without = compile_sparse(copy.deepcopy(model), windows, repeats=1, warmup=0)
    assert all(entry["pcsr_ms"] is None for entry in without["layers"].values())


@pytest.mark.parametrize("name", ["Transformer", "Crossformer"])
def test_feed_forward_activations_fold_into_the_kernel(name, windows):
    """The activation between a feed-forward block's two layers folds into the first layer's pcsr kernel (our
    FeedForward's function, Crossformer's nn.GELU); the plan records it, a fresh model replays it and densifying
    undoes it, all with the masked model's outputs."""
    if not pcsr.available():
        pytest.skip(f"the C++ sparse kernel is unavailable here: {pcsr.reason()}")
    torch.manual_seed(0)
    model = build_model(default_config(name, **SMALL)).eval()
    prune_magnitude(model, DENSITY, "uniform")  # layer-wise: global masks empty these small blocks' output layers
    expected = forward(model, windows)
    compiled, plan = compile_sparse(copy.deepcopy(model), windows, force="pcsr")
    folded = plan["epilogues"]
    assert folded["kernel"] == "fused" and folded["layers"] and set(folded["layers"].values()) == {"gelu"}
    for layer_name in folded["layers"]:
        layer = compiled.get_submodule(layer_name)
        assert isinstance(layer, SparseLinear) and layer.activation == "gelu"
        block = compiled.get_submodule(layer_name.rpartition(".")[0])
        assert isinstance(block[1], nn.Identity) if isinstance(block, nn.Sequential) else block.activation(
            torch.tensor([-1.0])).item() == -1.0  # the block's own activation is now the identity
    torch.testing.assert_close(forward(compiled, windows), expected, rtol=1e-4, atol=1e-5)
    replayed = apply_plan(copy.deepcopy(model), plan)
    assert {n for n, m in replayed.named_modules() if getattr(m, "activation", None) == "gelu"} == set(folded["layers"])
    torch.testing.assert_close(forward(replayed, windows), expected, rtol=1e-4, atol=1e-5)
    # re-laying out a folded layer on an already compiled model keeps its activation (the plan folds it again)
    relaid = {**plan, "layers": {**plan["layers"], **{name: {**plan["layers"][name], "kernel": "csr"}
                                                      for name in folded["layers"]}}}
    relaid_model = apply_plan(copy.deepcopy(compiled), relaid)
    torch.testing.assert_close(forward(relaid_model, windows), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(TsPruneError, match="does not have"):
        apply_plan(copy.deepcopy(model), {**plan, "epilogues": {"kernel": "fused", "layers": {"nowhere.0": "gelu"}}})
    dense = densify_model(replayed)
    assert not epilogue_candidates(dense) and not any(isinstance(m, SparseWeight) for m in dense.modules())
    assert torch.equal(forward(dense, windows), forward(model, windows))  # the original activations are back
    # timed: folded only if the whole model measures faster so, with both timings in the plan
    _, timed = compile_sparse(copy.deepcopy(model), windows, layouts=("pcsr",), repeats=2, warmup=1, min_speedup=0)
    entry = timed.get("epilogues")
    assert entry is None or (entry["kernel"] in ("fused", "separate") and set(entry["ms"]) == {"separate", "fused"})
