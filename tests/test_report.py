"""Sweep reports from synthetic results tables: files, valid images, self-contained HTML and the tables' picks."""

from __future__ import annotations

import base64
import io
import re
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from tsprune.report import build_report, figure_names, tables
from tsprune.report.figures import FIGURES
from tsprune.report.render import build_tables, cells

FIGURE_NAMES = ["mse_vs_density", "speedup_vs_flops", "finetune", "dataset_size", "model_size", "frontier"]
OOM = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"

# Per model: dense MSE and parameter count at the "default" size; "small" is 4x smaller and a bit worse.
MODELS = {"transformer": (0.90, 10.5e6), "informer": (0.95, 11.3e6)}
# Relative MSE increase after pruning (no fine-tuning) per method and target density.
DAMAGE = {"magnitude": {0.5: 0.01, 0.2: 0.04, 0.1: 0.25}, "depgraph": {0.8: 0.04, 0.5: 0.20}}


def run_row(**values) -> dict:
    """One results row with plausible defaults for every column; ``values`` override them."""
    row = {"run_id": "r", "parent_id": None, "kind": "dense", "status": "done", "error": None,
           "model": "transformer", "dataset": "ETTh1", "pred_len": 96, "seed": 0, "size": "default",
           "train_fraction": 1.0, "method": "dense", "target_density": 1.0, "finetune_epochs": 0, "engine": "dense",
           "mse": 1.0, "mae": 0.7, "mse_raw": 9.0, "mae_raw": 2.1, "dense_mse": 1.0, "dense_mae": 0.7,
           "params": 1e7, "nonzero_params": 1e7, "params_dense": 1e7, "density_prunable": 1.0, "density_total": 1.0,
           "flops": 2e9, "flops_dense": 2e9, "flops_ratio": 1.0, "flops_effective": 2e9, "flops_effective_ratio": 1.0,
           "latency_ms": 10.0, "latency_dense_ms": 10.0, "speedup": 1.0, "train_seconds": 60.0,
           "prune_seconds": None, "wall_seconds": 61.0, "epochs_run": 10, "config_json": "{}", "torch": "2.13.0",
           "threads": 2, "device": "cpu", "git_rev": "9a71ab3", "tsprune_version": "0.1.0",
           "started_at": "2025-01-01T00:00:00", "finished_at": "2025-01-01T00:01:01"}
    row.update(values)
    if row["kind"] == "dense" and "dense_mse" not in values:
        row["dense_mse"] = row["mse"]
    return row


def pruned_row(dense: dict, method: str, density: float, damage: float, **values) -> dict:
    """A pruned child of ``dense``: unstructured keeps FLOPs but not effective FLOPs, structured shrinks both."""
    structured = method == "depgraph"
    informer = dense["model"] == "informer"  # its attention FLOPs are not in prunable weights: less to gain
    flops_ratio = 0.1 + 0.9 * density if structured else 1.0
    effective = flops_ratio if structured else (0.25 if informer else 0.15) + (0.75 if informer else 0.85) * density
    speedup = (0.75 if informer else 0.9) / flops_ratio if structured else 0.97 + 0.01 * dense["seed"] - 0.03 * informer
    row = dict(dense, run_id=f"{dense['run_id']}-{method}-{density}", parent_id=dense["run_id"], kind="prune",
               method=method, target_density=density, mse=dense["mse"] * (1 + damage), dense_mse=dense["mse"],
               dense_mae=dense["mae"], density_total=density if structured else 0.1 + 0.9 * density,
               density_prunable=density, flops_ratio=flops_ratio, flops_effective_ratio=effective,
               flops=dense["flops"] * flops_ratio, flops_effective=dense["flops"] * effective,
               speedup=speedup, latency_ms=dense["latency_ms"] / speedup, prune_seconds=3.0, train_seconds=0.0)
    row["params"] = dense["params"] * (density if structured else 1.0)
    row["nonzero_params"] = dense["params"] * row["density_total"]
    row.update(values)
    return row


