"""The training loop: it learns, it is deterministic, its schedules are the study's."""

from __future__ import annotations

import pytest
import torch

from conftest import DEVICE, TINY
from tsprune import api
from tsprune import configure
from tsprune import checkpoint
from tsprune.checkpoint import COUNTERS
from tsprune.config import DATA_BOUND_FIELDS, TrainConfig, read_json, write_json
from tsprune.errors import TsPruneError
from tsprune.data.dataset import prepare_data
from tsprune.models.registry import build_model, model_names
from tsprune.train import evaluate, fit, learning_rate
from tsprune.runtime import seed_everything


def quick_config(name: str, **train):
    return api.make_config(name, data={"dataset": "ETTh1", "pred_len": 24, "seq_len": 48, "label_len": 24},
                           train={"epochs": 1, "max_steps": 25, "lr": 1e-3, "seed": 0, "device": DEVICE, **train},
                           **TINY)


def test_binding_fills_exactly_the_data_bound_fields():
    config = api.make_config("Crossformer", data={"dataset": "ETTh1", "features": "MS", "seq_len": 48,
                                                  "label_len": 24, "pred_len": 24}, **TINY)
    data = prepare_data(config.data)
    bound = configure.bind_to_data(config, data).model
    assert set(configure.data_bound_values(config, data)) == set(DATA_BOUND_FIELDS)
    changed = {f for f in vars(config.model) if getattr(bound, f) != getattr(config.model, f)}
    assert changed <= set(DATA_BOUND_FIELDS)
    assert (bound.enc_in, bound.dec_in, bound.c_out, bound.seq_len, bound.pred_len) == (7, 7, 1, 48, 24)
    assert bound.n_time_features == data.n_time_features == 4  # hourly calendar: hour, weekday, day, day of year


@pytest.mark.parametrize("name", model_names())
def test_short_training_lowers_validation_loss(name):
    config = quick_config(name)
    data = prepare_data(config.data)
    config = configure.bind_to_data(config, data)
    seed_everything(0)
    model = build_model(config.model).to(DEVICE)
    before = evaluate(model, data, "val", 256, DEVICE)["mse"]
    fit(model, data, config.train, torch.device(DEVICE), progress=False)
    after = evaluate(model, data, "val", 256, DEVICE)["mse"]
    assert after < before, f"{name}: val MSE {before:.4f} -> {after:.4f}"


def test_same_seed_same_metrics_different_seed_differs():
    first = api.train(quick_config("Informer", max_steps=5), progress=False).metrics
    second = api.train(quick_config("Informer", max_steps=5), progress=False).metrics
    other = api.train(quick_config("Informer", max_steps=5, seed=1), progress=False).metrics
    assert first["mse"] == second["mse"] and first["mae"] == second["mae"]
    assert first["mse"] != other["mse"]


def test_metrics_cover_all_test_windows():
    run = api.train(quick_config("Transformer", max_steps=2), progress=False)
    data = prepare_data(run.config.data)
    assert run.metrics["test_windows"] == data.n_windows("test")
    # an odd batch size must give the same metrics: no window is dropped or counted twice
    odd = evaluate(run.model, data, "test", 7)
    assert odd["mse"] == pytest.approx(run.metrics["mse"], rel=1e-9)
    assert odd["mae_raw"] == pytest.approx(run.metrics["mae_raw"], rel=1e-9)


def test_learning_rate_schedules():
    halve = TrainConfig(lr=1e-4, lr_schedule="halve", epochs=10)
    assert [learning_rate(halve, e) for e in range(3)] == [1e-4, 5e-5, 2.5e-5]
    assert learning_rate(TrainConfig(lr=1e-4, lr_schedule="constant"), 5) == 1e-4
    cosine = TrainConfig(lr=1e-4, lr_schedule="cosine", epochs=4)
    assert learning_rate(cosine, 0) == 1e-4 and learning_rate(cosine, 2) == pytest.approx(5e-5)


def test_study_text_preset_sets_lr():
    assert api.make_config("Transformer", preset="study-text").train.lr == 5e-4
    assert api.make_config("Transformer").train.lr == 1e-4
    assert api.make_config("Transformer", preset="study-text", train={"lr": 1e-3}).train.lr == 1e-3


