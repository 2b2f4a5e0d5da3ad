"""Wanda, SparseGPT and LAMP (``prune.oneshot``) and their calibration data (``prune.calibration``): hand-computed
scores, exact per-row counts, SparseGPT's reconstruction beating magnitude's on every layer, masks kept through
fine-tuning, and calibration windows drawn from the training split only."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tsprune import api
from tsprune.config import PruneConfig
from tsprune.data.dataset import Batch
from tsprune.errors import TsPruneError
from tsprune.models.layers.fourier import FourierBlock, FourierCrossAttention
from tsprune.models.registry import model_names
from tsprune.prune import calibration, oneshot, unstructured

TINY = {"d_model": 16, "d_ff": 32, "n_heads": 2, "e_layers": 1, "d_layers": 1, "modes": 8, "n_routers": 2}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """Every model at a tiny size, briefly trained (30 steps) on a smooth 3-channel series."""
    folder = tmp_path_factory.mktemp("oneshot")
    t = np.arange(400)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"date": pd.date_range("2022-01-01", periods=400, freq="h").astype(str),
                          "a": np.sin(t / 6.0) + 0.1 * rng.standard_normal(400), "b": np.cos(t / 9.0),
                          "OT": np.sin(t / 4.0) + 0.05 * rng.standard_normal(400)})
    csv = folder / "data.csv"
    frame.to_csv(csv, index=False)
    runs = {}
    for name in model_names():
        config = api.make_config(name, data={"data_path": str(csv), "seq_len": 24, "label_len": 12, "pred_len": 12},
                                 train={"epochs": 1, "max_steps": 30, "batch_size": 8, "lr": 1e-3, "device": "cpu"},
                                 **({**TINY, "seg_len": 6} if name == "Crossformer" else TINY))
        runs[name] = api.train(config, out=folder / name, progress=False)
    return runs


class _Only(nn.Module):
    """A model of one Linear that reads the encoder input (calibration calls models with the four inputs)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x_enc: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
        return self.linear(x_enc)


def _batch(x: torch.Tensor) -> Batch:
    empty = torch.zeros(x.shape[0], 1, 1)
    return Batch(x, empty, empty, empty, empty)


