"""The benchmark scripts run end to end (they measure only; these check they work and report what they say)."""

from __future__ import annotations

import importlib.util
import json
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_speed_reports_both_layouts_and_the_gemm_floor(tmp_path):
    out = tmp_path / "speed.json"
    result = CliRunner().invoke(load("train_speed").cli, [
        "--models", "Transformer", "--d-model", "32", "--steps", "1", "--warmup", "0", "--batch-size", "2",
        "--threads", "1", "--device", "cpu", "--layouts", "ours,reference", "--gemm", "--json", str(out)])
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    assert [r["layout"] for r in records] == ["ours", "reference"]
    for record in records:
        assert 0 < record["gemm_s_per_step"] < record["train_step_s"] * 5  # profiled: overhead, but same order
        assert record["reference_over_gemm"] > 0 and record["inference_ms"] > 0
    assert records[1]["train_speedup_vs_reference"] == 1.0


def test_reproduce_compares_finished_runs_with_the_published_values(tmp_path):
    import torch

    from conftest import TINY
    from tsprune import api, checkpoint, configure
    from tsprune.data.dataset import prepare_data
    from tsprune.models.registry import build_model
    from tsprune.train import fit

    reproduce = load("reproduce")
    assert reproduce.published("ETTh1", 96)["Autoformer"] == {"mse": 0.449, "mae": 0.459}
    assert set(reproduce.published("weather", 720)) == {"Autoformer", "Informer", "FEDformer", "Crossformer"}

    config = api.make_config("Autoformer", data={"dataset": "ETTh1", "pred_len": 96},
                             train={"epochs": 1, "max_steps": 2, "device": "cpu"}, **TINY)
    metrics = api.train(config, out=tmp_path / "Autoformer", progress=False).metrics

    # checked against its own settings (threads and device aside), the run is compared with the published value
    expected = api.make_config("Autoformer", data={"dataset": "ETTh1", "pred_len": 96},
                               train={"epochs": 1, "max_steps": 2, "threads": 2}, **TINY).to_dict()
    compared = reproduce.row("Autoformer", tmp_path / "Autoformer", {"mse": 0.449, "mae": 0.459}, expected)
    assert compared["mse"] == metrics["mse"] and compared["epochs_run"] == 1 and compared["seed"] == 2021
    assert compared["status"] == "all epochs" and compared["mse_ratio"] == metrics["mse"] / 0.449
    # a config.json written before a setting existed reads as that setting's default, as when the run is loaded
    config_path = tmp_path / "Autoformer" / "config.json"
    older = json.loads(config_path.read_text())
    del older["model"]["prob_layout"]
    config_path.write_text(json.dumps(older))
    assert reproduce.row("Autoformer", tmp_path / "Autoformer", None, expected)["status"] == "all epochs"
    trained_factor = older["model"]["factor"]
    older["model"]["factor"] = trained_factor + 1
    config_path.write_text(json.dumps(older))
    assert reproduce.row("Autoformer", tmp_path / "Autoformer", None, expected)["status"] == (
        "not the protocol: model.factor")
    older["model"]["factor"] = trained_factor  # back to the run as trained
    config_path.write_text(json.dumps(older))
    # the tolerance: 15% for Autoformer, 20% for Informer (references placed at known ratios)
    within = lambda model, ratio: reproduce.row(  # noqa: E731
        model, tmp_path / "Autoformer", {"mse": metrics["mse"] / ratio, "mae": 1.0}, expected)["within"]
    assert [within("Autoformer", r) for r in (0.9, 1.1, 1.18, 0.8)] == ["yes", "yes", "no", "no"]
    assert [within("Informer", r) for r in (1.18, 0.82, 1.25)] == ["yes", "yes", "no"]

    # an interrupted run (a training state after epoch 1 of 2, no metrics) shows its epochs so far
    informer = api.make_config("Informer", data={"dataset": "ETTh1", "pred_len": 96},
                               train={"epochs": 2, "max_steps": 2, "device": "cpu"}, **TINY)
    first_epoch = api.make_config("Informer", data=vars(informer.data), train={**vars(informer.train), "epochs": 1},
                                  **TINY)
    data = prepare_data(informer.data)
    bound = configure.bind_to_data(first_epoch, data)
    state_dir = checkpoint.training_state_dir(tmp_path / "Informer", configure.bind_to_data(informer, data))
    history = fit(build_model(bound.model), data, bound.train, torch.device("cpu"), progress=False,
                  state_dir=state_dir).history

    # against the full protocol, the quick tiny run is flagged, never compared; a missing run says so
    out = tmp_path / "table.json"
    result = CliRunner().invoke(reproduce.cli, ["--models", "Autoformer,Informer,FEDformer", "--runs",
                                                str(tmp_path), "--no-train", "--json", str(out)])
    assert result.exit_code == 0, result.output
    flagged, unfinished, missing = json.loads(out.read_text())
    assert flagged["status"].startswith("not the protocol: model.d_model, model.n_heads")
    assert "train.epochs" in flagged["status"] and "train.device" not in flagged["status"]
    assert flagged["mse"] == metrics["mse"] and "mse_ratio" not in flagged
    assert unfinished["status"] == "unfinished, after epoch 1" and unfinished["epochs_run"] == 1
    assert unfinished["best_val_mse"] == history[0]["val_mse"] and unfinished["history"] == history
    assert (unfinished["published_mse"], "mse" in unfinished) == (0.865, False)
    assert missing == {"model": "FEDformer", "seed": 2021, "status": "not run", "published_mse": 0.376,
                       "published_mae": 0.419}
    assert "| Autoformer | - | 2021 | not the protocol:" in result.output
    assert "| Informer | - | 2021 | unfinished" in result.output

    # --record keeps finished protocol runs only: a newer run of a model replaces its entry, others stay
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"runs": [{"model": "FEDformer", "mse": 0.41}, {"model": "Autoformer", "mse": 9.}]}))
    today = date.today().isoformat()
    written = reproduce.record_runs(results, [compared, flagged, unfinished], "ETTh1", 96, "abc123", "a machine")
    assert written == ["Autoformer"]
    stored = json.loads(results.read_text())
    assert (stored["dataset"], stored["pred_len"]) == ("ETTh1", 96)
    assert [r["model"] for r in stored["runs"]] == ["Autoformer", "FEDformer"]
    assert stored["runs"][0] == {**compared, "code_commit": "abc123", "machine": "a machine",
                                 "recorded": stored["runs"][0]["recorded"]}
    assert stored["runs"][0]["recorded"] in {today, date.today().isoformat()}  # the day of recording (midnight-safe)
    assert stored["runs"][1] == {"model": "FEDformer", "seed": 2021, "mse": 0.41}
    result = CliRunner().invoke(reproduce.cli, ["--models", "Autoformer", "--runs", str(tmp_path), "--no-train",
                                                "--record", str(results), "--code-commit", "def456"])
    assert result.exit_code == 0 and "recorded no finished protocol run" in result.output
    assert json.loads(results.read_text()) == stored