def test_early_stopping_restores_best_weights(monkeypatch):
    config = quick_config("Transformer", epochs=6, max_steps=3, patience=2, lr=5e-2)
    data = prepare_data(config.data)
    config = configure.bind_to_data(config, data)
    seed_everything(0)
    model = build_model(config.model)
    result = fit(model, data, config.train, torch.device("cpu"), progress=False)
    vals = [h["val_mse"] for h in result.history]
    assert result.best_epoch == 1 + vals.index(min(vals))
    assert evaluate(model, data, "val", 32)["mse"] == pytest.approx(min(vals), rel=1e-9)
    if result.stopped_early:
        assert result.epochs_run - result.best_epoch == 2


def crash_after_first_epoch(config, out):
    """Train only epoch 1 of ``config`` into ``out``'s training state, as a run killed after that epoch would."""
    first_only = api.make_config(config.model.name, data=vars(config.data),
                                 train={**vars(config.train), "epochs": 1}, **TINY)
    data = prepare_data(first_only.data)
    bound = configure.bind_to_data(first_only, data)
    seed_everything(bound.train.seed)
    model = build_model(bound.model)
    state_dir = checkpoint.training_state_dir(out, configure.bind_to_data(config, data))
    fit(model, data, bound.train, torch.device("cpu"), progress=False, state_dir=state_dir)
    assert (state_dir / "training_state.safetensors").is_file()
    return state_dir


def test_interrupted_training_resumes_to_the_same_result(tmp_path):
    config = quick_config("Informer", epochs=2, max_steps=3)
    straight = api.train(config, progress=False)
    out = tmp_path / "run"
    state_dir = crash_after_first_epoch(config, out)

    lines: list[str] = []
    resumed = api.train(config, out=out, progress=False, log=lines.append)
    # without a bar, the log says it resumed and reports only the epoch it ran
    assert lines[0].startswith(f"resuming from {state_dir} after epoch 1")
    assert len(lines) == 2 and lines[1].startswith("epoch 2: train loss")
    assert resumed.metrics["epochs_run"] == 2
    assert [h["val_mse"] for h in resumed.metrics["history"]] == [h["val_mse"] for h in straight.metrics["history"]]
    assert resumed.metrics["mse"] == straight.metrics["mse"]
    assert not state_dir.exists()


def test_finished_training_state_is_only_reloaded(tmp_path):
    # a run that stopped early after epoch 1 and was killed before its test metrics were written
    config = quick_config("Transformer", epochs=3, max_steps=3)
    out = tmp_path / "run"
    state_dir = crash_after_first_epoch(config, out)
    counters = read_json(state_dir / COUNTERS)
    write_json(state_dir / COUNTERS, {**counters, "stopped_early": True})

    lines: list[str] = []
    reloaded = api.train(config, out=out, progress=False, log=lines.append)
    assert lines == [f"training in {state_dir} already finished after epoch 1 (best val mse "
                     f"{counters['best_val']:.4f} at epoch 1)"]
    assert reloaded.metrics["epochs_run"] == 1 and len(reloaded.metrics["history"]) == 1
    one_epoch = api.train(quick_config("Transformer", epochs=1, max_steps=3), progress=False)
    assert reloaded.metrics["mse"] == one_epoch.metrics["mse"]


def test_stale_training_state_of_another_config_is_refused(tmp_path):
    config = quick_config("Transformer")
    data = prepare_data(config.data)
    checkpoint.training_state_dir(tmp_path, configure.bind_to_data(config, data))
    other = configure.bind_to_data(quick_config("Transformer", lr=0.5), data)
    with pytest.raises(TsPruneError, match="another configuration"):
        checkpoint.training_state_dir(tmp_path, other)
    # where and how fast it runs is not part of the experiment: resuming with other threads is fine
    elsewhere = configure.bind_to_data(quick_config("Transformer", threads=1), data)
    assert checkpoint.training_state_dir(tmp_path, elsewhere) == tmp_path / "training_state"