def synthetic_frame() -> pd.DataFrame:
    """2 models x 2 seeds: dense runs at 2 sizes and 2 train fractions, magnitude at 3 densities, depgraph at 2,
    one fine-tuned run per model and one out-of-memory failure."""
    rows = []
    for model, (mse, params) in MODELS.items():
        for seed in (0, 1):
            noise = 0.01 * (seed - 0.5)
            for size, fraction in (("default", 1.0), ("default", 0.5), ("small", 1.0)):
                worse = (0.05 if size == "small" else 0.0) + (0.12 if fraction < 1 else 0.0)
                dense = run_row(run_id=f"{model}-{size}-{fraction}-{seed}", model=model, seed=seed, size=size,
                                train_fraction=fraction, mse=mse * (1 + worse) + noise,
                                params=params / (4 if size == "small" else 1))
                dense["params_dense"] = dense["nonzero_params"] = dense["params"]
                rows.append(dense)
                if (size, fraction) != ("default", 1.0):
                    continue
                for method, damages in DAMAGE.items():
                    for density, damage in damages.items():
                        if (model, method, density, seed) == ("informer", "depgraph", 0.5, 1):
                            rows.append(pruned_row(dense, method, density, damage, status="failed", error=OOM,
                                                   mse=np.nan, mae=np.nan, speedup=np.nan))
                        else:
                            rows.append(pruned_row(dense, method, density, damage + noise))
                rows.append(pruned_row(dense, "magnitude", 0.1, 0.04, finetune_epochs=3,
                                       run_id=f"{model}-ft-{seed}"))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a figure that falls back to its error note warns: fail instead
        path = build_report(synthetic_frame(), out, title="synthetic sweep")
    assert path == out / "report.md"
    return out


def assert_valid_figures(out: Path) -> None:
    for name in FIGURE_NAMES:
        image = matplotlib.image.imread(out / "figures" / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400 and image.shape[2] in (3, 4)
        assert image.std() > 0.01, f"{name}.png is blank"
        root = ET.parse(out / "figures" / f"{name}.svg").getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"


def test_figure_names():
    assert figure_names() == FIGURE_NAMES


def test_report_files_and_figures(report):
    assert (report / "report.md").is_file() and (report / "report.html").is_file()
    assert_valid_figures(report)
    markdown = (report / "report.md").read_text()
    assert markdown.startswith("# synthetic sweep")
    for name in FIGURE_NAMES:
        assert f"(figures/{name}.png)" in markdown
    assert "9a71ab3" in markdown and "2.13.0" in markdown
    assert "36 (35 done, 1 failed)" in markdown  # 2 models x 2 seeds x (3 dense + 5 pruned + 1 fine-tuned)


def test_html_is_self_contained(report):
    page = (report / "report.html").read_text()
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page)
    assert links and all(link.startswith(("data:", "#")) for link in links)
    assert "<link" not in page and "url(" not in page and "@import" not in page
    assert page.count('src="data:image/png;base64,') == len(FIGURE_NAMES)
    for name in FIGURE_NAMES:  # each figure embedded byte for byte, in its own <figure>
        embedded = re.search(rf'<figure id="{name}">.*?base64,([A-Za-z0-9+/=]+)"', page, re.DOTALL).group(1)
        assert base64.b64decode(embedded) == (report / "figures" / f"{name}.png").read_bytes()


def test_failed_runs_are_listed(report):
    for page in ("report.md", "report.html"):
        text = (report / page).read_text()
        assert "CUDA out of memory. Tried to allocate 2.00 GiB" in text
    failed = tables.failed(tables.prepare(synthetic_frame()))
    assert failed[["model", "method", "target_density"]].values.tolist() == [["informer", "depgraph", 0.5]]


