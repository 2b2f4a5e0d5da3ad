"""Sweeps: spec validation, planning, running locally (in process and in a process pool) and on a real local Ray
runtime, surviving ``kill -9``, recording failures, and the results table (DuckDB)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import torch
import yaml
from conftest import DEVICE, write_small_csv
from typer.testing import CliRunner

from tsprune import api
from tsprune.cli import app
from tsprune.errors import TsPruneError
from tsprune.sweep import load_results, load_spec, parse_spec, plan_sweep, run_sweep

runner = CliRunner()
SIZE = {"d_model": 8, "d_ff": 16, "n_heads": 2, "e_layers": 1, "d_layers": 1}


@pytest.fixture(scope="module")
def csv(tmp_path_factory) -> Path:
    return write_small_csv(tmp_path_factory.mktemp("data"))


def tiny_spec(csv: Path, **overrides) -> dict:
    """1 dense run + magnitude 0.5, 0.25, 0.25 fine-tuned + depgraph 0.001 (out of reach: fails) = 5 runs."""
    spec = {"models": ["Transformer"], "datasets": [str(csv)], "pred_lens": [12],
            "data": {"seq_len": 24, "label_len": 12},
            "methods": {"magnitude": [0.5, 0.25], "depgraph": [0.001]}, "finetune_epochs": [0, 1],
            "finetune_densities": [0.25], "train": {"epochs": 1, "max_steps": 2}, "prune": {"finetune_max_steps": 1},
            "model_sizes": {"tiny": SIZE}, "measure": {"batch_sizes": [2], "repeats": 1}, "device": DEVICE}
    return {**spec, **overrides}


def write_spec(folder: Path, spec: dict) -> Path:
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def expected_ids(spec: dict) -> set[str]:
    plan = plan_sweep(parse_spec(spec))
    return {run.run_id for run in [*plan.dense, *plan.prune]}


@pytest.fixture(scope="module")
def local_sweep(csv, tmp_path_factory) -> Path:
    """The tiny sweep run in this process."""
    out = tmp_path_factory.mktemp("sweep")
    outcome = run_sweep(parse_spec(tiny_spec(csv)), out, threads=1, progress=False)
    assert (outcome.done, outcome.failed, outcome.skipped) == (4, 1, 0)
    return out


# --- spec and plan ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"modles": ["Transformer"]}, "unknown sweep spec key(s): modles"),
    ({"densities": [0.5, 1.5]}, "densities: density 1.5 is not in (0, 1]"),
    ({"densities": "0.8^a..3"}, "densities: cannot read densities"),
    ({"methods": {"magnitude": [0]}}, "methods: density 0.0 is not in (0, 1]"),
    ({"models": ["Tranformer"]}, "models: unknown model 'Tranformer'"),
    ({"methods": ["random"]}, "methods: unknown pruning method 'random'"),
    ({"seeds": [0, 0]}, "seeds: 0 is listed twice"),
    ({"pred_lens": [0]}, "pred_lens: each pred_len must be an integer >= 1"),
    ({"train_fractions": [1.5]}, "train_fractions: each train fraction must be a number in (0, 1]"),
    ({"train": {"epochs": 0}}, "train: epochs, batch_size and patience must each be at least 1"),
    ({"train": {"seed": 3}}, "train: seed cannot be set here"),
    ({"train": {"epoch": 3}}, "train: unknown TrainConfig key(s): epoch"),
    ({"model_sizes": {"big": {"d_modle": 8}}}, "model_sizes: size 'big': unknown model hyper-parameter(s) d_modle"),
    ({"model_sizes": {"odd": {"d_model": 10, "n_heads": 4}}}, "model_sizes: size 'odd' does not fit Transformer"),
    ({"measure": {"repeats": 0}}, "measure: each repeat count must be an integer >= 1"),
    ({"engines": ["fast"]}, "engines: unknown engine 'fast'"),
    ({"engines": ["sparse"], "methods": ["depgraph"], "finetune_epochs": [0]},
     "engines: the sparse engine runs models with zeros"),
    ({"datasets": ["missing.csv"]}, "datasets: data file"),
    ({"datasets": ["NoSuchData"]}, "datasets: unknown dataset 'NoSuchData'"),
    ({"finetune_densities": [0.9]}, "finetune_densities: none of them is among the methods' densities"),
    ({"prune_studies": "yes"}, "prune_studies: must be true or false"),
    ({"measure": {"timed": "no"}}, "measure: must be true or false"),
    ({"engines": ["dense", "sparse"], "measure": {"timed": False}}, "engines: a sparse-engine twin exists to be timed"),
])
def test_spec_errors_name_the_key(csv, change, message):
    with pytest.raises(TsPruneError) as error:
        parse_spec(tiny_spec(csv, **change))
    assert message in str(error.value)


def test_an_empty_methods_mapping_plans_the_dense_runs_only(csv):
    plan = plan_sweep(parse_spec(tiny_spec(csv, methods={}, finetune_epochs=[0], finetune_densities=None)))
    assert len(plan.dense) == 1 and not plan.prune


def test_the_small_models_preset_is_dense_runs_on_three_seeds_with_a_width_ladder():
    plan = plan_sweep(load_spec("small-etth1"))
    assert not plan.prune and {run.labels.seed for run in plan.dense} == {2021, 2022, 2023}
    sizes = {(run.labels.model, run.labels.size, run.config.model.d_model, run.config.model.d_ff)
             for run in plan.dense}
    assert sizes == {("DLinear", "default", 512, 2048), ("PatchTST", "default", 512, 2048),
                     ("iTransformer", "default", 256, 256),
                     *{("PatchTST", f"d{w}", w, 4 * w) for w in (16, 32, 64, 128)},
                     *{("iTransformer", f"d{w}", w, w) for w in (16, 32, 64, 128)}}
    assert len(plan.dense) == 3 * len(sizes)


def test_bad_spec_on_the_command_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("models: [Transformer]\ndensities: [0.5, 2]\n")
    result = runner.invoke(app, ["sweep", "plan", str(path)])
    assert result.exit_code == 2 and "densities: density 2" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["sweep", "plan", "no-such-preset"])
    assert result.exit_code == 2 and "neither a YAML file nor a preset" in result.output
    path.write_text("models: [Transformer\n")
    result = runner.invoke(app, ["sweep", "plan", str(path)])
    assert result.exit_code == 2 and "not valid YAML" in result.output


EXAMPLE = """
models: [Transformer, Autoformer, FEDformer]
datasets: [ETTh1]
pred_lens: [96]
methods: [magnitude]
densities: [0.5, 0.25, 0.107]
seeds: [0]
train: {epochs: 1, max_steps: 3}
model_sizes: {tiny: {d_model: 16, d_ff: 32}}
"""


def test_plan_counts_ids_and_presets(tmp_path):
    path = tmp_path / "example.yaml"
    path.write_text(EXAMPLE)
    plan = plan_sweep(load_spec(path))
    assert (len(plan.dense), len(plan.prune)) == (3, 9)
    assert all(run.parent_id in {d.run_id for d in plan.dense} for run in plan.prune)
    assert [r.run_id for r in plan_sweep(load_spec(path)).prune] == [r.run_id for r in plan.prune]  # stable
    assert len({run.run_id for run in [*plan.dense, *plan.prune]}) == 12
    result = runner.invoke(app, ["sweep", "plan", str(path)])
    assert result.exit_code == 0, result.output
    assert "3 dense trainings, 9 pruning runs" in result.output and "estimate" in result.output
    assert "Autoformer" in result.output and "magnitude" in result.output

    raw = yaml.safe_load(EXAMPLE)
    grid = {**raw, "methods": {"magnitude": None, "depgraph": [0.5]}, "seeds": [0, 1], "train_fractions": [0.5, 1.0],
            "finetune_epochs": [0, 2], "finetune_densities": [0.25],
            "model_sizes": {"tiny": {"d_model": 16}, "small": {"d_model": 32}}}
    plan = plan_sweep(parse_spec(grid))
    # 3 models x 2 seeds x 2 sizes x 2 fractions dense; prune only from (tiny, 1.0): 3 x 2 x (3 + 1 + 1 fine-tuned)
    assert (len(plan.dense), len(plan.prune)) == (24, 30)
    everywhere = plan_sweep(parse_spec({**grid, "prune_studies": True}))
    assert (len(everywhere.dense), len(everywhere.prune)) == (24, 120)
    assert len({run.run_id for run in everywhere.prune}) == 120

    mini, paper = plan_sweep(load_spec("paper-mini")), plan_sweep(load_spec("paper"))
    assert (len(mini.dense), len(mini.prune)) == (5, 5 * (11 + 3 + 1))  # magnitude, depgraph, fine-tuned at 0.328
    assert (len(paper.dense), len(paper.prune)) == (420, 420 * 21)
    assert {run.config.data.pred_len for run in paper.dense if run.labels.dataset == "national_illness"} == {24, 36,
                                                                                                          48, 60}


def test_study_etth1_preset_plans_the_study_grid():
    from collections import Counter

    spec = load_spec("study-etth1")
    assert spec.seeds == [2021] and spec.train == {} and spec.keep_pruned  # the default protocol, no step cap
    plan = plan_sweep(spec)
    dense = Counter((run.labels.model, run.labels.size, run.labels.train_fraction) for run in plan.dense)
    # five default-size dense runs, plus Autoformer at d_model 64/128/256 x 3 fractions and 512 at 0.25 and 0.5
    assert len(plan.dense) == 16 and sum(n for (m, _, _), n in dense.items() if m != "Autoformer") == 4
    assert {(size, fraction) for (model, size, fraction) in dense if model == "Autoformer"} == {
        (size, fraction) for size in ("default", "d64", "d128", "d256") for fraction in (0.25, 0.5, 1.0)}
    widths = {run.labels.size: (run.config.model.d_model, run.config.model.d_ff) for run in plan.dense
              if run.labels.model == "Autoformer"}
    assert widths == {"default": (512, 2048), "d64": (64, 256), "d128": (128, 512), "d256": (256, 1024)}
    main = [run for run in plan.prune if run.labels.size == "default" and run.labels.train_fraction == 1.0]
    per_model = Counter((run.labels.model, run.labels.method, run.labels.engine, run.labels.finetune_epochs)
                        for run in main)
    for model in ("Transformer", "Informer", "Autoformer", "FEDformer", "Crossformer"):
        assert per_model[(model, "magnitude", "dense", 0)] == 21  # 0.8^0 .. 0.8^20
        assert per_model[(model, "magnitude", "sparse", 0)] == 21  # sparse-engine twins
        assert per_model[(model, "magnitude", "dense", 1)] == per_model[(model, "magnitude", "sparse", 1)] == 2
        assert per_model[(model, "depgraph", "dense", 0)] == 10 and per_model[(model, "depgraph", "dense", 1)] == 2
    assert min(run.config.density for run in main) == pytest.approx(0.8**20)  # 1.2%
    tuned = {round(run.config.density, 3) for run in main if run.config.finetune_epochs}
    assert tuned == {0.328, 0.107}
    study = [run for run in plan.prune if run not in main]
    assert len(study) == 11 * 2 and {run.labels.method for run in study} == {"magnitude"}
    assert {round(run.config.density, 3) for run in study} == {0.328, 0.107}
    assert len(plan) == 16 + 5 * 58 + 22
    assert all(run.config.batch_sizes == (1, 32) and run.config.threads == 2 for run in plan.prune)
    result = runner.invoke(app, ["sweep", "plan", "study-etth1"])
    assert result.exit_code == 0, result.output
    assert "16 dense trainings, 312 pruning runs" in result.output


def test_studies_are_variants_of_the_main_grid_and_shared_runs_are_planned_once():
    raw = yaml.safe_load(EXAMPLE)
    main = plan_sweep(parse_spec(raw))
    both = plan_sweep(parse_spec({**raw, "studies": [{"models": ["Autoformer"], "train_fractions": [0.5, 1.0]}]}))
    # the study's fraction-1.0 Autoformer run and its prune runs are the main grid's: planned once
    assert len(both.dense) == len(main.dense) + 1 and len(both.prune) == len(main.prune)
    tuned = plan_sweep(parse_spec({**raw, "studies": [{"models": ["Autoformer"], "train_fractions": [0.5, 1.0],
                                                         "prune_studies": True}]}))
    assert len(tuned.prune) == len(main.prune) + 3  # now the fraction-0.5 run is pruned too
    assert [run.run_id for run in both.dense[:len(main.dense)]] == [run.run_id for run in main.dense]
    with pytest.raises(TsPruneError, match="studies: entry 1: train_fractions"):
        parse_spec({**raw, "studies": [{"train_fractions": [2.0]}]})
    with pytest.raises(TsPruneError, match="studies: give a list of mappings"):
        parse_spec({**raw, "studies": ["Autoformer"]})


def test_run_ids_ignore_config_fields_at_their_defaults():
    """A field added later with a default that keeps the old behaviour must not change earlier runs' ids."""
    import dataclasses

    from tsprune.sweep.plan import DenseRun, non_default

    plan = plan_sweep(parse_spec(yaml.safe_load(EXAMPLE)))
    run = plan.prune[1]
    assert "include_fourier" not in non_default(run.config) and non_default(run.config)["density"] == 0.25
    assert non_default(plan.dense[0].config)["train"]["max_steps"] == 3
    changed = dataclasses.replace(run, config=dataclasses.replace(run.config, include_fourier=True))
    assert changed.run_id != run.run_id
    dense = plan.dense[0]
    assert DenseRun(dense.labels, dense.config).run_id == dense.run_id


