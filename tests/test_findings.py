"""The findings table: each claim of the study decided by its written test on a results table.

The tables here are built by hand so that each claim's outcome is known: the study's claims all hold in the first,
and each variant breaks (or leaves open) exactly one of them.
"""

from __future__ import annotations

import pandas as pd
import pytest

from tsprune.report import tables
from tsprune.report.findings import findings
from tsprune.report.render import build_report

MODELS = ["Autoformer", "Crossformer", "FEDformer", "Informer", "Transformer"]
DENSE = {"Autoformer": 0.45, "Crossformer": 0.38, "FEDformer": 0.41, "Informer": 0.78, "Transformer": 0.81}
# how far magnitude pruning keeps each model within the seed spread (Autoformer and FEDformer the furthest)
KEPT = {"Autoformer": 0.8**20, "FEDformer": 0.8**19, "Crossformer": 0.8**12, "Informer": 0.8**8,
        "Transformer": 0.8**6}
DEPGRAPH_LOSS = {"Autoformer": 0.01, "Crossformer": 0.30, "FEDformer": 0.02, "Informer": 0.12, "Transformer": 0.05}


def row(model: str, method: str = "dense", density: float = 1.0, mse: float | None = None, **extra) -> dict:
    base = {"run_id": f"{model}-{method}-{density:.5f}-{extra.get('finetune_epochs', 0)}-"
                      f"{extra.get('engine', 'dense')}-{extra.get('size', 'default')}-"
                      f"{extra.get('train_fraction', 1.0)}",
            "parent_id": None if method == "dense" else f"{model}-dense", "kind": "dense" if method == "dense"
            else "prune", "status": "done", "model": model, "dataset": "ETTh1", "pred_len": 96, "seed": 2021,
            "size": "default", "train_fraction": 1.0, "method": method, "target_density": density,
            "finetune_epochs": 0, "engine": "dense", "mse": DENSE[model] if mse is None else mse,
            "dense_mse": DENSE[model], "params": 10_000_000, "flops_ratio": 1.0 if method != "depgraph" else density,
            "flops_effective_ratio": density, "speedup": 1.0, "density_total": density}
    return {**base, **extra}


def study_table(**changes) -> pd.DataFrame:
    rows = []
    for model in MODELS:
        dense = DENSE[model]
        rows.append(row(model))
        for i in range(21):
            density = 0.8**i
            mse = dense + (0.0 if density >= KEPT[model] - 1e-9 else 0.2)
            rows.append(row(model, "magnitude", density, mse, speedup=1.02))
            rows.append(row(model, "magnitude", density, mse, engine="sparse", speedup=1.0 / max(density, 0.2)))
        for i in range(1, 11):
            density = 0.8**i
            loss = DEPGRAPH_LOSS[model] * i
            bump = 0.1 if model == "Crossformer" and i == 7 else 0.0  # falls back by 0.1 on the way down
            rows.append(row(model, "depgraph", density, dense + loss - bump, speedup=1.0 / density ** 0.5))
        for method in ("magnitude", "depgraph"):
            for density in (0.8**5, 0.8**10):
                rows.append(row(model, method, density, dense + 0.02, finetune_epochs=1))
        rows = [r for r in rows if not (r["model"] == model and r["method"] in ("magnitude", "depgraph")
                                        and abs(r["target_density"] - 0.8**10) < 1e-9 and r["finetune_epochs"] == 0)]
        for method in ("magnitude", "depgraph"):  # before fine-tuning at 0.107: well above dense, but for the
            # magnitude-pruned Autoformer and FEDformer, which keep their accuracy far below it
            robust = method == "magnitude" and KEPT[model] < 0.8**10
            mse = dense if robust else dense + 0.3
            rows.append(row(model, method, 0.8**10, mse, speedup=1.02))
            if method == "magnitude":
                rows.append(row(model, method, 0.8**10, mse, engine="sparse", speedup=3.1))
    # Autoformer size x data: the small model wins on little data, the default one on all of it
    for size, params in (("d64", 200_000), ("d256", 3_000_000), ("default", 10_000_000)):
        for fraction in (0.25, 0.5, 1.0):
            gap = {"d64": {0.25: 0.0, 0.5: 0.05, 1.0: 0.12}, "d256": {0.25: 0.03, 0.5: 0.0, 1.0: 0.04},
                   "default": {0.25: 0.08, 0.5: 0.02, 1.0: 0.0}}[size][fraction]
            if (size, fraction) != ("default", 1.0):
                rows.append(row("Autoformer", mse=0.45 + gap, size=size, train_fraction=fraction, params=params))
    frame = pd.DataFrame(rows)
    for key, edit in changes.items():
        frame = edit(frame)
    return tables.prepare(frame)


