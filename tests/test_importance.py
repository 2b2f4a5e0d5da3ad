"""DepGraph's channel importances (``prune.importance``): ``taylor`` and ``hessian`` scores computed by hand on a
two-Linear model (gradients of the MSE written out analytically), the Hessian's per-window mean of squared gradients
(what Torch-Pruning 1.6's own ``accumulate_grad`` gets wrong), each importance removing its own least important
channel, and on every model: the target reached, no ``.grad`` left behind, identical results from two runs."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import torch_pruning as tp
from torch import nn

from conftest import TINY
from tsprune.config import DataConfig, PruneConfig, TrainConfig
from tsprune.data.dataset import Batch, prepare_data
from tsprune.errors import TsPruneError
from tsprune.measure import count_params
from tsprune.models.registry import build_model, default_config, get_spec, model_names
from tsprune.prune import importance, structured

CPU = torch.device("cpu")
WINDOWS = {"seq_len": 24, "label_len": 12, "pred_len": 12}

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------- a two-Linear model


class TwoLinear(nn.Module):
    """``x_enc [B, L, C] -> fc2(fc1(x)) [B, L, C]``: one prunable group, fc1's outputs = fc2's inputs (fc2 is the
    output layer, as a forecaster's projection is). No activation, so the gradients have a closed form."""

    output_layers = ["fc2"]

    def __init__(self, channels: int = 3, hidden: int = 5, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.randn(hidden, channels, generator=generator))
            self.fc2.weight.copy_(torch.randn(channels, hidden, generator=generator))

    def forward(self, x_enc: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x_enc))


def toy_batches(sizes: tuple[int, ...] = (3, 1), length: int = 4, channels: int = 3, seed: int = 1) -> list[Batch]:
    """Batches of random windows (inputs and targets ``[B, length, channels]``), of unequal sizes on purpose."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for size in sizes:
        x = torch.randn(size, length, channels, generator=generator)
        y = torch.randn(size, length, channels, generator=generator)
        empty = torch.zeros(size, length, 1)
        batches.append(Batch(x, empty, x, empty, y))
    return batches


def hand_gradients(model: TwoLinear, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``dL/dW1, dL/dW2`` of ``L = mean((x W1^T W2^T - y)^2)`` over all of ``x [B, L, C]``, written out:
    with ``E = out - y`` and ``N`` elements, ``dL/dW2 = 2/N sum E^T h`` and ``dL/dW1 = 2/N sum (E W2)^T x``."""
    w1, w2 = model.fc1.weight.detach().double(), model.fc2.weight.detach().double()
    x, y = x.double().reshape(-1, x.shape[-1]), y.double().reshape(-1, y.shape[-1])
    h = x @ w1.T
    error = h @ w2.T - y
    scale = 2.0 / error.numel()
    return scale * (error @ w2).T @ x, scale * error.T @ h


def test_taylor_gradients_are_the_mean_loss_gradient_over_every_window():
    model, batches = TwoLinear(), toy_batches((3, 1))
    x, y = torch.cat([b.x_enc for b in batches]), torch.cat([b.y for b in batches])
    grads = importance.calibration_gradients(model, batches, "taylor")
    g1, g2 = hand_gradients(model, x, y)  # one loss over all four windows: batches of 3 and 1 weigh by window
    torch.testing.assert_close(grads["fc1.weight"].double(), g1, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grads["fc2.weight"].double(), g2, rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())  # the model's own .grad is not touched