def test_compute_table_sums_wall_and_thread_hours(report):
    frame = synthetic_frame()
    frame.loc[frame["model"] == "informer", "threads"] = 4  # thread-hours weigh each run by its own threads
    resumed = frame.index[(frame["model"] == "transformer") & (frame["size"] == "small")][0]
    frame.loc[resumed, ["train_seconds", "wall_seconds"]] = [600.0, 200.0]  # its last process: 200 s of 600
    spent = tables.compute(tables.prepare(frame))
    dense = frame[frame["kind"] == "dense"]
    main = dense[(dense["size"] == "default") & (dense["train_fraction"] == 1.0)]
    row = spent[(spent["model"] == "informer") & (spent["grid"] == "main") & (spent["kind"] == "dense")].iloc[0]
    informer_main = main[main["model"] == "informer"]
    assert row["runs"] == len(informer_main) == 2
    assert row["wall_hours"] == pytest.approx(informer_main["wall_seconds"].sum() / 3600)
    assert row["thread_hours"] == pytest.approx(4 * row["wall_hours"])
    off = spent[(spent["model"] == "transformer") & (spent["grid"] == "size x data")].iloc[0]
    assert off["runs"] == 4 and off["thread_hours"] == pytest.approx(2 * off["wall_hours"])  # 2 sizes/fractions x 2
    assert off["wall_hours"] == pytest.approx((3 * 61.0 + 200.0) / 3600)  # what the records measured
    assert off["training_hours"] == pytest.approx((3 * 60.0 + 600.0) / 3600)  # the resumed run's every epoch
    total = spent.iloc[-1]
    assert total["model"] == "all" and total["runs"] == len(frame) == spent["runs"].iloc[:-1].sum()
    assert total["thread_hours"] == pytest.approx((frame["wall_seconds"] * frame["threads"]).sum() / 3600)
    assert total["training_hours"] == pytest.approx(frame["train_seconds"].sum() / 3600)
    assert "## Compute spent" in (report / "report.md").read_text()


def test_best_within_tolerance_picks_lowest_qualifying_density():
    """Hand-made seed MSEs: the pick uses seed means, skips a non-monotone dip, and reports 'none' honestly."""
    dense = [run_row(run_id=f"d{s}", seed=s, mse=m) for s, m in ((0, 0.98), (1, 1.02))]  # dense mean 1.00
    cases = {("magnitude", 0.5): (1.00, 1.02),   # mean 1.01: within
             ("magnitude", 0.2): (1.00, 1.08),   # mean 1.04: within although seed 1 is +8%  -> the pick
             ("magnitude", 0.1): (1.10, 1.30),   # mean 1.20: out
             ("depgraph", 0.7): (1.02, 1.04),    # mean 1.03: within -> the pick
             ("depgraph", 0.5): (1.08, 1.12),    # mean 1.10: out
             ("magnitude-layerwise", 0.5): (1.06, 1.07)}  # out: no density qualifies
    rows = list(dense)
    for (method, density), mses in cases.items():
        for parent, mse in zip(dense, mses):
            rows.append(pruned_row(parent, method, density, 0.0, mse=mse))
    rows.append(pruned_row(dense[0], "magnitude", 0.05, 0.0, mse=1.01, finetune_epochs=5))  # fine-tuned: ignored
    rows.append(pruned_row(dense[0], "depgraph", 0.3, 0.0, mse=np.nan, status="failed", error="boom"))
    best = tables.best_within(tables.prepare(pd.DataFrame(rows))).set_index("method")
    assert best.loc["magnitude", "target_density"] == 0.2
    assert best.loc["magnitude", "mse"] == pytest.approx(1.04)
    assert best.loc["magnitude", "mse_change"] == pytest.approx(0.04)
    assert best.loc["depgraph", "target_density"] == 0.7
    assert best.loc["depgraph", "speedup"] == pytest.approx(0.9 / (0.1 + 0.9 * 0.7))
    assert np.isnan(best.loc["magnitude-layerwise", "target_density"])


