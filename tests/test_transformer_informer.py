"""Transformer and Informer: shapes, ProbSparse attention against plain attention, causality, distilling."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import DEVICE, random_inputs
from tsprune.models.informer import Informer
from tsprune.models.layers.prob_attention import ProbAttention
from tsprune.models.registry import default_config, get_spec
from tsprune.models.transformer import Transformer

MODELS = {"Transformer": Transformer, "Informer": Informer}


def build(name: str, tiny: dict, **overrides) -> torch.nn.Module:
    config = default_config(name, **{**tiny, **overrides})
    return MODELS[name](config).to(DEVICE)


def batch(config, size: int = 2) -> tuple[torch.Tensor, ...]:
    return random_inputs(config, size, seed=int(torch.randint(0, 2**31 - 1, ()).item()))


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """softmax(QK^T / sqrt(E)) V on ``[B, L, H, E]`` inputs, written out."""
    scores = torch.einsum("blhe,bshe->bhls", q, k) / math.sqrt(q.shape[-1])
    if causal:
        mask = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
    return torch.einsum("bhls,bshd->blhd", torch.softmax(scores, dim=-1), v)


@pytest.mark.parametrize("name", ["Transformer", "Informer"])
@pytest.mark.parametrize("enc_in, c_out", [(5, 5), (5, 1)])
def test_forward_shape_and_backward(name, enc_in, c_out, tiny):
    model = build(name, tiny, enc_in=enc_in, dec_in=enc_in, c_out=c_out, seq_len=48, label_len=24, pred_len=12)
    out = model(*batch(model.config))
    assert out.shape == (2, 12, c_out)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", ["Transformer", "Informer"])
def test_registry_entry_and_output_layers(name):
    spec = get_spec(name)
    assert spec.cls is MODELS[name]
    assert spec.summary and "d_layers" in spec.uses
    model = MODELS[name](default_config(name, d_model=16, d_ff=32, n_heads=2))
    modules = dict(model.named_modules())
    assert all(isinstance(modules[layer], torch.nn.Linear) for layer in model.output_layers)


@pytest.mark.parametrize("causal", [False, True])
def test_prob_attention_equals_full_attention_when_every_query_is_selected(causal):
    torch.manual_seed(0)
    length, source = 9, (9 if causal else 13)
    q = torch.randn(3, length, 2, 8)
    k = torch.randn(3, source, 2, 8)
    v = torch.randn(3, source, 2, 6)
    # u = 10 * ceil(ln 9) >= 9: every query selected
    attention = ProbAttention(causal=causal, factor=10, layout="paper")
    torch.testing.assert_close(attention(q, k, v), reference_attention(q, k, v, causal))


@pytest.mark.parametrize("causal", [False, True])
def test_prob_attention_lazy_queries_get_mean_or_cumsum_of_values(causal):
    torch.manual_seed(1)
    length = 24  # factor 1: u = ceil(ln 24) = 4 of 24 queries get full attention
    q, k, v = torch.randn(2, length, 3, 4), torch.randn(2, length, 3, 4), torch.randn(2, length, 3, 5)
    out = ProbAttention(causal=causal, factor=1, layout="paper")(q, k, v)
    lazy = v.cumsum(dim=1) if causal else v.mean(dim=1, keepdim=True).expand_as(v)
    full = reference_attention(q, k, v, causal)
    is_lazy = torch.isclose(out, lazy, atol=1e-5).all(dim=-1)  # [B, L, H]
    is_full = torch.isclose(out, full, atol=1e-5).all(dim=-1)
    assert (is_lazy | is_full).all()
    assert ((~is_lazy).sum(dim=1) <= 4).all() and ((~is_lazy).sum(dim=1) >= 3).all()  # row 0 may match both


def test_transformer_decoder_is_causal(tiny):
    torch.manual_seed(2)
    model = build("Transformer", tiny, dropout=0.0, seq_len=16, label_len=0, pred_len=10).eval()
    x_enc, mark_enc, x_dec, mark_dec = batch(model.config, size=1)
    changed = mark_dec.clone()
    changed[:, 6] += 1.0  # a future calendar feature (its embedding is per step, unlike the conv token embedding)
    with torch.no_grad():
        before = model(x_enc, mark_enc, x_dec, mark_dec)
        after = model(x_enc, mark_enc, x_dec, changed)
        # The decoder itself, on embedded inputs: a change at step 6 leaves steps 0-5 alone.
        enc_out = model.encoder(model.enc_embedding(x_enc, mark_enc))
        dec_in = model.dec_embedding(x_dec, mark_dec)
        dec_changed = dec_in.clone()
        dec_changed[:, 6] += 1.0
        dec_before, dec_after = model.decoder(dec_in, enc_out), model.decoder(dec_changed, enc_out)
    torch.testing.assert_close(after[:, :6], before[:, :6])
    assert not torch.allclose(after[:, 6:], before[:, 6:])
    torch.testing.assert_close(dec_after[:, :6], dec_before[:, :6])
    assert not torch.allclose(dec_after[:, 6:], dec_before[:, 6:])


@pytest.mark.parametrize("distil, lengths", [(True, [96, 48, 24]), (False, [96, 96, 96])])
def test_informer_distilling_halves_encoder_length(distil, lengths, tiny):
    model = build("Informer", tiny, e_layers=3, distil=distil, seq_len=96, label_len=48, pred_len=24)
    assert len(model.encoder.distil_layers or []) == (2 if distil else 0)
    x_enc, mark_enc, x_dec, mark_dec = batch(model.config)
    seen = []
    hooks = [
        layer.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[1])) for layer in model.encoder.layers
    ]
    with torch.no_grad():
        enc_out = model.encoder(model.enc_embedding(x_enc, mark_enc))
        out = model(x_enc, mark_enc, x_dec, mark_dec)
    for hook in hooks:
        hook.remove()
    assert seen[:3] == lengths
    assert enc_out.shape == (2, lengths[-1], tiny["d_model"])
    assert out.shape == (2, 24, model.config.c_out)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dim_e", [2, 16])  # E=2: L_K > U*E, the long-input path gathers sampled keys itself
def test_prob_attention_scores_from_one_gemm_match_the_official_sampled_gather(causal, dim_e):
    from tsprune.models.reference import ReferenceProbAttention

    torch.manual_seed(2)
    length = 40  # factor 1: U = u = ceil(ln 40) = 4
    assert ProbAttention._full_scores(length, 4, dim_e) == (dim_e == 16)
    q, k, v = (torch.randn(2, length, 3, dim_e, requires_grad=True) for _ in range(3))
    torch.manual_seed(3)
    ours = ProbAttention(causal=causal, factor=1)(q, k, v)
    grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    torch.manual_seed(3)  # the same key sample
    official = ReferenceProbAttention(causal=causal, factor=1)(q, k, v)
    official_grads = torch.autograd.grad(official.square().sum(), (q, k, v))
    torch.testing.assert_close(ours, official, rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(grads, official_grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("source", [7, 40])  # 7 keys: the no-grad CPU path is two GEMMs; 40: SDPA either way
def test_full_attention_inference_path_matches_sdpa_and_the_written_out_math(causal, source):
    from tsprune.models.layers.attention import SHORT_KEYS, FullAttention

    torch.manual_seed(4)
    length = source if causal else 10
    q, k, v = torch.randn(3, length, 2, 8), torch.randn(3, source, 2, 8), torch.randn(3, source, 2, 8)
    attention = FullAttention(causal=causal).eval()
    with torch.no_grad():
        inference = attention(q, k, v)
    with_grad = attention(q, k, v)  # grad mode: the fused kernel
    assert (source <= SHORT_KEYS) == (source == 7)
    torch.testing.assert_close(inference, with_grad.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(inference, reference_attention(q, k, v, causal), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_prob_attention_tslib_layout_flattens_heads_as_the_study_code(causal):
    torch.manual_seed(4)
    batch, length, heads, dim = 2, 12, 3, 5
    q, k, v = (torch.randn(batch, length, heads, dim) for _ in range(3))
    torch.manual_seed(5)
    paper = ProbAttention(causal=causal, factor=1, layout="paper")(q, k, v)  # [B, L, H, D]
    torch.manual_seed(5)  # the same key sample and selection
    reference = ProbAttention(causal=causal, factor=1)(q, k, v)  # the default: tslib
    # the reference code's context is [B, H, L, D]; its attention layer then reads that memory as [B, L, H * D]
    flattened = paper.transpose(1, 2).contiguous().view(batch, length, -1)
    torch.testing.assert_close(reference.reshape(batch, length, -1), flattened)
    assert not torch.allclose(reference, paper)
    # row 0 of the reference output holds positions 0, 1, 2 of head 0 (H consecutive positions of one head)
    torch.testing.assert_close(reference[0, 0], paper[0, :heads, 0])


def test_informer_layouts_are_a_setting_with_the_same_weights():
    from conftest import TINY, random_inputs
    from tsprune.config import ModelConfig
    from tsprune.errors import TsPruneError
    from tsprune.models.registry import build_model

    paper = build_model(ModelConfig(name="Informer", prob_layout="paper", **TINY))
    reference = build_model(ModelConfig(name="Informer", **TINY))
    assert reference.config.prob_layout == "tslib"  # the study's model is the default
    reference.load_state_dict(paper.state_dict())  # no new parameter: a checkpoint loads into either layout
    inputs = random_inputs(paper.config, device="cpu")
    paper.eval(), reference.eval()
    torch.manual_seed(0)
    a = paper(*inputs)
    torch.manual_seed(0)
    b = reference(*inputs)
    assert a.shape == b.shape and not torch.allclose(a, b)
    with pytest.raises(TsPruneError, match="prob_layout must be tslib or paper"):
        ModelConfig(name="Informer", prob_layout="mixed").validate()