def test_hessian_gradients_are_the_mean_of_squared_per_window_gradients():
    model, batches = TwoLinear(), toy_batches((3, 1))
    windows = [(b.x_enc[i:i + 1], b.y[i:i + 1]) for b in batches for i in range(b.y.shape[0])]
    per_window = [hand_gradients(model, x, y) for x, y in windows]
    fisher1 = torch.stack([g1 ** 2 for g1, _ in per_window]).mean(0)
    fisher2 = torch.stack([g2 ** 2 for _, g2 in per_window]).mean(0)
    grads = importance.calibration_gradients(model, batches, "hessian")
    torch.testing.assert_close(grads["fc1.weight"].double(), fisher1, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(grads["fc2.weight"].double(), fisher2, rtol=1e-5, atol=1e-8)
    # and the teeth: neither the last window's square (Torch-Pruning 1.6's accumulate_grad) nor the square of the
    # mean gradient (one batched backward) is that
    assert not torch.allclose(per_window[-1][0] ** 2, fisher1, rtol=1e-3)
    mean1 = torch.stack([g1 for g1, _ in per_window]).mean(0)
    assert not torch.allclose(mean1 ** 2, fisher1, rtol=1e-3)


def hand_scores(model: TwoLinear, grads: dict[str, torch.Tensor], kind: str) -> torch.Tensor:
    """Torch-Pruning's group score of each hidden channel ``j``, by hand: the mean of fc1's output-row score and
    fc2's input-column score (taylor ``sum |w * g|``, hessian ``sum w^2 * g``), divided by its mean over channels."""
    w1, w2 = model.fc1.weight.detach(), model.fc2.weight.detach()
    g1, g2 = grads["fc1.weight"], grads["fc2.weight"]
    if kind == "taylor":
        rows, columns = (w1 * g1).abs().sum(1), (w2 * g2).abs().sum(0)
    else:
        rows, columns = (w1 ** 2 * g1).sum(1), (w2 ** 2 * g2).sum(0)
    score = (rows + columns) / 2
    return score / score.mean()


@pytest.mark.parametrize("kind", ["taylor", "hessian"])
def test_torch_pruning_scores_the_gradients_we_write(kind):
    model, batches = TwoLinear(), toy_batches((3, 1))
    grads = importance.calibration_gradients(model, batches, kind)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=batches[0].inputs(),
                                                  forward_fn=lambda m, x: m(*x))
    group = graph.get_pruning_group(model.fc1, tp.prune_linear_out_channels, idxs=list(range(5)))
    with importance.scoring_gradients(model, kind, grads):
        scores = importance.make_importance(kind)(group)
    torch.testing.assert_close(scores, hand_scores(model, grads, kind), rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


def removed_channel(model: TwoLinear, pruned: TwoLinear) -> int:
    kept = [int(torch.nonzero((model.fc1.weight == row).all(1))[0]) for row in pruned.fc1.weight]
    (removed,) = set(range(model.fc1.out_features)) - set(kept)
    return removed


def test_each_importance_removes_its_own_least_important_channel():
    model, batches = TwoLinear(seed=23), toy_batches((3, 1), seed=123)  # a case whose three rankings differ
    grads = {kind: importance.calibration_gradients(model, batches, kind) for kind in ("taylor", "hessian")}
    l2 = (model.fc1.weight.detach().square().sum(1) + model.fc2.weight.detach().square().sum(0)).sqrt()
    expected = {"l2": int(l2.argmin()), **{k: int(hand_scores(model, g, k).argmin()) for k, g in grads.items()}}
    assert len(set(expected.values())) == 3, expected  # this case tells the three apart
    inputs = batches[0].inputs()
    for kind, channel in expected.items():
        pruned = structured.prune_channels(copy.deepcopy(model), inputs, 0.2, importance=kind,
                                           gradients=grads.get(kind))
        assert pruned.fc1.out_features == 4 and removed_channel(model, pruned) == channel, kind
        assert all(p.grad is None for p in pruned.parameters())


def test_gradient_importances_refuse_to_run_without_gradients():
    model, batches = TwoLinear(), toy_batches((2,))
    with pytest.raises(TsPruneError, match="needs calibration gradients"):
        structured.prune_channels(model, batches[0].inputs(), 0.2, importance="taylor")
    with pytest.raises(TsPruneError, match="unknown importance"):
        structured.prune_to_density(model, batches[0].inputs(), 0.5, importance="l1")


# --------------------------------------------------------------------------------------------- every forecaster


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A small 3-channel hourly series, prepared with 24-step windows."""
    t = np.arange(300)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"date": pd.date_range("2022-01-01", periods=300, freq="h").astype(str),
                          "a": np.sin(t / 6.0) + 0.1 * rng.standard_normal(300), "b": np.cos(t / 9.0),
                          "OT": np.sin(t / 4.0) + 0.05 * rng.standard_normal(300)})
    csv = tmp_path_factory.mktemp("importance") / "data.csv"
    frame.to_csv(csv, index=False)
    return prepare_data(DataConfig(dataset=None, data_path=str(csv), **WINDOWS))


def forecaster(name: str, data, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    sizes = {**TINY, "seg_len": 6} if name == "Crossformer" else TINY
    config = default_config(name, **sizes, **WINDOWS, enc_in=data.enc_in, dec_in=data.enc_in, c_out=data.c_out,
                            n_time_features=data.n_time_features)
    return build_model(config).eval()


def forward(model: nn.Module, inputs: tuple) -> torch.Tensor:
    torch.manual_seed(0)  # Informer samples keys even in eval mode
    with torch.no_grad():
        return model.eval()(*inputs)


# Hessian shares taylor's plumbing (gradients by name into each trial copy); it runs end to end on Informer below.
@pytest.mark.parametrize("kind", ["taylor"])
@pytest.mark.parametrize("name", [name for name in model_names() if get_spec(name).channels])
def test_every_model_reaches_the_target_and_keeps_no_gradients(series, name, kind):
    model = forecaster(name, series)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = PruneConfig(method="depgraph", density=0.5, importance=kind, calibration_windows=8)
    pruned = structured.prune_dependency_graph(model, series, config, TrainConfig(seed=0), CPU)
    assert pruned.facts["importance"] == kind and pruned.facts["calibration_windows"] == 8
    assert pruned.facts["importance_seconds"] > 0
    density = count_params(pruned.model)["params"] / count_params(model)["params"]
    assert density <= 0.5 and density == pytest.approx(0.5, abs=0.06)
    batch = series.batch("test", torch.arange(2))
    out = forward(pruned.model, batch.inputs())
    assert out.shape == batch.y.shape and torch.isfinite(out).all()
    assert all(p.grad is None for p in pruned.model.parameters())
    assert all(p.grad is None for p in model.parameters())  # the dense model is left as it was
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_l2_records_no_calibration_and_short_splits_report_the_windows_used(series):
    model = forecaster("Transformer", series)
    l2 = structured.prune_dependency_graph(model, series, PruneConfig(method="depgraph"), TrainConfig(seed=0), CPU)
    assert l2.facts["importance"] == "l2" and "calibration_windows" not in l2.facts
    _, facts = importance.calibrate(model, series, "taylor", 10_000, 0, CPU)
    assert facts["calibration_windows"] == series.n_windows("train")


def test_two_runs_prune_the_same_weights(series):
    # Informer: its ProbSparse attention samples keys, so this also checks the seeded random stream
    model = forecaster("Informer", series)
    config = PruneConfig(method="depgraph", density=0.5, importance="hessian", calibration_windows=8)
    runs = []
    for caller_seed in (1, 2):  # whatever the caller's random state
        torch.manual_seed(caller_seed)
        runs.append(structured.prune_dependency_graph(model, series, config, TrainConfig(seed=0), CPU).model)
    a, b = runs[0].state_dict(), runs[1].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the gradients leave the caller's random stream as it was, and the sample matters: another training seed
    # draws other windows, so other gradients
    state = torch.random.get_rng_state()
    g0, _ = importance.calibrate(model, series, "hessian", 8, 0, CPU)
    assert torch.equal(torch.random.get_rng_state(), state)
    g0_again, _ = importance.calibrate(model, series, "hessian", 8, 0, CPU)
    g1, _ = importance.calibrate(model, series, "hessian", 8, 1, CPU)
    assert all(torch.equal(g0[k], g0_again[k]) for k in g0)
    key = "encoder.layers.0.attention.query.weight"
    assert not torch.equal(g0[key], g1[key])