def test_wanda_matches_a_hand_computed_3x4_example():
    weight = torch.tensor([[2.0, -2.0, 2.5, -4.0],
                           [4.0, 3.0, -8.0, 1.0],
                           [-1.0, 1.0, -1.5, 1.0]])
    linear = nn.Linear(4, 3, bias=False)
    linear.weight.data.copy_(weight)
    # Two windows of two tokens each; column norms ||X_j||: sqrt(1+4+0+4)=3, sqrt(0+0+9+16)=5, 1, sqrt(0.25)=0.5.
    x = torch.tensor([[[1.0, 0.0, 1.0, 0.0], [2.0, 0.0, 0.0, 0.5]],
                      [[0.0, 3.0, 0.0, 0.0], [2.0, 4.0, 0.0, 0.0]]])
    model = _Only(linear)
    modules = {"linear.weight": linear}
    norms = oneshot.feature_norms(model, modules, [_batch(x)], torch.device("cpu"))
    torch.testing.assert_close(norms["linear.weight"], torch.tensor([3.0, 5.0, 1.0, 0.5], dtype=torch.float64))
    scores = oneshot.wanda_scores({"linear.weight": linear.weight}, norms)["linear.weight"]
    expected = torch.tensor([[6.0, 10.0, 2.5, 2.0],  # |W| * [3, 5, 1, 0.5]
                             [12.0, 15.0, 8.0, 0.5],
                             [3.0, 5.0, 1.5, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(scores, expected)
    keep = oneshot.select({"linear.weight": scores}, modules, 0.5, "row")["linear.weight"]
    # Two per row; magnitude alone would keep row 0's 2.5 and -4: the input norms change the choice.
    assert keep.tolist() == [[True, True, False, False], [True, True, False, False], [True, True, False, False]]
    layer = oneshot.select({"linear.weight": scores}, modules, 0.5, "layer")["linear.weight"]
    assert layer.tolist() == [[True, True, False, False], [True, True, True, False], [False, True, False, False]]
    # The method end to end on this model: the same weights zeroed.
    oneshot.apply_masks({"linear.weight": linear.weight}, {"linear.weight": keep})
    assert linear.weight.detach().tolist() == [[2.0, -2.0, 0.0, 0.0], [4.0, 3.0, 0.0, 0.0], [-1.0, 1.0, 0.0, 0.0]]


def test_lamp_scores_by_hand_and_never_empties_a_layer():
    scores = oneshot.lamp_scores({"w": torch.tensor([1.0, -3.0, 2.0, 0.0])})["w"]
    # ascending squares 0, 1, 4, 9 with tail sums 14, 14, 13, 9
    torch.testing.assert_close(scores, torch.tensor([1 / 14, 1.0, 4 / 13, 0.0], dtype=torch.float64))
    big, small = torch.randn(64, 64, generator=torch.Generator().manual_seed(0)), torch.randn(8, 8) * 1e-3
    params = {"big": big.clone(), "small": small.clone()}
    magnitude = unstructured.magnitude_masks(params, 0.05, "global")
    lamp = unstructured.magnitude_masks(oneshot.lamp_scores(params), 0.05, "global")
    assert not magnitude["small"].any()  # magnitude empties the small-scale layer...
    assert lamp["small"].any() and lamp["big"].any()  # ...LAMP keeps both
    assert sum(int(m.sum()) for m in lamp.values()) == round(0.05 * (64 * 64 + 64))


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_row_comparison_keeps_the_same_count_in_every_row(trained, method):
    """At 0.25 on the model with the most layer kinds (the method contract checks every model at 0.5)."""
    run = trained["Crossformer"]
    pruned = api.prune(run, method, 0.25, batch_sizes=(2,), latency_repeats=1, threads=1, device="cpu",
                       calibration_windows=16)
    for name, weight in unstructured.prunable_parameters(pruned.model).items():
        rows = weight.detach().reshape(weight.shape[0], -1)
        assert set(rows.count_nonzero(dim=1).tolist()) == {round(0.25 * rows.shape[1])}, name
    assert pruned.metrics["calibration_windows"] == 16 and pruned.metrics["calibration_split"] == "train"


@pytest.mark.parametrize("model", model_names())
def test_sparsegpt_reconstructs_every_layer_better_than_magnitude(trained, model):
    """The property SparseGPT exists for: on the inputs each layer was pruned on, ``||X W^T - X W'^T||`` is at most
    what magnitude pruning to the same per-row density leaves."""
    run = trained[model]
    network = copy.deepcopy(run.model)
    params = unstructured.prunable_parameters(network)
    batches = calibration.calibration_batches(run.data(), 32, 0)
    seen = []

    def check(name, dense, pruned, hessian):
        def error(new):
            delta = (dense - new).double()
            return float(torch.einsum("rc,cd,rd->", delta, hessian, delta))

        keep = oneshot.select({name: dense.abs()}, {name: nn.Linear(1, 1)}, 0.5, "row")[name]
        magnitude = error(dense * keep)
        assert error(pruned) <= magnitude * (1 + 1e-9), (name, error(pruned), magnitude)
        seen.append(name)

    damping = PruneConfig().damping  # the default the method ships with
    oneshot.sparsegpt(network, params, batches, 0.5, "row", damping, torch.device("cpu"), on_layer=check)
    assert set(seen) == set(params)


def test_sparsegpt_update_is_exact_when_it_can_be():
    """A weight whose pruned columns are copies of kept ones (inputs equal) is reconstructed exactly: the OBS
    update moves the pruned weight onto its twin."""
    torch.manual_seed(0)
    base = torch.randn(200, 2, dtype=torch.float64)
    x = torch.cat([base, base], dim=1)  # columns 2, 3 repeat columns 0, 1
    weight = torch.tensor([[5.0, 4.0, 0.1, 0.2], [3.0, 6.0, 0.3, 0.1]], dtype=torch.float64)
    pruned, keep = oneshot.sparsegpt_layer(weight, x.T @ x, 0.5, "row", damping=1e-9)
    assert keep.sum(dim=1).tolist() == [2, 2]
    torch.testing.assert_close(x @ pruned.T, x @ weight.T, atol=1e-4, rtol=1e-6)


ONESHOT = ("wanda", "sparsegpt", "lamp")


@pytest.mark.parametrize("model, method", [("Transformer", method) for method in ONESHOT] + [
    (model, ONESHOT[i % 3]) for i, model in enumerate(model_names()) if model != "Transformer"])
def test_masks_stay_exact_through_finetuning(trained, model, method):
    run = trained[model]
    plain = api.prune(run, method, 0.3, batch_sizes=(2,), latency_repeats=1, threads=1, device="cpu",
                      calibration_windows=16)
    tuned = api.prune(run, method, 0.3, batch_sizes=(2,), latency_repeats=1, threads=1, device="cpu",
                      calibration_windows=16, finetune_epochs=1, finetune_max_steps=5)
    before = unstructured.prunable_parameters(plain.model)
    after = unstructured.prunable_parameters(tuned.model)
    changed = False
    for name, weight in before.items():
        assert torch.equal(after[name] != 0, weight != 0), name  # the same zeros, none regrown
        changed |= not torch.equal(after[name], weight)
    assert changed  # fine-tuning did train the kept weights


def test_calibration_windows_come_from_the_training_split_only(trained, monkeypatch):
    run = trained["Informer"]
    data = run.data()
    starts = calibration.calibration_starts(data, 10_000, seed=3)
    assert len(starts) == data.n_windows("train")  # capped at what the split holds, each window once
    assert int(starts.max()) + data.config.seq_len + data.config.pred_len <= len(data.splits["train"].values)
    assert torch.equal(calibration.calibration_starts(data, 20, 3), calibration.calibration_starts(data, 20, 3))
    assert not torch.equal(calibration.calibration_starts(data, 20, 3), calibration.calibration_starts(data, 20, 4))
    batch = calibration.calibration_batches(data, 5, 3)[0]
    rows = data.splits["train"].values
    for window, start in zip(batch.x_enc, calibration.calibration_starts(data, 5, 3)):
        torch.testing.assert_close(window, rows[int(start):int(start) + data.config.seq_len])
    # End to end: every window a calibrated method reads comes through ``batch("train", ...)``.
    splits = []
    original = type(data).batch

    def spy(self, split, starts, device="cpu"):
        splits.append(split)
        return original(self, split, starts, device)

    monkeypatch.setattr(type(data), "batch", spy)
    for method in ("wanda", "sparsegpt"):
        splits.clear()
        config = PruneConfig(method=method, density=0.5, calibration_windows=8)
        oneshot_run = getattr(oneshot, f"prune_{method}")
        oneshot_run(copy.deepcopy(run.model), data, config, run.config.train, torch.device("cpu"))
        assert splits and set(splits) == {"train"}, splits


def test_fourier_weights_wanda_scores_them_sparsegpt_refuses(trained):
    run = trained["FEDformer"]
    pruned = api.prune(run, "wanda", 0.25, batch_sizes=(2,), latency_repeats=1, threads=1, device="cpu",
                       include_fourier=True, calibration_windows=8)
    fourier = [m for m in pruned.model.modules() if isinstance(m, (FourierBlock, FourierCrossAttention))]
    assert fourier
    for block in fourier:  # every (head, out, mode) row keeps a quarter of its E_in complex weights
        rows = oneshot.rows_view(block, block.weight.detach())
        assert set((rows != 0).sum(dim=1).tolist()) == {round(0.25 * rows.shape[1])}
    with pytest.raises(TsPruneError, match="include_fourier"):
        api.prune(run, "sparsegpt", 0.5, batch_sizes=(2,), latency_repeats=1, threads=1, device="cpu",
                  include_fourier=True)
    with pytest.raises(TsPruneError, match="comparison"):
        api.prune(run, "sparsegpt", 0.5, batch_sizes=(2,), latency_repeats=1, threads=1, device="cpu",
                  comparison="global")


def test_calibrated_methods_are_deterministic(trained):
    run = trained["Informer"]  # ProbSparse samples keys: calibration passes are seeded
    for method in ("wanda", "sparsegpt"):
        first = api.prune(run, method, 0.4, batch_sizes=(2,), latency_repeats=1, threads=1, device="cpu",
                          calibration_windows=16)
        second = api.prune(run, method, 0.4, batch_sizes=(2,), latency_repeats=1, threads=1, device="cpu",
                           calibration_windows=16)
        for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
            assert torch.equal(a, b), (method, name)


@pytest.mark.parametrize("comparison", ["row", "layer"])
def test_sparsegpt_equals_the_textbook_sequential_obs(comparison):
    """The Cholesky/lazy-block form equals Optimal Brain Surgeon done the slow way: for each column in turn, prune
    the masked weights and update the unvisited columns with the inverse of the Hessian restricted to them."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(300, 12, generator=generator, dtype=torch.float64) @ torch.randn(
        12, 12, generator=generator, dtype=torch.float64)
    weight = torch.randn(5, 12, generator=generator, dtype=torch.float64)
    hessian = x.T @ x
    pruned, keep = oneshot.sparsegpt_layer(weight, hessian, 0.5, comparison, damping=0.01, block=4)
    assert int((~keep).sum()) == 30 and (pruned[~keep] == 0).all()
    damped = oneshot.damped(hessian, 0.01)
    slow = weight.clone()
    for column in range(12):
        inverse = torch.linalg.inv(damped[column:, column:])
        for row in torch.nonzero(~keep[:, column]).flatten():
            slow[row, column:] -= slow[row, column] / inverse[0, 0] * inverse[:, 0]
    torch.testing.assert_close(pruned, slow, atol=1e-10, rtol=1e-10)