def verdicts(frame: pd.DataFrame) -> dict[str, str]:
    table = findings(frame)
    assert table["claim"].is_unique
    return dict(zip(table["claim"], table["verdict"]))


def test_the_studys_claims_hold_on_a_table_built_to_confirm_them():
    table = findings(study_table())
    got = dict(zip(table["claim"], table["verdict"]))
    assert got == {
        "Magnitude pruning keeps accuracy to high sparsity": "confirmed",
        "Autoformer and FEDformer are the most robust, competitive down to ~1%": "confirmed",
        "DepGraph (structured) pruning is inconsistent across models": "confirmed",
        "Pruning cuts FLOPs (~7x) but saves no time": "confirmed",
        "…unless the zeros are skipped (tsprune, beyond the study)": "—",
        "Fine-tuning is needed (magnitude)": "partly",  # not for the two robust models
        "Fine-tuning is needed (depgraph)": "confirmed",
        "90% sparsity at dense accuracy (the best recipe, one epoch of fine-tuning)": "open",  # no recipe column
        "Model size must grow with dataset size (Autoformer)": "confirmed",
    }
    evidence = dict(zip(table["claim"], table["evidence"]))
    assert "Autoformer 1.15%" in evidence["Autoformer and FEDformer are the most robust, competitive down to ~1%"]
    assert "median 9.3x fewer effective FLOPs, speedup 1.02x" in evidence["Pruning cuts FLOPs (~7x) but saves no time"]
    beyond = evidence["…unless the zeros are skipped (tsprune, beyond the study)"]
    assert "sparse engine at 10.7%: median 3.10x" in beyond
    assert "non-monotone: Crossformer" in evidence["DepGraph (structured) pruning is inconsistent across models"]
    assert "25% of the data: d64" in evidence["Model size must grow with dataset size (Autoformer)"]
    decided = table[table["verdict"] != "open"]
    assert (decided["runs"] > 0).all()


def drop(condition):
    return lambda frame: frame[~condition(frame)]


@pytest.mark.parametrize("change, claim, verdict", [
    # Informer loses accuracy from the first cut: only four of five models keep it to 0.328
    ({"mse": lambda f: f.assign(mse=f["mse"].where(~((f["model"] == "Informer") & (f["method"] == "magnitude")
                                                     & (f["target_density"] < 0.9)), 1.2))},
     "Magnitude pruning keeps accuracy to high sparsity", "partly"),
    # Transformer keeps it furthest: Autoformer and FEDformer are no longer the two most robust
    ({"mse": lambda f: f.assign(mse=f["mse"].where(~((f["model"] == "Transformer") & (f["method"] == "magnitude")
                                                     & (f["finetune_epochs"] == 0)), 0.81))},
     "Autoformer and FEDformer are the most robust, competitive down to ~1%", "partly"),
    # every model loses the same under DepGraph and no curve turns back
    ({"mse": lambda f: f.assign(mse=f["mse"].where(~((f["method"] == "depgraph") & (f["finetune_epochs"] == 0)),
                                                  f["dense_mse"] + 0.01))},
     "DepGraph (structured) pruning is inconsistent across models", "refuted"),
    # masked models ran 1.5x faster: time was saved
    ({"speedup": lambda f: f.assign(speedup=f["speedup"].where(~((f["method"] == "magnitude")
                                                                 & (f["engine"] == "dense")), 1.5))},
     "Pruning cuts FLOPs (~7x) but saves no time", "partly"),
    # fine-tuning changed nothing
    ({"mse": lambda f: f.assign(mse=f["mse"].where(f["finetune_epochs"] == 0, f["dense_mse"] + 0.3))},
     "Fine-tuning is needed (depgraph)", "refuted"),
    # every model loses accuracy at 0.107 without fine-tuning and gets it back with it
    ({"mse": lambda f: f.assign(mse=f["mse"].where(~((f["method"] == "magnitude") & (f["finetune_epochs"] == 0)
                                                     & (abs(f["target_density"] - 0.8**10) < 1e-6)),
                                                  f["dense_mse"] + 0.3))},
     "Fine-tuning is needed (magnitude)", "confirmed"),
    # the largest model wins on every fraction: size did not have to grow with the data
    ({"mse": lambda f: f.assign(mse=f["mse"].where(~((f["model"] == "Autoformer") & (f["kind"] == "dense")
                                                     & (f["size"] == "default")), 0.40))},
     "Model size must grow with dataset size (Autoformer)", "partly"),
    # a sweep half way: magnitude has reached 0.64 only, where every model still keeps its accuracy
    ({"drop": drop(lambda f: (f["method"] == "magnitude") & (f["target_density"] < 0.6))},
     "Magnitude pruning keeps accuracy to high sparsity", "open"),
    # a model's DepGraph runs are not in the table yet
    ({"drop": drop(lambda f: (f["model"] == "Crossformer") & (f["method"] == "depgraph"))},
     "DepGraph (structured) pruning is inconsistent across models", "open"),
    # without the smallest size the bigger one wins on little data, but its lead at full data is within the spread
    ({"drop": drop(lambda f: (f["model"] == "Autoformer") & (f["size"] == "d64"))},
     "Model size must grow with dataset size (Autoformer)", "partly"),
])
def test_each_claim_follows_its_test(change, claim, verdict):
    assert verdicts(study_table(**change))[claim] == verdict


