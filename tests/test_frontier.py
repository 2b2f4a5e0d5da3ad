"""The frontier: points from a combined results table, the Pareto front, and the small-vs-pruned finding."""

from __future__ import annotations

import pandas as pd
import pytest

from tsprune.report import tables
from tsprune.report.frontier import duels, pareto, points, verdict


def run(model, seed, mse, method="dense", density=1.0, size="default", finetune=0, engine="dense", nonzero=None,
        flops=None):
    kind = "dense" if method == "dense" else "prune"
    return {"run_id": f"{model}-{size}-{method}-{density}-{finetune}-{engine}-{seed}", "kind": kind,
            "status": "done", "model": model, "dataset": "ETTh1", "pred_len": 96, "seed": seed, "size": size,
            "train_fraction": 1.0, "method": method, "variant": "", "target_density": density,
            "finetune_epochs": finetune, "engine": engine, "mse": mse, "params": 1000,
            "nonzero_params": nonzero if nonzero is not None else 1000, "flops_effective": flops}


def table() -> pd.DataFrame:
    rows = []
    for seed, shift in ((2021, 0.0), (2022, 0.01), (2023, 0.02)):
        rows += [run("Autoformer", seed, 0.45 + shift, nonzero=10_000_000, flops=9e9),
                 run("Autoformer", seed, 0.50 + shift, "magnitude", 0.107, nonzero=1_100_000, flops=1e9),
                 run("Autoformer", seed, 0.50 + shift, "magnitude", 0.107, engine="sparse", nonzero=1_100_000,
                     flops=1e9),
                 run("Autoformer", seed, 0.46 + shift, "magnitude", 0.107, finetune=1, nonzero=1_100_000, flops=1e9),
                 run("DLinear", seed, 0.40 + shift, nonzero=18_624),
                 run("PatchTST", seed, 0.42 + shift, size="d16", nonzero=20_000),
                 run("PatchTST", seed, 0.44 + shift, size="d64", nonzero=300_000)]
    return tables.prepare(pd.DataFrame(rows))


COSTS = pd.DataFrame([
    {"model": "Autoformer", "size": "default", "method": "dense", "variant": "", "target_density": 1.0,
     "engine": "onnxruntime", "flops": 9e9, "latency_b1_ms": 30.0, "latency_b32_ms": 600.0, "cpu": "AMD EPYC"},
    {"model": "Autoformer", "size": "default", "method": "magnitude", "variant": "", "target_density": 0.107,
     "engine": "sparse", "flops": 1e9, "latency_b1_ms": 12.0, "latency_b32_ms": 150.0, "cpu": "AMD EPYC"},
    {"model": "DLinear", "size": "default", "method": "dense", "variant": "", "target_density": 1.0,
     "engine": "dense", "flops": 3.6e6, "latency_b1_ms": 0.1, "latency_b32_ms": 0.5, "cpu": "AMD EPYC"},
    {"model": "PatchTST", "size": "d16", "method": "dense", "variant": "", "target_density": 1.0,
     "engine": "dense", "flops": 2e7, "latency_b1_ms": 1.0, "latency_b32_ms": 10.0, "cpu": "AMD EPYC"},
    {"model": "PatchTST", "size": "d64", "method": "dense", "variant": "", "target_density": 1.0,
     "engine": "dense", "flops": 2e8, "latency_b1_ms": 3.0, "latency_b32_ms": 400.0, "cpu": "AMD EPYC"},
])


def test_points_are_seed_means_with_spreads_and_name_their_runs():
    frame = points(table(), COSTS).set_index(["model", "size", "method", "finetune_epochs"])
    dense = frame.loc[("Autoformer", "default", "dense", 0)]
    assert dense["group"] == "dense" and dense["seeds"] == 3
    assert dense["mse"] == pytest.approx(0.46) and (dense["lo"], dense["hi"]) == pytest.approx((0.45, 0.47))
    pruned = frame.loc[("Autoformer", "default", "magnitude", 0)]
    assert pruned["group"] == "pruned" and len(pruned["run_ids"].split()) == 3  # the sparse twins are the same
    assert pruned["latency_b32_ms"] == 150.0 and pruned["engine"] == "sparse"
    tuned = frame.loc[("Autoformer", "default", "magnitude", 1)]  # fine-tuning keeps the structure: same latency
    assert tuned["latency_b32_ms"] == 150.0
    assert frame.loc[("DLinear", "default", "dense", 0), "group"] == "small"
    assert frame.loc[("DLinear", "default", "dense", 0), "flops_effective"] == 3.6e6  # from the pass
    assert len(frame) == 6