# --- running ------------------------------------------------------------------------------------------------------


def test_measuring_pass_retimes_kept_runs_and_changes_nothing_else(csv, tmp_path):
    import shutil

    spec = tiny_spec(csv, methods={"magnitude": [0.5, 0.25]}, finetune_epochs=[0], engines=["dense", "sparse"],
                     keep_pruned=True)
    outcome = run_sweep(parse_spec(spec), tmp_path, threads=1, progress=False)
    assert outcome.failed == 0 and outcome.done == 5
    before = {path.stem: json.loads(path.read_text()) for path in (tmp_path / "records").glob("*.json")}
    result = runner.invoke(app, ["sweep", "measure", "--dir", str(tmp_path), "--repeats", "2", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "4 run(s) timed, 0 already timed by a pass, 0 without weights" in result.output
    after = {path.stem: json.loads(path.read_text()) for path in (tmp_path / "records").glob("*.json")}
    from tsprune.sweep.remeasure import TIMING_FIELDS

    for run_id, record in after.items():
        old = before[run_id]
        untimed = {key: value for key, value in record["metrics"].items() if key not in (*TIMING_FIELDS,
                                                                                         "latency_pass")}
        assert untimed == {k: v for k, v in old["metrics"].items() if k not in TIMING_FIELDS}  # nothing else moved
        assert {k: v for k, v in record.items() if k != "metrics"} == {k: v for k, v in old.items() if k != "metrics"}
        if record["kind"] == "prune":
            timing = record["metrics"]["latency_pass"]
            assert timing["repeats"] == 2 and timing["batch_sizes"] == [2] and timing["threads"] == 1
            assert record["metrics"]["latency"]["2"]["repeats"] == 2
            assert record["metrics"]["speedup"] == pytest.approx(
                record["metrics"]["latency_dense_ms"] / record["metrics"]["latency_ms"])
            if record["labels"]["engine"] == "sparse":  # timed against its masked twin as well
                assert record["metrics"]["latency_masked"]["2"]["repeats"] == 2
    frame = load_results(tmp_path)
    assert set(frame.loc[frame["kind"] == "prune", "latency_measured"]) == {"pass"}
    # a second pass with the same settings has nothing to do; runs without weights keep their timings
    again = runner.invoke(app, ["sweep", "measure", "--dir", str(tmp_path), "--repeats", "2", "--threads", "1"])
    assert "0 run(s) timed, 4 already timed by a pass" in again.output
    # --recompile compiles the sparse twins again (kernels chosen anew), replaces their directories, times them
    sparse = [r for r in after.values() if r["kind"] == "prune" and r["labels"]["engine"] == "sparse"]
    recompiled = runner.invoke(app, ["sweep", "measure", "--dir", str(tmp_path), "--repeats", "2", "--threads", "1",
                                     "--recompile"])
    assert recompiled.exit_code == 0 and "2 run(s) timed, 2 already timed" in recompiled.output, recompiled.output
    for record in sparse:
        new = json.loads((tmp_path / "records" / f"{record['run_id']}.json").read_text())
        assert new["metrics"]["recompiled"] and new["metrics"]["candidate_layers"] == record["metrics"][
            "candidate_layers"]
        reloaded = api.load(tmp_path / "runs" / record["run_id"])
        assert reloaded.sparse_plan and reloaded.metrics["recompiled"] == new["metrics"]["recompiled"]
        assert not list((tmp_path / "runs").glob(".*"))  # no staging folder left
    checked = runner.invoke(app, ["sweep", "check", str(tmp_path)])  # the replaced directories' hashes were updated
    assert checked.exit_code == 0 and "5 kept run directories match" in checked.output, checked.output
    pruned = next(r for r in after.values() if r["kind"] == "prune" and r["labels"]["engine"] == "dense")
    shutil.rmtree(tmp_path / "runs" / pruned["run_id"])
    third = runner.invoke(app, ["sweep", "measure", "--dir", str(tmp_path), "--repeats", "3", "--threads", "1"])
    assert third.exit_code == 0 and "without weights here" in third.output
    assert "2 run(s) timed" in third.output  # the other magnitude run and its twin; this one and its twin cannot
    # records without weights (a new machine): --rebuild runs again exactly the runs whose weights are gone and that
    # a measuring pass has still to time, and their dense run
    dense_id = pruned["parent_id"]
    shutil.rmtree(tmp_path / "runs" / dense_id)
    assert run_sweep(parse_spec(spec), tmp_path, threads=1, progress=False).done == 0  # a plain resume: all recorded
    nothing = run_sweep(parse_spec(spec), tmp_path, threads=1, progress=False, rebuild=True)
    assert (nothing.done, nothing.skipped) == (0, 5)  # every pruned run was timed by a pass: no weights needed
    assert not (tmp_path / "runs" / dense_id).exists()
    untimed = tmp_path / "records" / f"{pruned['run_id']}.json"  # as if the pass had stopped before this run
    record = json.loads(untimed.read_text())
    del record["metrics"]["latency_pass"]
    untimed.write_text(json.dumps(record))
    rebuilt = run_sweep(parse_spec(spec), tmp_path, threads=1, progress=False, rebuild=True)
    assert (rebuilt.done, rebuilt.failed, rebuilt.skipped) == (2, 0, 3)
    for run_id in (dense_id, pruned["run_id"]):
        record = json.loads((tmp_path / "records" / f"{run_id}.json").read_text())
        assert record["attempt"] == 2 and (tmp_path / "runs" / run_id / "model.safetensors").is_file()
        facts = record["metrics"]["rebuilt"]
        assert facts["reproduced"] and facts["mse_before"] == before[run_id]["metrics"]["mse"]
        assert record["metrics"]["mse"] == pytest.approx(facts["mse_before"], rel=1e-6)  # deterministic
    bad = runner.invoke(app, ["sweep", "measure", "--dir", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "not a sweep directory" in bad.output and "Traceback" not in bad.output


def test_a_pass_without_pruned_weights_times_their_pruning_made_again(csv, tmp_path):
    """A new machine with records only: --rebuild-dense trains the dense run again, nothing else, and
    --reprune times every prune run on its pruning made again, which is the recorded mask (checked)."""
    import shutil

    from tsprune.config import PruneConfig, from_dict
    from tsprune.prune.pipeline import prune_again

    spec = tiny_spec(csv, methods={"magnitude": [0.5, 0.25], "depgraph": [0.5]}, engines=["dense", "sparse"],
                     keep_pruned=True)
    first = run_sweep(parse_spec(spec), tmp_path, threads=1, progress=False, defer_timing=True)
    assert first.failed == 0 and first.done == len(expected_ids(spec))
    records = {path.stem: json.loads(path.read_text()) for path in (tmp_path / "records").glob("*.json")}
    prune = {run_id: r for run_id, r in records.items() if r["kind"] == "prune"}
    dense_id = next(r["run_id"] for r in records.values() if r["kind"] == "dense")
    dense = api.load(tmp_path / "runs" / dense_id)
    for run_id, record in prune.items():  # made again: the kept model itself, or (fine-tuned) its mask
        if record["labels"]["engine"] == "sparse":
            continue
        raw = {**record["config"]["prune"], "batch_sizes": tuple(record["config"]["prune"]["batch_sizes"])}
        again, cost = prune_again(dense, from_dict(PruneConfig, raw))
        kept = api.load(tmp_path / "runs" / run_id).model.state_dict()
        assert again.state_dict().keys() == kept.keys() and cost["nonzero_params"] == record["metrics"][
            "nonzero_params"]
        for name, tensor in again.state_dict().items():
            if record["labels"]["finetune_epochs"]:
                assert torch.equal(tensor == 0, kept[name] == 0), name
            else:
                assert torch.equal(tensor, kept[name]), name
    shutil.rmtree(tmp_path / "runs")  # records only
    plain = runner.invoke(app, ["sweep", "measure", "--dir", str(tmp_path), "--repeats", "1", "--threads", "1"])
    assert plain.exit_code == 0 and f"0 run(s) timed, 0 already timed by a pass, {len(prune)} without" in plain.output
    both = runner.invoke(app, ["sweep", "run", str(write_spec(tmp_path, spec)), "--dir", str(tmp_path), "--rebuild",
                               "--rebuild-dense"])
    assert both.exit_code == 2 and "exclude each other" in both.output and "Traceback" not in both.output
    rebuilt = run_sweep(parse_spec(spec), tmp_path, threads=1, progress=False, rebuild="dense")
    assert (rebuilt.done, rebuilt.failed) == (1, 0)  # the dense run alone
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == [dense_id]
    # a record that its pruning made again does not match is not timed, and not touched
    tampered_id = next(run_id for run_id, r in prune.items() if r["labels"]["method"] == "magnitude"
                       and r["labels"]["engine"] == "dense" and not r["labels"]["finetune_epochs"])
    tampered = tmp_path / "records" / f"{tampered_id}.json"
    wrong = json.loads(tampered.read_text())
    wrong["metrics"]["nonzero_params"] += 1
    tampered.write_text(json.dumps(wrong))
    before = tampered.read_text()
    measured = runner.invoke(app, ["sweep", "measure", "--dir", str(tmp_path), "--repeats", "1", "--threads", "1",
                                   "--reprune"])
    # its sparse twin is compiled from that same pruning made again: not timed either
    assert measured.exit_code == 1 and "2 not timed" in measured.output and "Traceback" not in measured.output
    assert tampered.read_text() == before
    timed = len(prune) - 2
    assert f"{timed} run(s) timed ({timed} on their pruning made again)" in measured.output, measured.output
    frame = load_results(tmp_path).query("kind == 'prune'").set_index("run_id")
    untimed = {tampered_id, next(run_id for run_id, r in prune.items() if r["labels"]["engine"] == "sparse"
                                 and {**r["labels"], "engine": "dense"} == prune[tampered_id]["labels"])}
    for run_id, record in prune.items():
        if run_id in untimed:  # the tampered run and its sparse twin
            assert frame.loc[run_id, "latency_measured"] == "deferred"
            continue
        metrics = json.loads((tmp_path / "records" / f"{run_id}.json").read_text())["metrics"]
        timing = metrics["latency_pass"]
        assert frame.loc[run_id, "latency_measured"] == "pass-repruned" and metrics["speedup"] > 0
        assert timing["weights"] == "repruned"
        assert timing["finetuning_left_out"] == bool(record["labels"]["finetune_epochs"])
        assert {k: metrics[k] for k in ("mse", "nonzero_params", "flops")} == {
            k: record["metrics"][k] for k in ("mse", "nonzero_params", "flops")}  # accuracy is the record's
        if record["labels"]["engine"] == "sparse":  # compiled here, timed beside its masked model
            assert metrics["recompiled"] and "latency_masked" in metrics
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == [dense_id]  # no weights written


def test_a_spec_that_fixes_prune_threads_says_so_when_the_budget_differs(csv, tmp_path):
    from tsprune.sweep.spec import MeasureSpec

    fixed = MeasureSpec(threads=2)
    assert fixed.overrides_budget(None, 1, 2) is None and MeasureSpec().overrides_budget(1, 2, 2) is None
    note = fixed.overrides_budget(1, 2, 2)
    assert note is not None and "measure.threads (2)" in note and "2 workers run 4 threads on 2 cores" in note
    roomy = fixed.overrides_budget(None, 4, 16)  # budget 4, fixed at 2: said, but 8 threads on 16 cores is no crowd
    assert roomy is not None and "workers run" not in roomy
    spec = tiny_spec(csv, methods={"magnitude": [0.5]}, finetune_epochs=[0],
                     measure={"batch_sizes": [2], "repeats": 1, "threads": 2})
    result = runner.invoke(app, ["sweep", "run", str(write_spec(tmp_path, spec)), "--dir", str(tmp_path / "s"),
                                 "--threads", "1", "--no-progress"])
    assert result.exit_code == 0 and "sets every prune run's threads" in result.output, result.output
    record = next(json.loads(path.read_text()) for path in (tmp_path / "s" / "records").glob("*.json")
                  if json.loads(path.read_text())["kind"] == "prune")
    assert record["threads"] == 2  # what the note said


def test_the_measuring_pass_times_fine_tuned_runs_first_and_twins_together():
    from tsprune.sweep.remeasure import timing_order

    def record(name, density, finetune, engine):
        return {"run_id": name, "labels": {"finetune_epochs": finetune, "engine": engine},
                "config": {"engine": engine, "prune": {"method": "magnitude", "density": density,
                                                       "finetune_epochs": finetune, "engine": engine}}}

    todo = [(record("a", 0.5, 0, "sparse"), None), (record("b", 0.25, 1, "sparse"), None),
            (record("c", 0.5, 0, "dense"), None), (record("d", 0.25, 1, "dense"), None),
            (record("e", 0.25, 0, "dense"), None)]
    assert [item[0]["run_id"] for item in timing_order(todo)] == ["d", "b", "e", "c", "a"]


def test_deferred_timing_leaves_the_latencies_to_the_measuring_pass(csv, tmp_path):
    spec = tiny_spec(csv, methods={"magnitude": [0.5]}, finetune_epochs=[0], engines=["dense", "sparse"],
                     keep_pruned=True)
    result = runner.invoke(app, ["sweep", "run", str(write_spec(tmp_path, spec)), "--dir", str(tmp_path / "s"),
                                 "--threads", "1", "--no-progress", "--defer-timing"])
    assert result.exit_code == 0 and "3 run(s) done, 0 failed" in result.output, result.output
    from tsprune.sweep.remeasure import TIMING_FIELDS

    records = {path.stem: json.loads(path.read_text()) for path in (tmp_path / "s" / "records").glob("*.json")}
    pruned = [record for record in records.values() if record["kind"] == "prune"]
    for record in pruned:  # accuracy and FLOPs are there; no timing was taken, and no sparse compilation
        metrics = record["metrics"]
        assert metrics["latency_deferred"] and not set(TIMING_FIELDS) & set(metrics)
        assert metrics["mse"] > 0 and metrics["flops_effective_ratio"] < 1
        assert "candidate_layers" not in metrics
        assert metrics.get("compile_deferred", False) == (record["labels"]["engine"] == "sparse")
        assert api.load(tmp_path / "s" / "runs" / record["run_id"]).sparse_plan is None  # the masked model
    frame = load_results(tmp_path / "s")
    prune = frame[frame["kind"] == "prune"]
    assert set(prune["latency_measured"]) == {"deferred"} and prune["speedup"].isna().all()
    # the same sweep timed in the runs gives the same accuracy: only the timing was left out
    timed = run_sweep(parse_spec(spec), tmp_path / "t", threads=1, progress=False)
    assert timed.done == 3
    for path in (tmp_path / "t" / "records").glob("*.json"):
        assert json.loads(path.read_text())["metrics"]["mse"] == records[path.stem]["metrics"]["mse"]
    # the measuring pass gives the deferred runs their first timings
    measured = runner.invoke(app, ["sweep", "measure", "--dir", str(tmp_path / "s"), "--repeats", "2", "--threads",
                                   "1"])
    assert measured.exit_code == 0 and "2 run(s) timed" in measured.output, measured.output
    for record in pruned:  # and compiles the sparse run, into its directory
        metrics = json.loads((tmp_path / "s" / "records" / f"{record['run_id']}.json").read_text())["metrics"]
        assert "latency_deferred" not in metrics and metrics["speedup"] > 0 and metrics["latency_pass"]
        assert "compile_deferred" not in metrics and metrics["latency_pass"]["weights"] == "kept"
        sparse = record["labels"]["engine"] == "sparse"
        assert ("latency_masked" in metrics) == sparse == (metrics.get("candidate_layers", 0) > 0)
        reloaded = api.load(tmp_path / "s" / "runs" / record["run_id"])
        assert (reloaded.sparse_plan is not None) == sparse and "compile_deferred" not in reloaded.metrics
    assert set(load_results(tmp_path / "s").query("kind == 'prune'")["latency_measured"]) == {"pass"}
    # without kept weights nothing could time them later: refused, nothing written
    unkept = runner.invoke(app, ["sweep", "run", str(write_spec(tmp_path, {**spec, "keep_pruned": False})), "--dir",
                                 str(tmp_path / "u"), "--defer-timing"])
    assert unkept.exit_code == 2 and "error: --defer-timing needs a spec with keep_pruned: true" in unkept.output
    assert "Traceback" not in unkept.output and not (tmp_path / "u").exists()


def test_an_untimed_grid_counts_accuracy_and_flops_and_leaves_nothing_to_time(csv, tmp_path):
    """measure.timed false (seeds-etth1): no latency, nothing deferred to a pass, the same accuracy as timed runs."""
    spec = tiny_spec(csv, methods={"magnitude": [0.5]}, finetune_epochs=[0])
    untimed = {**spec, "measure": {**spec["measure"], "timed": False}}
    outcome = run_sweep(parse_spec(untimed), tmp_path / "u", threads=1, progress=False)
    assert (outcome.done, outcome.failed) == (2, 0)
    timed = run_sweep(parse_spec(spec), tmp_path / "t", threads=1, progress=False)
    assert timed.done == 2
    from tsprune.sweep.remeasure import TIMING_FIELDS

    frames = {name: load_results(tmp_path / name).set_index(["kind", "method"]) for name in ("u", "t")}
    row, twin = frames["u"].loc[("prune", "magnitude")], frames["t"].loc[("prune", "magnitude")]
    assert row["run_id"] != twin["run_id"]  # the configuration says it is untimed
    assert row["mse"] == twin["mse"] and row["flops_effective"] == twin["flops_effective"] > 0
    assert pd.isna(row["latency_ms"]) and pd.isna(row["latency_measured"]) and twin["latency_ms"] > 0
    (record,) = [json.loads(path.read_text()) for path in (tmp_path / "u" / "records").glob("*.json")
                 if json.loads(path.read_text())["kind"] == "prune"]
    assert not set(TIMING_FIELDS) & set(record["metrics"]) and "latency_deferred" not in record["metrics"]
    assert record["config"]["prune"]["timed"] is False


def check_rows(sweep: Path, ids: set[str]) -> pd.DataFrame:
    """Exactly one row per planned run; the dense row is its own baseline; depgraph 0.001 failed."""
    frame = load_results(sweep)
    assert sorted(frame["run_id"]) == sorted(ids)
    assert frame["run_id"].is_unique
    dense = frame[frame["kind"] == "dense"].iloc[0]
    assert dense["status"] == "done" and dense["method"] == "dense"
    assert (dense["target_density"], dense["density_total"], dense["flops_ratio"], dense["speedup"]) == (1, 1, 1, 1)
    assert dense["dense_mse"] == dense["mse"] and dense["flops"] > 0 and dense["latency_ms"] > 0
    prune = frame[frame["kind"] == "prune"]
    assert set(prune["parent_id"]) == {dense["run_id"]}
    failed = frame[frame["status"] == "failed"]
    assert list(failed["method"]) == ["depgraph"] and "out of reach" in failed["error"].iloc[0]
    done = prune[prune["status"] == "done"]
    assert len(done) == 3 and (done["dense_mse"] == dense["mse"]).all()
    assert done["density_prunable"].round(2).tolist() == [0.5, 0.25, 0.25]
    assert done["speedup"].gt(0).all() and done["config_json"].str.contains('"method"').all()
    assert frame["git_rev"].notna().all() and frame["tsprune_version"].notna().all()
    stored = duckdb.sql(f"select count(*) from '{sweep / 'results.parquet'}'").fetchall()[0][0]
    assert stored == len(frame)
    return frame


def test_local_sweep_records_every_run_and_skips_them_next_time(local_sweep, csv):
    frame = check_rows(local_sweep, expected_ids(tiny_spec(csv)))
    assert (frame["threads"] == 1).all()
    dense_id = frame.loc[frame["kind"] == "dense", "run_id"].iloc[0]
    assert api.load(local_sweep / "runs" / dense_id).metrics["mse"] == pytest.approx(frame["mse"].iloc[0])
    assert sorted(p.name for p in (local_sweep / "runs").iterdir()) == [dense_id]  # pruned runs are not kept
    again = run_sweep(parse_spec(tiny_spec(csv)), local_sweep, threads=1, progress=False)
    assert (again.done, again.failed, again.skipped) == (0, 0, 5)


def test_a_sweep_reuses_another_sweeps_dense_runs_and_labels_method_variants(local_sweep, csv, tmp_path):
    """A second sweep of other methods on the same dense configuration trains nothing (``reuse_dense``), and a grid
    that sets a method option away from its default is told apart in the table (``variant``)."""
    spec = tiny_spec(csv, methods={"wanda": [0.5]}, finetune_epochs=[0], finetune_densities=None,
                     studies=[{"methods": {"depgraph": [0.5]}, "prune": {"importance": "taylor",
                                                                        "calibration_windows": 4}}])
    out = tmp_path / "second"
    before = {path.name: path.stat().st_mtime_ns for path in (local_sweep / "runs").rglob("*") if path.is_file()}
    outcome = run_sweep(parse_spec(spec), out, threads=1, progress=False, reuse_dense=local_sweep)
    assert (outcome.done, outcome.failed, outcome.skipped) == (2, 0, 1)  # the dense run came recorded
    frame = load_results(out)
    dense = frame[frame["kind"] == "dense"].iloc[0]
    original = load_results(local_sweep)
    assert dense["mse"] == original.loc[original["kind"] == "dense", "mse"].iloc[0]
    rows = frame[frame["kind"] == "prune"].set_index("method")
    assert rows.loc["wanda", "variant"] in ("", None) and rows.loc["depgraph", "variant"] == (
        "calibration_windows=4,importance=taylor")
    assert rows.loc["wanda", "emptied_layers"] >= 0 and rows.loc["wanda", "method_seconds"] > 0
    # the source sweep is only read
    assert before == {path.name: path.stat().st_mtime_ns for path in (local_sweep / "runs").rglob("*")
                      if path.is_file()}
    with pytest.raises(TsPruneError, match="not a sweep directory"):
        run_sweep(parse_spec(spec), tmp_path / "third", threads=1, progress=False, reuse_dense=tmp_path / "none")


def test_one_sweep_process_per_directory(local_sweep, csv):
    from tsprune.sweep.store import SweepStore

    with SweepStore(local_sweep).lock(), pytest.raises(TsPruneError, match="another sweep is running"):
        run_sweep(parse_spec(tiny_spec(csv)), local_sweep, threads=1, progress=False)


def test_failures_are_recorded_and_retried(local_sweep, csv, tmp_path, monkeypatch):
    before = {r["run_id"]: r for r in map(json.loads, map(Path.read_text, (local_sweep / "records").glob("*.json")))}
    retried = run_sweep(parse_spec(tiny_spec(csv)), local_sweep, threads=1, retry_failed=True, progress=False)
    assert (retried.done, retried.failed, retried.skipped) == (0, 1, 4)
    frame = load_results(local_sweep)
    failed = frame[frame["status"] == "failed"].iloc[0]
    assert failed["attempt"] == 2 and frame["attempt"].sum() == 6
    untouched = frame[frame["status"] == "done"]
    assert all(before[row.run_id]["finished_at"] == row.finished_at for row in untouched.itertuples())

    # A transient error (say, out of memory) fails one run; the sweep goes on and --retry-failed completes it.
    spec = tiny_spec(csv, methods={"magnitude": [0.75]}, finetune_epochs=[0])
    from tsprune.prune import pipeline

    real = pipeline.prune_run
    monkeypatch.setattr(pipeline, "prune_run", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("out of memory")))
    first = run_sweep(parse_spec(spec), local_sweep, threads=1, progress=False)
    assert (first.done, first.failed, first.skipped) == (0, 1, 1)  # the dense run is reused, not retrained
    record = next(r for r in load_results(local_sweep).itertuples() if r.target_density == 0.75)
    assert record.error == "RuntimeError: out of memory"
    monkeypatch.setattr(pipeline, "prune_run", real)
    second = run_sweep(parse_spec(spec), local_sweep, threads=1, retry_failed=True, progress=False)
    assert (second.done, second.failed) == (1, 0)

    # A dense run that diverges fails, and so does every prune run that needed it, without running.
    diverging = tiny_spec(csv, train={"epochs": 1, "max_steps": 3, "lr": 1e30})
    outcome = run_sweep(parse_spec(diverging), tmp_path / "diverged", threads=1, progress=False)
    assert (outcome.done, outcome.failed) == (0, 5)
    frame = load_results(tmp_path / "diverged")
    assert frame.loc[frame["kind"] == "dense", "error"].iloc[0].startswith("TrainingDiverged")
    assert frame.loc[frame["kind"] == "prune", "error"].str.startswith("dense run failed").all()


def test_sparse_engine_axis(csv, tmp_path, monkeypatch):
    """engines: [dense, sparse] adds a compiled twin of every unstructured run (none for depgraph), planned beside
    it and pruned once with it: same MSE and FLOPs, its own latency timed against dense and masked in one
    process; the kept run reloads compiled."""
    from tsprune.prune import pipeline
    from tsprune.report import build_report

    spec = tiny_spec(csv, methods={"magnitude": [0.25], "depgraph": [0.5]}, finetune_epochs=[0],
                     engines=["dense", "sparse"], keep_pruned=True)
    plan = plan_sweep(parse_spec(spec))
    assert [(run.labels.method, run.engine) for run in plan.prune] == [
        ("magnitude", "dense"), ("magnitude", "sparse"), ("depgraph", "dense")]
    prunings = []
    real_prune_model = pipeline.prune_model
    monkeypatch.setattr(pipeline, "prune_model",
                        lambda *a, **k: prunings.append(a[1].method) or real_prune_model(*a, **k))
    sweep = tmp_path / "sweep"
    outcome = run_sweep(parse_spec(spec), sweep, threads=1, progress=False)
    assert (outcome.done, outcome.failed) == (4, 0)
    assert sorted(prunings) == ["depgraph", "magnitude"]  # the sparse twin reused its masked run's pruning
    frame = load_results(sweep)
    magnitude = frame[frame["method"] == "magnitude"].set_index("engine")
    sparse, dense = magnitude.loc["sparse"], magnitude.loc["dense"]
    assert sparse["mse"] == dense["mse"] and sparse["flops_effective"] == dense["flops_effective"]
    assert sparse["speedup"] > 0 and sparse["latency_ms"] != dense["latency_ms"]
    record = json.loads((sweep / "records" / f"{sparse['run_id']}.json").read_text())["metrics"]
    assert record["engine"] == "sparse" and record["candidate_layers"] > 0 and record["latency_masked_ms"] > 0
    assert record["speedup"] == pytest.approx(record["latency_dense_ms"] / record["latency_ms"])
    compiled = api.load(sweep / "runs" / sparse["run_id"])
    assert compiled.sparse_plan is not None and len(compiled.sparse_plan["layers"]) == record["candidate_layers"]
    assert api.evaluate(compiled, threads=1)["mse"] == pytest.approx(sparse["mse"], rel=1e-5)
    text = build_report(frame, tmp_path / "report").read_text()
    assert "| sparse |" in text  # the summary lists the sparse engine's row beside the dense one
    shown = runner.invoke(app, ["results", str(sweep)])
    assert shown.exit_code == 0 and "sparse" in shown.output, shown.output  # engine is a summary key when it varies
    planned = runner.invoke(app, ["sweep", "plan", str(write_spec(tmp_path, spec))])
    assert planned.exit_code == 0 and "sparse" in planned.output, planned.output


def test_a_worker_pool_gets_engine_twins_as_one_task(csv, tmp_path):
    import collections

    from tsprune.sweep.work import next_unit
    from tsprune.sweep.runner import pending_work
    from tsprune.sweep.store import SweepStore

    spec = parse_spec(tiny_spec(csv, engines=["dense", "sparse"], keep_pruned=True))
    plan = plan_sweep(spec)
    work, _ = pending_work(plan, SweepStore(tmp_path), {}, retry_failed=False, keep_pruned=True)
    queue = collections.deque(work.waiting[plan.dense[0].run_id])
    units = []
    while queue:
        units.append(next_unit(queue))
    magnitude = [unit for unit in units if unit[0].labels.method == "magnitude"]
    # magnitude 0.5, 0.25 and 0.25 fine-tuned, each on both engines: three tasks of two twins, fine-tuned one first
    assert sorted(len(unit) for unit in magnitude) == [2, 2, 2] and magnitude[0][0].labels.finetune_epochs == 1
    for unit in magnitude:
        assert unit[0].twin_of(unit[1]) and {run.engine for run in unit} == {"dense", "sparse"}
    assert [len(unit) for unit in units if unit[0].labels.method == "depgraph"] == [1]  # structured: no twin
    assert not magnitude[0][0].twin_of(magnitude[1][0])  # another density or fine-tuning is another pruning


def test_a_later_task_never_takes_an_earlier_tasks_pruning(local_sweep, csv):
    """A worker process outlives its tasks (on Ray, even the sweep): the same twins sent again later (another sweep
    of the same runs on the same cluster) prune anew; only the second twin of a unit takes the first's pruning.
    Before, the worker's pruning cache matched across tasks, and tests/test_ray_cluster.py failed now and then."""
    from tsprune.sweep.tasks import execute_prunes

    plan = plan_sweep(parse_spec(tiny_spec(csv, methods={"magnitude": [0.5]}, finetune_epochs=[0],
                                           engines=["dense", "sparse"])))
    dense_dir = local_sweep / "runs" / plan.dense[0].run_id  # the same dense configuration as the tiny sweep's
    assert dense_dir.is_dir() and len(plan.prune) == 2
    for _ in range(2):
        first, second = execute_prunes(plan.prune, dense_dir, 1, [None, None])
        assert first["status"] == second["status"] == "done", (first["error"], second["error"])
        assert not first["metrics"]["pruning_reused"] and second["metrics"]["pruning_reused"]


def test_process_pool_sweep(csv, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "my.csv").write_bytes(csv.read_bytes())
    path = write_spec(tmp_path, tiny_spec(csv, datasets=["data/my.csv"], keep_pruned=True))  # relative to the spec
    result = runner.invoke(app, ["sweep", "run", str(path), "--dir", str(tmp_path / "sweep"), "--workers", "2",
                                 "--no-progress"])
    assert result.exit_code == 3 and "1 failed (deterministic)" in result.output, result.output  # depgraph 0.001
    plan = plan_sweep(load_spec(path))
    frame = check_rows(tmp_path / "sweep", {run.run_id for run in [*plan.dense, *plan.prune]})
    assert set(frame["dataset"]) == {"my"}
    kept = frame.loc[(frame["kind"] == "prune") & (frame["status"] == "done"), "run_id"]
    for run_id in kept:  # keep_pruned: every finished pruned run is a run directory that reloads
        assert api.load(tmp_path / "sweep" / "runs" / run_id).metrics["method"] == "magnitude"


def test_ray_sweep_on_a_real_local_runtime(csv, tmp_path):
    ray = pytest.importorskip("ray")
    spec = tiny_spec(csv, keep_pruned=True)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never a running cluster
    try:
        outcome = run_sweep(parse_spec(spec), tmp_path / "sweep", executor="ray", workers=2, progress=False)
    finally:
        ray.shutdown()
    assert (outcome.done, outcome.failed) == (4, 1)
    frame = check_rows(tmp_path / "sweep", expected_ids(spec))
    assert (frame["threads"] == 1).all()  # 2 CPUs / 2 workers
    for run_id in frame.loc[frame["status"] == "done", "run_id"]:  # shipped back as bytes, written by the driver
        assert api.load(tmp_path / "sweep" / "runs" / run_id).metrics["mse"] > 0


def test_kill_9_mid_sweep_then_resume(csv, tmp_path):
    spec = tiny_spec(csv, methods={"magnitude": "0.8^0..7", "depgraph": [0.001]}, finetune_densities=[0.262])
    path, sweep = write_spec(tmp_path, spec), tmp_path / "sweep"
    command = [sys.executable, "-m", "tsprune.cli", "sweep", "run", str(path), "--dir", str(sweep), "--threads", "1",
               "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((sweep / "records").glob("*.json")) and time.monotonic() < deadline:
        assert process.poll() is None, "the sweep stopped before its first record"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    recorded = len(list((sweep / "records").glob("*.json")))
    total = len(expected_ids(spec))
    assert 1 <= recorded < total
    finished = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 3, finished.stderr  # complete but for depgraph 0.001, out of reach by design
    assert f"{recorded} already recorded" in finished.stdout
    frame = load_results(sweep)
    assert sorted(frame["run_id"]) == sorted(expected_ids(spec)) and frame["run_id"].is_unique
    assert (frame["attempt"] == 1).all()  # nothing duplicated or redone twice
    assert frame.loc[frame["status"] == "failed", "method"].tolist() == ["depgraph"]
    assert not [p for p in sweep.rglob(".*") if p.name != ".lock"]  # no temp files left


# --- results ------------------------------------------------------------------------------------------------------


def test_results_command(local_sweep, tmp_path):
    result = runner.invoke(app, ["results", str(local_sweep)])
    assert result.exit_code == 0, result.output
    assert "Transformer" in result.output and "magnitude" in result.output and "depgraph" in result.output
    result = runner.invoke(app, ["results", str(local_sweep), "--sql",
                                 "select method, count(*) as n from runs where status = 'failed' group by method"])
    assert result.exit_code == 0, result.output
    assert "depgraph" in result.output and "1" in result.output
    for name in ("out.parquet", "out.csv"):
        result = runner.invoke(app, ["results", str(local_sweep), "--export", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        stored = duckdb.sql(f"select count(*) from '{tmp_path / name}'").fetchall()[0][0]
        assert stored == len(load_results(local_sweep))
    for args, message in ([["--sql", "select nope from runs"], "query failed"],
                          [["--export", str(tmp_path / "out.txt")], "use a .parquet or .csv"]):
        result = runner.invoke(app, ["results", str(local_sweep), *args])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["results", str(tmp_path)])
    assert result.exit_code == 2 and "not a sweep directory" in result.output


def test_report_command_on_a_real_tiny_sweep(local_sweep, tmp_path):
    import matplotlib.image
    import xml.etree.ElementTree as ElementTree

    from tsprune.report import figure_names

    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(local_sweep), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    for name in figure_names():
        image = matplotlib.image.imread(out / "figures" / f"{name}.png")
        assert image.ndim == 3 and min(image.shape[:2]) > 100
        ElementTree.parse(out / "figures" / f"{name}.svg")
    text = (out / "report.md").read_text()
    assert "depgraph" in text and "out of reach" in text  # the failed run is listed with its reason
    result = runner.invoke(app, ["report", str(tmp_path / "nothing"), "--out", str(out)])
    assert result.exit_code == 2 and "not a sweep directory" in result.output


def test_ray_executor_without_ray_says_how_to_install_it(monkeypatch):
    from tsprune.sweep.executors import make_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(TsPruneError, match=r"needs Ray, an install extra: pip install 'tsprune\[ray\]'"):
        make_executor("ray")


def test_the_plan_and_the_measuring_pass_agree_on_which_runs_are_engine_twins():
    """The plan sends twins to one worker and the measuring pass compiles a sparse run from its twin's masked model:
    both must pair the same runs (one definition, ``config.pruning_settings``), also when a twin is timed with other
    repeats."""
    from tsprune.sweep.presets import PRESETS
    from tsprune.sweep.remeasure import _masked_twin

    runs = [run for run in plan_sweep(parse_spec(PRESETS["study-etth1"])).runs() if run.kind == "prune"]
    records = {run.run_id: {"run_id": run.run_id, "parent_id": run.parent_id, "status": "done",
                            "config": run.identity()} for run in runs}
    sparse = [run for run in runs if run.engine == "sparse"]
    assert sparse
    for run in sparse:
        twins = [other.run_id for other in runs if other.engine == "dense" and run.twin_of(other)]
        assert twins == [_masked_twin(records[run.run_id], records)], run.config
    first = records[sparse[0].run_id]
    other_repeats = {**first, "config": {**first["config"], "prune": {**first["config"]["prune"],
                                                                       "latency_repeats": 3}}}
    assert _masked_twin(other_repeats, records) == _masked_twin(first, records) is not None