def test_an_open_claim_shows_the_models_finished_so_far():
    # two models' masked runs at 0.107 are timed: open, with their numbers (9.3x fewer FLOPs, 1.02x each)
    timed = ["Informer", "Transformer"]
    frame = study_table(drop=drop(lambda f: (f["method"] == "magnitude") & ~f["model"].isin(timed)))
    table = findings(frame).set_index("claim")
    row = table.loc["Pruning cuts FLOPs (~7x) but saves no time"]
    assert row["verdict"] == "open" and row["runs"] == 2
    assert row["evidence"] == "Informer 9.3x fewer, 1.02x; Transformer 9.3x fewer, 1.02x"


def test_findings_lead_the_report_and_are_written_for_the_readme(tmp_path):
    build_report(study_table(), tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert report.index("## Findings") < report.index("## Figures")
    lines = (tmp_path / "findings.md").read_text().splitlines()
    assert lines[0].startswith("Each claim of the study") and "| claim of the study | verdict |" in lines[2]
    assert len([line for line in lines if line.startswith("| ")]) == 1 + 9


def test_report_writes_the_findings_into_the_readme_block(tmp_path):
    from typer.testing import CliRunner

    from tsprune.cli import app

    runner = CliRunner()
    from tsprune.sweep.results import write_table

    results = write_table(study_table(), tmp_path / "results.parquet")
    # the obvious way to read a results table works: pandas has a parquet engine (pyarrow is a dependency)
    assert len(pd.read_parquet(results)) == len(study_table())
    readme = tmp_path / "README.md"
    original = ("# tool\n\nbefore\n<!-- tsprune findings start -->\nstale\n<!-- tsprune findings end -->\n"
                "after\n")
    readme.write_text(original)
    result = runner.invoke(app, ["report", str(results), "--out", str(tmp_path / "report"), "--readme", str(readme)])
    assert result.exit_code == 0, result.output
    text = readme.read_text()
    assert text.startswith("# tool\n\nbefore\n<!-- tsprune findings start -->\nEach claim of the study")
    assert text.endswith("|\n<!-- tsprune findings end -->\nafter\n") and "stale" not in text
    assert (tmp_path / "report" / "findings.md").read_text() in text
    readme.write_text("# no block\n")
    result = runner.invoke(app, ["report", str(results), "--out", str(tmp_path / "report"), "--readme", str(readme)])
    assert result.exit_code == 2 and "has no findings block" in result.output and "Traceback" not in result.output
    assert readme.read_text() == "# no block\n"
    (tmp_path / "bad.parquet").write_text("not parquet")
    result = runner.invoke(app, ["report", str(tmp_path / "bad.parquet"), "--out", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "not a readable results table" in result.output


def test_readme_findings_are_those_of_the_committed_study_results():
    """The findings block of the study's results page (docs/results/study-etth1.md; the README was their home before
    the manual) is generated from the committed tables `make study-results` reads:
    benchmarks/results/study-etth1/results.parquet, with seeds-etth1's, small-etth1's and the frontier's costs where
    they are committed."""
    from pathlib import Path

    from tsprune.report.render import README_END, README_START, findings_markdown, findings_table
    from tsprune.sweep.results import read_results

    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    paths = [results / name / "results.parquet" for name in ("study-etth1", "seeds-etth1", "small-etth1")]
    paths = [path for path in paths if path.is_file()]
    frame = pd.concat([read_results(path) for path in paths], ignore_index=True).drop_duplicates("run_id")
    costs_path = results / "frontier" / "costs.csv"
    costs = pd.read_csv(costs_path) if costs_path.is_file() else None
    readme = (results.parents[1] / "docs" / "results" / "study-etth1.md").read_text(encoding="utf-8")
    block = readme[readme.index(README_START) + len(README_START):readme.index(README_END)].strip("\n")
    expected = findings_markdown(findings_table(tables.prepare(frame), costs=costs)).strip("\n")
    assert block == expected, "docs/results/study-etth1.md findings are stale: run `make study-results`"


# --- seeds: the paired criterion against each model's measured spread -------------------------------------------------


def seeded(rows: list[tuple[str, str, float, int, float]]) -> pd.DataFrame:
    """Rows (model, method, density, seed, mse) of a tiny main grid; dense rows have method 'dense'."""
    return pd.DataFrame([{"run_id": f"{m}-{method}-{d}-{s}", "kind": "dense" if method == "dense" else "prune",
                          "status": "done", "model": m, "method": method, "target_density": d, "seed": s,
                          "mse": mse, "finetune_epochs": 0, "engine": "dense", "variant": ""}
                         for m, method, d, s, mse in rows])


def test_the_paired_criterion_compares_each_seed_with_its_own_dense_run_against_the_measured_spread():
    from tsprune.report.findings import kept_down_to
    from tsprune.report.seeds import SINGLE_SEED_STAND_IN, paired, seed_noise

    grid = seeded([
        # A: noisy across seeds (spread 0.08); pruning at 0.5 adds 0.01 per seed, at 0.25 about 0.10
        ("A", "dense", 1.0, 2021, 0.40), ("A", "dense", 1.0, 2022, 0.44), ("A", "dense", 1.0, 2023, 0.48),
        ("A", "magnitude", 0.5, 2021, 0.41), ("A", "magnitude", 0.5, 2022, 0.45), ("A", "magnitude", 0.5, 2023, 0.49),
        ("A", "magnitude", 0.25, 2021, 0.50), ("A", "magnitude", 0.25, 2022, 0.52),
        ("A", "magnitude", 0.25, 2023, 0.60),
        # B: steady (spread 0.01); +0.02 at 0.5 is beyond it, though within the old borrowed 0.05
        ("B", "dense", 1.0, 2021, 0.40), ("B", "dense", 1.0, 2022, 0.40), ("B", "dense", 1.0, 2023, 0.41),
        ("B", "magnitude", 0.5, 2021, 0.42), ("B", "magnitude", 0.5, 2022, 0.42), ("B", "magnitude", 0.5, 2023, 0.43),
        # C: one seed, no spread measured: the stand-in decides, and says so
        ("C", "dense", 1.0, 2021, 0.30), ("C", "magnitude", 0.5, 2021, 0.34),
    ])
    noise = seed_noise(grid)
    assert noise.spread["A"] == pytest.approx(0.08) and noise.spread["B"] == pytest.approx(0.01)
    assert noise.spread["C"] is None and noise.threshold("C") == SINGLE_SEED_STAND_IN
    assert "C not measured (1 seed" in noise.describe(["A", "B", "C"]) and "A 0.080 (3 seeds)" in noise.describe(["A"])
    table = paired(grid[grid["kind"] == "prune"], grid).set_index(["model", "target_density"])
    assert table.loc[("A", 0.5), "change"] == pytest.approx(0.01) and table.loc[("A", 0.5), "seeds"] == 3
    assert table.loc[("A", 0.25), "change"] == pytest.approx(0.10)
    curves = paired(grid[grid["kind"] == "prune"], grid)
    kept = {m: kept_down_to(curves[curves["model"] == m], noise.threshold(m)) for m in "ABC"}
    assert kept == {"A": 0.5, "B": None, "C": 0.5}
    # a pruned run is paired with the dense run of its own seed, not with the seed mean of the dense runs
    only_2023 = seeded([("A", "dense", 1.0, 2021, 0.40), ("A", "dense", 1.0, 2022, 0.44),
                        ("A", "dense", 1.0, 2023, 0.48), ("A", "magnitude", 0.5, 2023, 0.49)])
    single = paired(only_2023[only_2023["kind"] == "prune"], only_2023).iloc[0]
    assert single["change"] == pytest.approx(0.01) and single["dense_mse"] == pytest.approx(0.48)


def test_findings_say_each_models_spread_and_how_many_seeds_stand_behind_them(tmp_path):
    frame = study_table()
    more = [frame.assign(seed=seed, run_id=frame["run_id"] + f"-{seed}", mse=frame["mse"] + shift)
            for seed, shift in ((2022, 0.01), (2023, 0.03))]
    table = tables.prepare(pd.concat([frame, *more], ignore_index=True))
    from tsprune.report.render import findings_caption

    caption = findings_caption(table)
    assert "Autoformer 0.030 (3 seeds)" in caption and "paired by seed" in caption
    evidence = dict(zip(findings(table)["claim"], findings(table)["evidence"]))
    assert "(3 seeds)" in evidence["Magnitude pruning keeps accuracy to high sparsity"]
    assert "(3 seeds)" in evidence["Fine-tuning is needed (depgraph)"]
