"""The demo: its accuracy spec (trained to early stopping, no step cap), the shipped checkpoints it starts from,
and its full-size speed part (here at a tiny size: the code path, not the numbers)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tsprune.demo import SHIPPED, SPEC, preface, seed_checkpoints
from tsprune.errors import TsPruneError
from tsprune.sweep import load_spec, plan_sweep
from tsprune.sweep.store import SweepStore, run_dir_complete

ROOT = Path(__file__).resolve().parents[1]
# Dense test MSE of the full default runs on ETTh1/96, seed 2021, default variants (Informer's tslib layout), as
# recorded in benchmarks/results/ETTh1_96.json; the demo's small models must stay within 25% of them.
FULL_RUNS = {run["model"]: run["mse"] for run in json.loads((ROOT / "benchmarks" / "results" / "ETTh1_96.json")
                                                            .read_text())["runs"]
             if not run.get("variant") and run.get("seed", 2021) == 2021}


def test_demo_spec_trains_small_models_to_early_stopping():
    spec = load_spec(SPEC)
    plan = plan_sweep(spec)
    assert sorted(run.labels.model for run in plan.dense) == sorted(FULL_RUNS)
    for run in plan.dense:
        model, train = run.config.model, run.config.train
        assert (model.d_model, model.d_ff) == (64, 256)
        assert train.max_steps is None, "no step cap may decide when training ends"
        assert (train.epochs, train.patience, train.lr, train.lr_schedule) == (10, 3, 1e-4, "halve")
        assert run.config.data.pred_len == 96 and run.config.data.dataset == "ETTh1"
    assert spec.prune.get("finetune_max_steps") is None
    tuned = [run for run in plan.prune if run.config.finetune_epochs]
    assert [(run.labels.method, round(run.config.density, 3), run.config.finetune_epochs) for run in tuned] == [
        ("magnitude", 0.328, 1)] * 5  # one full epoch, masks kept, for every model
    assert min(run.config.density for run in plan.prune if run.labels.method == "magnitude") == pytest.approx(0.8**10)


def test_shipped_checkpoints_are_the_planned_runs_and_meet_the_accuracy_bounds(tmp_path):
    plan = plan_sweep(load_spec(SPEC))
    store = SweepStore(tmp_path)
    store.prepare()
    assert seed_checkpoints(plan.dense, store) == 5
    for run in plan.dense:
        folder = store.run_dir(run.run_id)
        assert run_dir_complete(folder)
        assert (folder / "model.safetensors").stat().st_size < 5_000_000  # the largest, Crossformer, is 3.9 MB
        metrics = json.loads((folder / "metrics.json").read_text())
        bound = 1.25 * FULL_RUNS[run.labels.model]
        assert metrics["mse"] <= bound, f"{run.labels.model}: demo MSE {metrics['mse']:.3f} above {bound:.3f}"
        assert metrics["epochs_run"] >= 2  # early stopping or the epoch limit ended it, not a step cap
    assert seed_checkpoints(plan.dense, store) == 0  # already in place


def test_a_shipped_checkpoint_from_another_configuration_is_refused(tmp_path):
    plan = plan_sweep(load_spec(SPEC))
    source = tmp_path / "shipped"
    shutil.copytree(SHIPPED, source)
    config = json.loads((source / "Autoformer" / "config.json").read_text())
    config["model"]["d_ff"] = 128
    (source / "Autoformer" / "config.json").write_text(json.dumps(config))
    store = SweepStore(tmp_path / "sweep")
    store.prepare()
    with pytest.raises(TsPruneError, match="Autoformer checkpoint was trained with another configuration"):
        seed_checkpoints(plan.dense, store, source)
    shutil.rmtree(source / "Informer")
    with pytest.raises(TsPruneError, match="no shipped checkpoint for Informer"):
        seed_checkpoints([run for run in plan.dense if run.labels.model == "Informer"], store, source)


def test_preface_says_the_scale_and_where_the_full_study_is():
    text = preface(False, Path("benchmarks/results/study-etth1/report/report.md"))
    assert "d_model 64 / d_ff 256" in text and "full default size" in text
    assert "benchmarks/results/study-etth1/report/report.md" in text and "ships with the package" in text
    assert "study-etth1" in preface(True, None) and "trained now" in preface(True, None)


def test_speed_part_times_every_variant_against_dense_in_one_loop():
    from tsprune.speed import speed_comparison

    tiny = {"d_model": 16, "d_ff": 32, "n_heads": 2, "e_layers": 1, "d_layers": 1, "modes": 8, "n_routers": 2}
    frame = speed_comparison(["Transformer", "FEDformer"], batch_sizes=(1, 4), threads=1, repeats=2, hyper=tiny)
    assert len(frame) == 6
    assert set(zip(frame["method"], frame["engine"])) == {("magnitude", "dense"), ("magnitude", "sparse"),
                                                          ("depgraph", "dense")}
    for _, row in frame.iterrows():
        assert row["speedup"] == pytest.approx(row["latency_dense_ms"] / row["latency_ms"])
        assert row["speedup_b4"] == pytest.approx(row["speedup"])  # batch 4 is the largest here
        assert row["latency_dense_b1_ms"] > 0 and row["speedup_b1"] > 0
    depgraph = frame[frame["method"] == "depgraph"]
    assert (depgraph["flops_ratio"] < 0.6).all() and (depgraph["density_total"] <= 0.25).all()
    masked = frame[frame["method"] == "magnitude"]
    assert (masked["flops_ratio"] == 1.0).all() and (masked["flops_effective_ratio"] < 0.9).all()  # attention too