def test_sparse_engine_twins_count_once_for_accuracy():
    """A sparse-engine run repeats its dense-engine twin's MSE: accuracy views keep one of them (a sparse run with
    no twin stays), the summary and the speedup data keep both."""
    dense = run_row(run_id="d")
    masked = pruned_row(dense, "magnitude", 0.2, 0.04)
    twin = dict(masked, run_id="s", engine="sparse", speedup=2.0)
    alone = dict(pruned_row(dense, "magnitude", 0.1, 0.25), run_id="s2", engine="sparse", speedup=3.0)
    frame = tables.prepare(pd.DataFrame([dense, masked, twin, alone]))
    assert sorted(tables.accuracy_view(frame)["run_id"]) == ["d", masked["run_id"], "s2"]
    summary = tables.summary(frame)
    assert sorted(zip(summary["engine"], summary["target_density"])) == [
        ("dense", 0.2), ("dense", 1.0), ("sparse", 0.1), ("sparse", 0.2)]
    best = tables.best_within(frame).set_index("method")
    assert best.loc["magnitude", "runs"] == 1 and best.loc["magnitude", "speedup"] == pytest.approx(masked["speedup"])


def test_only_dense_runs_still_make_every_file(tmp_path):
    frame = pd.DataFrame([run_row(run_id=f"{m}-{s}", model=m, seed=s, mse=0.9 + 0.01 * s)
                          for m in MODELS for s in (0, 1)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_report(frame, tmp_path)
    assert_valid_figures(tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert "No failed runs." in markdown and "No pruned runs on the main grid." in markdown


def sparse_cases() -> dict[str, pd.DataFrame]:
    full = synthetic_frame()
    informer_failed = full.assign(status=np.where(full["model"] == "informer", "failed", full["status"]))
    nan_metrics = full.assign(speedup=np.nan, flops_effective_ratio=np.nan, density_total=np.nan, params=np.nan)
    minimal = full[["model", "method", "target_density", "mse", "status"]]  # most columns missing
    return {"empty": full.iloc[:0], "one seed": full[full["seed"] == 0], "informer all failed": informer_failed,
            "nan metrics": nan_metrics, "minimal columns": minimal, "all failed": full.assign(status="failed"),
            "all fine-tuned": full[full["finetune_epochs"].eq(3) | full["kind"].eq("dense")]}


@pytest.mark.parametrize("case", list(sparse_cases()))
def test_degenerate_tables_draw_every_figure(case):
    """Every figure draws (tiny PNG, in memory) and every table builds without a warning."""
    data = tables.prepare(sparse_cases()[case])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for table in build_tables(data):
            cells(table)
        tables.header(data)
        for draw in FIGURES.values():
            draw(data).savefig(io.BytesIO(), format="png", dpi=20)


def test_a_separate_speed_table_takes_the_speed_columns():
    """With timings taken apart from the sweep (the demo's full-size speed part), the accuracy tables drop their
    own speedup column (the runs' models are small) and say where speed is; without it, they keep it."""
    data = tables.prepare(synthetic_frame())
    speed = tables.prepare(synthetic_frame().assign(mse=np.nan))

    def speedup_columns(tables_: list) -> dict[str, bool]:
        return {t.title: any(c.key == "speedup" for c in t.columns) for t in tables_
                if t.title in ("Summary", "Lowest density within 5% of dense MSE")}

    assert list(speedup_columns(build_tables(data)).values()) == [True, True]
    with_speed = build_tables(data, speed)
    assert list(speedup_columns(with_speed).values()) == [False, False]
    assert any(t.title == "Speed at full size" for t in with_speed)


def variant_frame() -> pd.DataFrame:
    """One dense model pruned by DepGraph at L2 importance (the default: no variant) and at Taylor importance, with
    different damage, plus magnitude: the two DepGraph grids must stay two series."""
    dense = run_row(run_id="d", mse=1.0)
    rows = [dense]
    for density, l2, taylor in ((0.8, 0.02, 0.30), (0.5, 0.04, 0.60)):
        rows.append(pruned_row(dense, "depgraph", density, l2))
        rows.append(pruned_row(dense, "depgraph", density, taylor, variant="importance=taylor",
                               run_id=f"d-depgraph-taylor-{density}"))
    rows.append(pruned_row(dense, "magnitude", 0.5, 0.01))
    return pd.DataFrame(rows)


def test_series_labels_name_a_method_and_its_variant():
    assert tables.series_label("depgraph", "importance=taylor") == "depgraph (taylor)"
    assert tables.series_label("depgraph", "calibration_windows=4,importance=taylor") == (
        "depgraph (calibration_windows=4, taylor)")
    assert tables.series_label("sparsegpt", "damping=0.01") == "sparsegpt (damping=0.01)"
    assert tables.series_label("magnitude", "include_fourier=True") == "magnitude (include_fourier=True)"
    for blank in ("", None, np.nan):
        assert tables.series_label("wanda", blank) == "wanda"
    labels = tables.prepare(variant_frame()).drop_duplicates("series").set_index("run_id")["series"]
    # the default variant is spelt out only where its method has another variant in the table
    assert sorted(labels) == ["dense", "depgraph (l2)", "depgraph (taylor)", "magnitude"]
    alike = pd.DataFrame({"method": ["wanda", "wanda", "wanda"], "variant": ["comparison=layer", "other=layer", ""]})
    assert list(tables.series_labels(alike)) == [  # shortened alike: spelt out in full, so no two series merge
        "wanda (comparison=layer)", "wanda (other=layer)", "wanda (row)"]


def test_method_variants_are_separate_series_in_tables_and_figures():
    data = tables.prepare(variant_frame())
    best = tables.best_within(data).set_index("series")
    assert sorted(best.index) == ["depgraph (l2)", "depgraph (taylor)", "magnitude"]
    assert best.loc["depgraph (l2)", "target_density"] == 0.5  # +4%: within 5%
    assert np.isnan(best.loc["depgraph (taylor)", "target_density"])  # +30% already: none (pooled: 0.8 would pass)
    assert best.loc["depgraph (taylor)", "variant"] == "importance=taylor"
    summary = tables.summary(data)
    depgraph = summary[summary["method"] == "depgraph"]
    assert len(depgraph) == 4 and (depgraph["runs"] == 1).all()
    assert depgraph.set_index(["series", "target_density"])["mse"].to_dict() == pytest.approx(
        {("depgraph (l2)", 0.8): 1.02, ("depgraph (l2)", 0.5): 1.04, ("depgraph (taylor)", 0.8): 1.3,
         ("depgraph (taylor)", 0.5): 1.6})
    rendered = [row for table in build_tables(data) for row in cells(table)]
    assert any("depgraph (taylor)" in row for row in rendered) and any("depgraph (l2)" in row for row in rendered)
    fig = FIGURES["mse_vs_density"](data)
    curves = [line for ax in fig.axes for line in ax.get_lines()
              if len(line.get_xdata()) == 2 and line.get_marker() not in ("None", "")]  # not the dense level
    assert len(curves) == 2  # one line per DepGraph variant (magnitude has one density here)
    assert sorted(tuple(sorted(line.get_ydata())) for line in curves) == [
        pytest.approx((1.02, 1.04)), pytest.approx((1.3, 1.6))]  # each variant's own MSEs, not their mean
    assert len({line.get_marker() for line in curves}) == 2
    labels = {text.get_text() for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
              for text in legend.get_texts()}
    assert {"depgraph (l2), structured", "depgraph (taylor), structured", "magnitude, unstructured"} <= labels


def test_findings_judge_the_studys_settings_only():
    """The study's claims are about its method settings: a Taylor-importance DepGraph grid in the same table
    changes no finding's numbers."""
    with_variant = tables.prepare(variant_frame())
    without = tables.prepare(variant_frame().query("variant != 'importance=taylor'"))
    from tsprune.report.findings import findings

    assert findings(with_variant).equals(findings(without))