def test_reproduce_averages_seeds_and_keeps_one_entry_per_model_and_seed(tmp_path, monkeypatch):
    reproduce = load("reproduce")
    # the default seed keeps the plain directory, so single-seed runs made before seeds existed are still found
    assert reproduce.run_directory(tmp_path, "Informer", 2021, 2021) == tmp_path / "Informer"
    assert reproduce.run_directory(tmp_path, "Informer", 7, 2021) == tmp_path / "Informer_seed7"

    def finished(model, seed, mse, mae=0.5, epochs=4):
        return {"model": model, "seed": seed, "status": "stopped early", "mse": mse, "mae": mae,
                "epochs_run": epochs}

    references = {"Informer": {"mse": 1.0, "mae": 1.0}, "Autoformer": {"mse": 0.5, "mae": 0.5}}
    records = [finished("Informer", 1, 1.25, 0.8, 4), finished("Informer", 2, 1.05, 0.6, 6),
               finished("Informer", 3, 1.15, 0.7, 5), finished("Autoformer", 1, 0.5),
               {"model": "Autoformer", "seed": 2, "status": "unfinished, after epoch 1", "epochs_run": 1}]
    (informer,) = reproduce.seed_means(records, references)  # one finished Autoformer seed: no mean row
    assert informer["model"] == "Informer" and informer["seed"] == "1,2,3"
    assert informer["status"] == "mean of 3 seeds" and informer["epochs_run"] == 5
    assert abs(informer["mse"] - 1.15) < 1e-12 and abs(informer["mae"] - 0.7) < 1e-12
    assert abs(informer["mse_std"] - 0.1) < 1e-12  # sample std of 1.25, 1.05, 1.15
    # the mean is what is compared: 1.15 lies within Informer's 20%, though one seed (1.25) lies outside it
    assert abs(informer["mse_ratio"] - 1.15) < 1e-12 and informer["within"] == "yes"

    # a run of the same model and seed replaces the stored one; old entries without a seed count as the default
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"runs": [{"model": "Informer", "mse": 1.05, "mae": 0.81, "epochs_run": 4,
                                             "status": "stopped early"}, finished("Informer", 3, 9.0)]}))
    written = reproduce.record_runs(results, [finished("Informer", 2, 1.0), finished("Informer", 3, 1.1)],
                                    "ETTh1", 96, "abc", "m", references)
    assert written == ["Informer/2", "Informer/3"]
    stored = json.loads(results.read_text())
    assert [(r["model"], r["seed"], r["mse"]) for r in stored["runs"]] == [
        ("Informer", 2, 1.0), ("Informer", 3, 1.1), ("Informer", 2021, 1.05)]
    (mean,) = stored["seed_means"]
    assert mean["seed"] == "2,3,2021" and abs(mean["mse"] - (1.0 + 1.05 + 1.1) / 3) < 1e-12
    assert mean["published_mse"] == 1.0 and mean["within"] == "yes"

    # --seeds: every seed has its own directory and row; bad seeds are a clear error
    out = tmp_path / "table.json"
    result = CliRunner().invoke(reproduce.cli, ["--models", "Informer", "--seeds", "2021,5", "--runs",
                                                str(tmp_path / "none"), "--no-train", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert [(r["seed"], r["status"]) for r in json.loads(out.read_text())] == [(2021, "not run"), (5, "not run")]
    for bad in ("1,x", " , "):
        result = CliRunner().invoke(reproduce.cli, ["--models", "Informer", "--seeds", bad, "--no-train"])
        assert result.exit_code == 2 and "--seeds takes comma-separated integers" in result.output

    # finished seeds: the table and --json end with their mean
    mse = {1: 1.25, 2: 1.05}
    monkeypatch.setattr(reproduce, "row", lambda model, run_dir, reference, expected, variant="": finished(
        model, expected["train"]["seed"], mse[expected["train"]["seed"]]))
    result = CliRunner().invoke(reproduce.cli, ["--models", "Informer", "--seeds", "1,2", "--runs", str(tmp_path),
                                                "--no-train", "--json", str(out)])
    assert result.exit_code == 0, result.output
    *runs, mean = json.loads(out.read_text())
    assert [r["mse"] for r in runs] == [1.25, 1.05] and mean["status"] == "mean of 2 seeds"
    assert abs(mean["mse"] - 1.15) < 1e-12 and mean["published_mse"] == 0.865
    assert "| Informer | - | 1,2 | mean of 2 seeds |" in result.output


def test_reproduce_keeps_model_variants_apart(tmp_path, monkeypatch):
    reproduce = load("reproduce")
    assert reproduce.parse_variant(" prob_layout=paper, factor=5") == {"prob_layout": "paper", "factor": 5}
    assert reproduce.variant_name({"prob_layout": "paper", "factor": 5}) == "factor=5,prob_layout=paper"
    assert reproduce.parse_variant("") == {} and reproduce.variant_name({}) == ""
    assert reproduce.run_directory(tmp_path, "Informer", 2021, 2021, "prob_layout=paper") == (
        tmp_path / "Informer[prob_layout=paper]")
    assert reproduce.run_directory(tmp_path, "Informer", 2022, 2021, "prob_layout=paper") == (
        tmp_path / "Informer[prob_layout=paper]_seed2022")

    def finished(seed, mse, variant=""):
        return {"model": "Informer", **({"variant": variant} if variant else {}), "seed": seed,
                "status": "stopped early", "mse": mse, "mae": 0.7, "epochs_run": 4}

    # the default run of a seed and a variant's run of the same seed are two entries, averaged apart
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"runs": [finished(2021, 1.045, "prob_layout=paper"),
                                            finished(2022, 1.094, "prob_layout=paper")]}))
    written = reproduce.record_runs(results, [finished(2021, 0.775)], "ETTh1", 96, "abc", "m",
                                    {"Informer": {"mse": 0.865, "mae": 0.713}})
    assert written == ["Informer"]
    stored = json.loads(results.read_text())
    assert [(r.get("variant", ""), r["seed"], r["mse"]) for r in stored["runs"]] == [
        ("", 2021, 0.775), ("prob_layout=paper", 2021, 1.045), ("prob_layout=paper", 2022, 1.094)]
    (mean,) = stored["seed_means"]  # one default seed: no mean row for the defaults
    assert mean["variant"] == "prob_layout=paper" and abs(mean["mse"] - (1.045 + 1.094) / 2) < 1e-12
    assert reproduce.record_runs(results, [finished(2022, 1.0, "prob_layout=paper")], "ETTh1", 96, "abc",
                                 "m") == ["Informer[prob_layout=paper]/2022"]

    # --variant trains into its own directory and labels the rows; a bad option is one clear line
    seen = []
    monkeypatch.setattr(reproduce, "row", lambda model, run_dir, reference, expected, variant="": seen.append(
        (run_dir.name, expected["model"]["prob_layout"], variant)) or finished(2021, 1.0, variant))
    out = tmp_path / "table.json"
    result = CliRunner().invoke(reproduce.cli, ["--models", "Informer", "--variant", "prob_layout=paper", "--runs",
                                                str(tmp_path), "--no-train", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert seen == [("Informer[prob_layout=paper]", "paper", "prob_layout=paper")]
    assert "| Informer | prob_layout=paper | 2021 |" in result.output
    for bad, message in (("prob_layout", "--variant takes KEY=VALUE"), ("prob_layout=wide", "prob_layout must be"),
                         ("nosuch=1", "unknown model hyper-parameter(s): nosuch")):
        result = CliRunner().invoke(reproduce.cli, ["--models", "Informer", "--variant", bad, "--no-train"])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_oneshot_table_reads_the_results_table_and_fills_a_readme_block(tmp_path):
    import pandas as pd

    rows = [{"run_id": "d", "parent_id": None, "kind": "dense", "status": "done", "model": "Informer",
             "method": "dense", "variant": None, "target_density": 1.0, "finetune_epochs": 0, "mse": 0.9}]
    for method, variant, density, mse, status in [("wanda", "", 0.5, 0.91, "done"), ("sparsegpt", "", 0.5, 0.93,
                                                  "done"), ("depgraph", "importance=taylor", 0.25, 1.2, "done"),
                                                  ("lamp", "", 0.25, None, "failed")]:
        rows.append({"run_id": f"{method}{density}", "parent_id": "d", "kind": "prune", "status": status,
                     "model": "Informer", "method": method, "variant": variant, "target_density": density,
                     "finetune_epochs": 0, "mse": mse, "method_seconds": 2.5,
                     "emptied_layers": None if method == "depgraph" else 0})
    rows.append({**rows[1], "run_id": "tuned", "finetune_epochs": 1, "mse": 0.5})  # fine-tuned: not in this table
    table = tmp_path / "results.parquet"
    pd.DataFrame(rows).to_parquet(table)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- tsprune oneshot start -->\nold\n<!-- tsprune oneshot end -->\nrest\n")
    result = CliRunner().invoke(load("oneshot_table").cli, [str(table), "--readme", str(readme)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "| model | dense MSE | method | density 0.5 | density 0.25 |"
    assert "| Informer | 0.900 | lamp |  | failed |" in lines
    assert "|  |  | wanda | 0.910 (2.5 s, 0 emptied) |  |" in lines
    assert "|  |  | depgraph (taylor) |  | 1.200 (2.5 s) |" in lines and "0.500" not in result.output
    text = readme.read_text()
    assert text.startswith("intro\n<!-- tsprune oneshot start -->\n| model") and "old" not in text
    assert text.endswith("<!-- tsprune oneshot end -->\nrest\n")
    missing = CliRunner().invoke(load("oneshot_table").cli, [str(table), "--readme", str(tmp_path / "none.md")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output


def test_the_study_families_and_the_size_data_spec_are_the_preset_each_run_once():
    """family.sh runs study-etth1 one model at a time and the size x data grid on its own: together they must be
    the preset's runs, with the preset's labels, none twice (else a run is trained twice or never)."""
    import yaml

    from tsprune.models.registry import study_models
    from tsprune.sweep import parse_spec, plan_sweep
    from tsprune.sweep.presets import PRESETS

    make_spec = load("study/make_spec")
    preset = {run.run_id: run.labels for run in plan_sweep(parse_spec(PRESETS["study-etth1"])).runs()}
    parts = [make_spec.restricted("study-etth1", [model]) for model in study_models()]
    parts.append(make_spec.size_data("study-etth1"))
    plans = [plan_sweep(parse_spec(yaml.safe_load(yaml.safe_dump(part)))) for part in parts]  # as printed
    planned = [run for plan in plans for run in plan.runs()]
    assert sorted(run.run_id for run in planned) == sorted(preset)
    assert all(run.labels == preset[run.run_id] for run in planned)
    assert (len(plans[-1].dense), len(plans[-1].prune)) == (11, 22)  # 4 sizes x 3 fractions, less d512 at 1.0


def frontier_sweep(tmp_path: Path) -> Path:
    """A tiny sweep: a Transformer (dense, magnitude 0.5, DepGraph 0.5) and a DLinear, one seed, weights kept."""
    from conftest import TINY, write_small_csv
    from tsprune.sweep import parse_spec, run_sweep

    csv = write_small_csv(tmp_path)
    spec = {"models": ["Transformer", "DLinear"], "datasets": [str(csv)], "pred_lens": [12],
            "data": {"seq_len": 24, "label_len": 12}, "methods": {"magnitude": [0.5], "depgraph": [0.5]},
            "train": {"epochs": 1, "max_steps": 2}, "model_sizes": {"default": dict(TINY)},
            "measure": {"batch_sizes": [2], "repeats": 1}, "device": "cpu"}
    outcome = run_sweep(parse_spec(spec), tmp_path / "sweep", threads=1, progress=False)
    assert outcome.failed == 0
    return tmp_path / "sweep"


def test_the_frontier_pass_times_every_point_on_its_engines_and_resumes(tmp_path):
    import pandas as pd

    sweep = frontier_sweep(tmp_path)
    module = load("study/frontier_pass")
    out = tmp_path / "costs.csv"
    args = ["--results", str(sweep), "--dense", str(sweep), "--out", str(out), "--engines", "eager,sparse",
            "--threads", "1", "--repeats", "1"]
    result = CliRunner().invoke(module.cli, args)
    assert result.exit_code == 0, result.output
    costs = pd.read_csv(out).set_index(["model", "method"])
    # the Transformer's dense run and its two prunings, and the small model's dense run (the frontier's points)
    assert set(costs.index) == {("Transformer", "dense"), ("Transformer", "magnitude"), ("Transformer", "depgraph"),
                                ("DLinear", "dense")}
    masked = costs.loc[("Transformer", "magnitude")]
    assert masked["nonzero_params"] < masked["params"] and masked["flops"] < masked["flops_dense_equivalent"]
    assert masked["latency_b32_ms"] == min(masked["eager_b32_ms"], masked["sparse_b32_ms"])
    assert masked["engine_b32"] in ("eager", "sparse") and masked["cpu"]
    assert pd.isna(costs.loc[("Transformer", "depgraph"), "sparse_b32_ms"])  # no zeros to skip: eager only
    dense = costs.loc[("Transformer", "dense")]
    assert costs.loc[("Transformer", "depgraph"), "params"] < dense["params"] == dense["nonzero_params"]
    again = CliRunner().invoke(module.cli, args)  # every point is measured on this CPU: nothing to do
    assert again.exit_code == 0 and "ms (" not in again.output and len(pd.read_csv(out)) == 4


@pytest.mark.heavy
def test_the_frontier_pass_times_onnx_runtime_beside_the_other_engines(tmp_path):
    """ONNX Runtime is one of the engines (an export per point: heavy)."""
    import pandas as pd

    sweep = frontier_sweep(tmp_path)
    out = tmp_path / "costs.csv"
    result = CliRunner().invoke(load("study/frontier_pass").cli, [
        "--results", str(sweep), "--dense", str(sweep), "--out", str(out), "--models", "Transformer",
        "--threads", "1", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    costs = pd.read_csv(out).set_index("method")
    assert costs["onnxruntime_b32_ms"].gt(0).all() and costs["eager_b32_ms"].gt(0).all()
    assert costs.loc["magnitude", "sparse_b32_ms"] > 0 and pd.isna(costs.loc["dense", "sparse_b32_ms"])
    fastest = costs[["eager_b1_ms", "onnxruntime_b1_ms", "sparse_b1_ms"]].min(axis=1)
    assert (costs["latency_b1_ms"] == fastest).all()


def test_the_frontier_pass_times_a_dense_point_without_weights_from_its_configuration(tmp_path):
    """A dense model's latency does not depend on its values: with no run directory on disk (a new machine), a dense
    point is built from its recorded configuration; a pruned point, whose zeros matter, is skipped and says so."""
    import shutil

    import pandas as pd

    sweep = frontier_sweep(tmp_path)
    shutil.rmtree(sweep / "runs")
    out = tmp_path / "costs.csv"
    result = CliRunner().invoke(load("study/frontier_pass").cli, [
        "--results", str(sweep), "--dense", str(sweep), "--out", str(out), "--engines", "eager", "--threads", "1",
        "--repeats", "1"])
    assert result.exit_code == 0, result.output
    costs = pd.read_csv(out).set_index(["model", "method"])
    assert set(costs.index) == {("Transformer", "dense"), ("DLinear", "dense")}
    assert set(costs["from_run"]) == {"untrained"} and costs["latency_b32_ms"].gt(0).all()
    assert "no dense run with weights here to prune again: skipped" in result.output


def test_the_published_check_compares_seed_means_with_the_published_values():
    import pandas as pd

    module = load("study/published_check")
    reference = module.published()
    assert reference.set_index("model").loc["DLinear", "mse"] == 0.386  # issue 32's three rows are there
    rows = [{"run_id": f"{m}-{s}", "kind": "dense", "status": "done", "model": m, "dataset": "ETTh1", "pred_len": 96,
             "size": "default", "seed": s, "mse": mse, "mae": 0.4}
            for m, values in (("DLinear", (0.40, 0.41, 0.42)), ("iTransformer", (0.45,)))
            for s, mse in zip((2021, 2022, 2023), values)]
    out = module.compare(pd.DataFrame(rows), reference).set_index("model")
    assert out.loc["DLinear", "mse"] == pytest.approx(0.41) and out.loc["DLinear", "within"] == "yes"
    assert out.loc["DLinear", "ratio"] == pytest.approx(0.41 / 0.386)
    assert out.loc["iTransformer", "within"] == "no (fewer than 3 seeds)"  # 0.45 is 17% above 0.386


def test_the_runtime_race_renders_a_committed_race_and_refuses_other_files(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports its sibling scripts
    race = load("runtime_race")
    committed = sorted((BENCHMARKS / "results" / "runtime-race").glob("*.json"))[0]
    page = tmp_path / "page.md"
    page.write_text("before\n<!-- tsprune runtime-race start -->\nold\n<!-- tsprune runtime-race end -->\nafter\n")
    result = CliRunner().invoke(race.cli, ["--from-json", str(committed), "--readme", str(page)])
    assert result.exit_code == 0, result.output
    rows = json.loads(committed.read_text())["rows"]
    written = page.read_text()
    assert "old" not in written and written.startswith("before\n") and written.endswith("after\n")
    for row in rows:  # one line per row, its ratio as measured
        assert f"| {row['model']} | {row['batch_size']} |" in written
        assert f"{row['magnitude/ratio']:.2f}x" in written
    (tmp_path / "bad.json").write_text("{not json")
    result = CliRunner().invoke(race.cli, ["--from-json", str(tmp_path / "bad.json")])
    assert result.exit_code == 2 and "give a file written by --json" in result.output
    assert "Traceback" not in result.output


@pytest.mark.heavy
def test_the_runtime_race_times_dense_and_sparse_engines_in_one_loop(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    race = load("runtime_race")
    out = tmp_path / "race.json"
    result = CliRunner().invoke(race.cli, [
        "--models", "Transformer", "--batch-sizes", "2", "--threads", "1", "--repeats", "2", "--masks",
        "magnitude", "--engines", "eager,ort,engine,sparse", "--set",
        json.dumps({"d_model": 16, "d_ff": 32, "n_heads": 2, "e_layers": 1, "d_layers": 1}), "--json", str(out)])
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text())["rows"][0]
    assert set(row["ms"]) == {"eager", "ort", "engine", "magnitude/sparse"} and min(row["ms"].values()) > 0
    assert row["fastest_dense"] in ("eager", "ort", "engine") and row["magnitude/fastest"] == "sparse"
    assert row["magnitude/ratio"] == pytest.approx(row["ms"][row["fastest_dense"]] / row["ms"]["magnitude/sparse"])
    assert row["facts"]["ort"]["max_rel_diff"] < 1e-4  # the export's own check ran before timing