def test_the_pareto_front_keeps_what_nothing_beats():
    frame = points(table(), COSTS)
    front = frame[pareto(frame, "latency_b32_ms")]
    labels = list(zip(front["model"], front["size"], front["method"]))
    assert labels == [("DLinear", "default", "dense")]  # cheapest and most accurate: nothing else is on it
    params = frame[pareto(frame, "nonzero_params")]
    assert list(params["model"]) == ["DLinear"]


def test_the_small_vs_pruned_finding_compares_each_ladder_point_with_the_best_large_model_as_cheap():
    frame = points(table(), COSTS)
    results = duels(frame, "latency_b32_ms")
    by = {duel.small: duel for duel in results}
    assert by["DLinear default"].rival is None and by["DLinear default"].verdict == "small"
    d64 = by["PatchTST d64"]  # 400 ms: the pruned Autoformer (150 ms) is as cheap; fine-tuned, 0.47 vs 0.45
    assert d64.rival == "Autoformer magnitude 0.107 +ft1" and d64.rival_mse == pytest.approx(0.47)
    assert d64.margin == pytest.approx(0.02) and d64.verdict == "tie"  # 0.02 apart: within the spread
    state, evidence = verdict(results)
    assert state == "refuted" and "large model better at 0 of 3" in evidence
    # a much better pruned model turns the verdict where it is as cheap
    better = table()
    better.loc[(better["method"] == "magnitude") & (better["finetune_epochs"] == 1), "mse"] -= 0.1
    state, _ = verdict(duels(points(better, COSTS), "latency_b32_ms"))
    assert state == "partly"
    assert verdict([]) == ("open", "no small-model point with a measured cost")


def test_the_report_carries_the_frontier_finding_table_and_figure(tmp_path):
    from tsprune.report import build_report
    from tsprune.report.findings import findings

    rows = findings(table(), costs=COSTS).set_index("claim")
    row = rows.loc["Pruning a large model beats training a small one (tsprune, beyond the study)"]
    assert row["verdict"] == "refuted" and "PatchTST d64 0.450 vs Autoformer magnitude 0.107 +ft1 0.470" in \
        row["evidence"]
    assert findings(table()).set_index("claim").loc[row.name, "verdict"] == "open"  # no latency measured yet
    partial = findings(table(), costs=COSTS[COSTS["method"] != "magnitude"]).set_index("claim").loc[row.name]
    assert partial["verdict"] == "open" and partial["evidence"].startswith("2 point(s) not timed yet")
    build_report(table(), tmp_path, costs=COSTS)
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "## Frontier points" in report and "DLinear-default-dense-1.0-0-dense-2022" in report
    assert (tmp_path / "figures" / "frontier.png").stat().st_size > 0


def test_the_report_command_reads_several_tables_and_the_costs(tmp_path):
    from typer.testing import CliRunner

    from tsprune.cli import app

    frame = table()
    study, small = tmp_path / "study.csv", tmp_path / "small.csv"
    frame[frame["model"] == "Autoformer"].to_csv(study, index=False)
    frame[frame["model"] != "Autoformer"].to_csv(small, index=False)
    COSTS.to_csv(tmp_path / "costs.csv", index=False)
    result = CliRunner().invoke(app, ["report", str(study), str(small), str(study), "--out", str(tmp_path / "r"),
                                      "--costs", str(tmp_path / "costs.csv")])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    assert "Pruning a large model beats training a small one" in report and "| refuted |" in report
    missing = CliRunner().invoke(app, ["report", str(study), "--out", str(tmp_path / "m"), "--costs",
                                       str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "nope.csv not found" in missing.output and "Traceback" not in missing.output
