"""tsprune's fused short attention (``tsprune::short_attention``, ``tsprune.sparse.attention``): equal to torch's
two-GEMM path to float32 rounding on every path the CPU has, for causal and non-causal, strided inputs and every
key count it accepts; its schema and fake pass ``opcheck``; the engine fuses it, records it in the plan, replays it
and undoes it."""

from __future__ import annotations

import copy

import pytest
import torch

from tsprune.errors import TsPruneError
from tsprune.models.layers.attention import SHORT_KEYS, FullAttention
from tsprune.models.registry import build_model, default_config
from tsprune.sparse import kernel
from tsprune.sparse.attention import FusedAttention, fuse, fusable, short_attention, unfuse
from tsprune.sparse.engine import apply_plan, compile_sparse, densify_model
from conftest import random_inputs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def needs_kernel() -> None:
    if not kernel.available():
        pytest.skip(f"the C++ kernels are unavailable here: {kernel.reason()}")


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(E)) v in float64, ``[B, L, H, E]`` layout."""
    q, k, v = (t.double().transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    if causal:
        scores = scores.masked_fill(torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).triu(1), float("-inf"))
    return (torch.softmax(scores, -1) @ v).transpose(1, 2)


def projected(batch: int, length: int, heads: int, features: int, generator: torch.Generator) -> torch.Tensor:
    """``[B, L, H, E]`` as the models make it: a view of a ``[B, L, H*E]`` projection output."""
    return torch.randn(batch, length, heads * features, generator=generator).view(batch, length, heads, features)


@pytest.mark.parametrize("simd", [True, False])
@pytest.mark.parametrize("keys", [1, 7, 8, 9, 16, 17, SHORT_KEYS])
@pytest.mark.parametrize("causal", [False, True])
def test_equals_softmax_attention(simd: bool, keys: int, causal: bool) -> None:
    generator = torch.Generator().manual_seed(keys)
    for batch, length, heads, features, values in ((3, 10, 4, 64, 64), (2, 1, 2, 5, 70), (1, 33, 3, 8, 129)):
        q = projected(batch, length, heads, features, generator)
        k = projected(batch, keys, heads, features, generator)
        v = projected(batch, keys, heads, values, generator)
        out = short_attention(q, k, v, causal=causal, simd=simd)
        assert out.shape == (batch, length, heads, values) and out.is_contiguous()
        expected = reference(q, k, v, causal)
        # each output is a convex combination of v's rows: its error is float32 rounding of |v|-sized terms
        torch.testing.assert_close(out.double(), expected, rtol=0, atol=4e-6 * v.abs().max().item())


def test_reads_strided_inputs_and_a_given_scale() -> None:
    generator = torch.Generator().manual_seed(1)
    base = torch.randn(4, 6, 3, 16, generator=generator)
    q = base.transpose(0, 1)[:, :5]  # [6, 5, 3, 16], batch stride smaller than the length stride
    k = torch.randn(6, 16, 3, 9, generator=generator).permute(0, 3, 2, 1)  # [6, 9, 3, 16], last stride not 1
    v = torch.randn(6, 9, 3, 16, generator=generator)[:, :, :, :12]  # [6, 9, 3, 12]
    out = short_attention(q, k, v, scale=0.3)
    expected = reference(q * (0.3 / 16**-0.5), k, v, causal=False)  # reference scales by E ** -0.5
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5)


def test_exp_underflow_gives_zero_weights_not_nan() -> None:
    q = torch.zeros(1, 2, 1, 4)
    q[0, :, 0, 0] = 1000.0  # scores 0, -2000 * ... : all but one weight underflow
    k = torch.zeros(1, 3, 1, 4)
    k[0, 0, 0, 0], k[0, 1, 0, 0], k[0, 2, 0, 0] = 1.0, -1.0, 0.9
    v = torch.arange(12.0).view(1, 3, 1, 4)
    out = short_attention(q, k, v)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), reference(q, k, v, False), rtol=0, atol=1e-6)


def test_bad_calls_raise() -> None:
    q = torch.randn(2, 3, 2, 8)
    with pytest.raises(RuntimeError, match=f"1 to {SHORT_KEYS} keys"):
        short_attention(q, torch.randn(2, SHORT_KEYS + 1, 2, 8), torch.randn(2, SHORT_KEYS + 1, 2, 8))
    with pytest.raises(RuntimeError, match="do not match"):
        short_attention(q, torch.randn(2, 4, 2, 7), torch.randn(2, 4, 2, 8))
    with pytest.raises(RuntimeError, match="float32"):
        short_attention(q.double(), torch.randn(2, 4, 2, 8).double(), torch.randn(2, 4, 2, 8).double())


def test_opcheck() -> None:
    generator = torch.Generator().manual_seed(2)
    for causal in (False, True):
        args = (projected(2, 5, 2, 8, generator), projected(2, 7, 2, 8, generator), projected(2, 7, 2, 6, generator),
                0.35, causal, True)
        torch.library.opcheck(torch.ops.tsprune.short_attention.default, args)


def test_fused_module_equals_full_attention_and_falls_back_in_training() -> None:
    generator = torch.Generator().manual_seed(3)
    q, k, v = (projected(2, 6, 2, 8, generator) for _ in range(3))
    for causal in (False, True):
        plain, fused = FullAttention(causal=causal), FusedAttention(causal=causal)
        with torch.inference_mode():
            torch.testing.assert_close(fused(q, k, v), plain(q, k, v), rtol=1e-5, atol=1e-6)
    fused = FusedAttention(dropout=0.0).train()
    q.requires_grad_(True)
    out = fused(q, k, v)  # with gradients: torch's path, differentiable
    out.sum().backward()
    assert q.grad is not None


def tiny_crossformer() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    config = default_config("Crossformer", d_model=16, d_ff=32, n_heads=2, e_layers=2, seq_len=48, pred_len=24)
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(torch.rand_like(module.weight) < 0.3)
    return model, random_inputs(config, batch=3, device="cpu")


def test_the_engine_fuses_records_replays_and_undoes_it() -> None:
    model, inputs = tiny_crossformer()
    names = list(fusable(model))
    assert names and all(name.endswith(".inner") for name in names)
    with torch.inference_mode():
        expected = model(*inputs)
    compiled, plan = compile_sparse(copy.deepcopy(model), inputs, force="pcsr")
    assert plan["attention"] == {"kernel": "fused", "modules": names}
    assert sum(isinstance(m, FusedAttention) for m in compiled.modules()) == len(names)
    with torch.inference_mode():
        torch.testing.assert_close(compiled(*inputs), expected, rtol=1e-5, atol=1e-5)
    # timed: whichever variant measured faster, recorded with its timings, and the model is left that way
    timed, timed_plan = compile_sparse(copy.deepcopy(model), inputs, repeats=2, warmup=1)
    entry = timed_plan["attention"]
    assert entry["kernel"] in ("fused", "torch") and set(entry["ms"]) == {"torch", "fused"}
    assert any(isinstance(m, FusedAttention) for m in timed.modules()) == (entry["kernel"] == "fused")
    # a fresh model replays the plan; densifying undoes it
    replayed = apply_plan(copy.deepcopy(model), plan)
    assert sum(isinstance(m, FusedAttention) for m in replayed.modules()) == len(names)
    dense = densify_model(replayed)
    assert not any(isinstance(m, FusedAttention) for m in dense.modules()) and len(fusable(dense)) == len(names)
    # without attention=True nothing is fused and the plan says nothing about it
    plain, plain_plan = compile_sparse(copy.deepcopy(model), inputs, force="pcsr", attention=False)
    assert "attention" not in plain_plan and not any(isinstance(m, FusedAttention) for m in plain.modules())
    with pytest.raises(TsPruneError, match="does not have"):
        apply_plan(copy.deepcopy(model), {**plan, "attention": {"kernel": "fused", "modules": ["nowhere.inner"]}})


def test_fuse_and_unfuse_are_inverse() -> None:
    model, _ = tiny_crossformer()
    names = fuse(model)
    assert not fusable(model) and unfuse(model) == names and list(fusable(model)) == names
