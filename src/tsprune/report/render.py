"""Write the report: every figure as PNG and SVG, ``report.md`` and a self-contained ``report.html``.

The HTML embeds the PNGs as base64 and carries its own CSS, so it can be mailed or archived as one file. A figure
that fails to draw becomes a figure saying so (with a warning): a corner case in plotting must not cost the
report of a sweep that took hours.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd

from tsprune.report import recipes as recipe_report
from tsprune.report import tables
from tsprune.report.figures import FIGURES, frontier
from tsprune.models.registry import model_names, study_models
from tsprune.report.frontier import COSTS, pareto, points
from tsprune.report.readme import FINDINGS_FILE, README_END, README_START, readme_block, update_readme  # noqa: F401
from tsprune.report.findings import findings
from tsprune.report.seeds import seed_noise
from tsprune.report.style import STYLE, note_figure

PNG_DPI = 150

# A table cell as pandas hands it over: a number, a string, None or NaN.
Cell = Any

CAPTIONS = {
    "mse_vs_density": "Test MSE against density (share of all parameters kept, log scale) on the main grid, "
                      "before fine-tuning. Lines are seed means with the min–max spread shaded; solid lines are "
                      "unstructured methods, dashed structured ones; dotted horizontals are each model's dense MSE.",
    "speedup_vs_flops": "Measured latency speedup against FLOPs reduction (real FLOPs for structured pruning, "
                        "FLOPs of non-zero weights for unstructured). Points on the dash-dotted diagonal turn "
                        "every FLOP saved into time saved; masked weights on a dense engine stay near 1×.",
    "finetune": "Test MSE of pruned models with and without fine-tuning at every setting where a fine-tuned run "
                "exists; dashed segments mark the dense model's MSE.",
    "dataset_size": "Dense-model test MSE against the share of the training split used, one panel per model size.",
    "model_size": "Dense-model test MSE against parameter count, one line through each model's sizes.",
    "frontier": "Prune a large model or train a small one? Test MSE (seed mean, bars min–max over seeds) against "
                "non-zero parameters, effective FLOPs per window and latency at batch 1 and 32 (each point on its "
                "fastest engine, all timed on one machine by benchmarks/study/frontier_pass.py): squares are the "
                "study's dense models, dots their pruned variants, triangles the small-model ladder; the dashed "
                "step line is the Pareto front.",
}


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    format: Callable[[Cell], str]


@dataclass(frozen=True)
class Table:
    title: str
    caption: str
    columns: list[Column]
    frame: pd.DataFrame
    empty: str
    lead: bool = False  # shown before the figures


def figure_names() -> list[str]:
    """The stems of the figure files, in report order."""
    return list(FIGURES)


SPEED_CAPTION = ("Measured speedup against FLOPs reduction at full default size (d_model 512; Crossformer its own "
                 "defaults), batch 32, dense and pruned models timed in alternation. The weights are untrained: "
                 "accuracy does not enter here, and timing does not depend on the values. Filled markers: masked "
                 "weights on dense kernels; hollow: the same model on tsprune's sparse engine.")


def build_report(frame: pd.DataFrame, out_dir: Path, title: str = "tsprune sweep report", preface: str = "",
                 speed: pd.DataFrame | None = None, costs: pd.DataFrame | None = None) -> Path:
    """Write report.md, report.html and figures/*.png|svg for a sweep results table; returns report.md's path.

    ``preface`` (markdown paragraphs) opens the report. ``speed`` is a table of timings taken apart from the sweep
    (``tsprune.speed``): the speed figure and the time claims are then drawn from it, and it gets a table.
    ``costs`` is a frontier pass's table (``report.frontier``): the frontier's latencies and the dense FLOPs.
    """
    data = tables.prepare(frame)
    timing = tables.prepare(speed) if speed is not None else None
    out_dir = Path(out_dir)
    figure_dir = out_dir / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    captions = dict(CAPTIONS)
    for name in FIGURES:
        source = timing if timing is not None and name == "speedup_vs_flops" else data
        save_figure(source, name, figure_dir, costs if name == "frontier" else None)
    if timing is not None:
        captions["speedup_vs_flops"] = SPEED_CAPTION
    report_tables = build_tables(data, timing, costs)
    header = tables.header(data)
    markdown_path = out_dir / "report.md"
    markdown_path.write_text(to_markdown(title, header, report_tables, preface, captions), encoding="utf-8")
    (out_dir / FINDINGS_FILE).write_text(findings_markdown(report_tables[0]), encoding="utf-8")
    (out_dir / "report.html").write_text(to_html(title, header, report_tables, figure_dir, preface, captions),
                                         encoding="utf-8")
    return markdown_path


def save_figure(data: pd.DataFrame, name: str, figure_dir: Path, costs: pd.DataFrame | None = None) -> None:
    """Draw one figure under the report style and save it twice; SVGs carry no date so reruns are identical.
    ``costs`` goes to the frontier figure (its latencies)."""
    with matplotlib.rc_context(STYLE):
        try:
            fig = frontier(data, costs) if name == "frontier" else FIGURES[name](data)
        except Exception as error:  # noqa: BLE001 - any plotting bug becomes a visible note, see module doc
            warnings.warn(f"figure {name!r} failed: {error!r}", RuntimeWarning, stacklevel=2)
            fig = note_figure(name, f"this figure failed to draw:\n{tables.error_gist(repr(error), 120)}")
        fig.savefig(figure_dir / f"{name}.png", dpi=PNG_DPI, metadata={"Software": None})
        fig.savefig(figure_dir / f"{name}.svg", metadata={"Date": None})


# --------------------------------------------------------------------------------------------------- tables


def number(digits: int = 4) -> Callable[[Cell], str]:
    return lambda v: "—" if pd.isna(v) else f"{float(v):.{digits}g}"


def fixed(digits: int, suffix: str = "") -> Callable[[Cell], str]:
    return lambda v: "—" if pd.isna(v) else f"{float(v):.{digits}f}{suffix}"


def signed_percent(value: Cell) -> str:
    return "—" if pd.isna(value) else f"{float(value) * 100:+.1f}%"


def count(value: Cell) -> str:
    return "—" if pd.isna(value) else f"{int(value)}"


def text(value: Cell) -> str:
    return "—" if value is None or (not isinstance(value, str) and pd.isna(value)) else tables.format_value(value)


def findings_caption(data: pd.DataFrame) -> str:
    """What stands behind the findings: the paired criterion and each model's measured seed spread."""
    grid = tables.main_grid(tables.done(data), data)
    noise = seed_noise(grid)
    return (f"Each claim of the study, decided by the test beside it on this table's runs (main grid). MSE "
            f"differences are paired by seed (a pruned run minus the dense run of its seed), averaged over seeds, "
            f"and count only when larger than the model's seed spread: the range of its dense test MSE over the "
            f"seeds. Measured spread: {noise.describe(study_models()) or 'no dense runs'}. 'open': the runs the "
            f"test needs are not all finished.")


def findings_table(data: pd.DataFrame, timing: pd.DataFrame | None = None,
                   costs: pd.DataFrame | None = None) -> Table:
    return Table("Findings", findings_caption(data),
                 [Column("claim", "claim of the study", text), Column("verdict", "verdict", text),
                  Column("evidence", "evidence (from the results table)", text), Column("runs", "runs", count),
                  Column("test", "test", text)],
                 findings(data, timing, costs), "No runs.", lead=True)


def speed_table(timing: pd.DataFrame) -> Table:
    frame = timing.assign(flops_reduction=tables.flops_reduction(timing))
    columns = [Column("model", "model", text), Column("series", "method", text), Column("engine", "engine", text),
               Column("target_density", "density target", number(3)),
               Column("density_total", "density (all params)", number(3)),
               Column("flops_reduction", "FLOPs reduction", fixed(1, "×"))]
    for key in [c for c in timing.columns if c.startswith("speedup_b")]:
        size = key.removeprefix("speedup_b")
        columns += [Column(f"latency_dense_b{size}_ms", f"dense ms (batch {size})", fixed(1)),
                    Column(f"latency_b{size}_ms", f"pruned ms (batch {size})", fixed(1)),
                    Column(key, f"speedup (batch {size})", fixed(2, "×"))]
    return Table("Speed at full size", SPEED_CAPTION.replace("Measured speedup against FLOPs reduction", "Latency")
                 .replace(", batch 32", ""), columns, frame, "No timings.")


def findings_markdown(table: Table) -> str:
    """The findings table as a results page carries it (``tsprune report --readme PAGE``)."""
    return f"{table.caption}\n\n{md_table(table)}\n"


def frontier_table(data: pd.DataFrame, costs: pd.DataFrame | None) -> Table:
    """Every point of the frontier with its costs, whether it is on a Pareto front, and the runs behind it."""
    frame = points(data, costs)
    marks = {cost: pareto(frame, cost) for cost in COSTS}
    frame = frame.assign(spread=frame["hi"] - frame["lo"], front=[
        ", ".join(name for name, short in FRONT_NAMES.items() if marks[short].iloc[i]) for i in range(len(frame))])
    return Table(
        "Frontier points", "Each configuration: test MSE as the seed mean and its min–max spread over seeds, its "
        "costs, the fronts it is on (nothing else at most as costly is more accurate) and every run behind it. "
        "Latency: the fastest engine measured for the point (benchmarks/study/frontier_pass.py), '—' when unmeasured.",
        [Column("group", "group", text), Column("model", "model", text), Column("size", "size", text),
         Column("method", "method", text), Column("target_density", "density", number(3)),
         Column("finetune_epochs", "fine-tune epochs", text), Column("seeds", "seeds", count),
         Column("mse", "MSE", number()), Column("spread", "spread", number(3)),
         Column("nonzero_params", "non-zero params", fixed(0)), Column("flops_effective", "eff. FLOPs", fixed(0)),
         Column("latency_b1_ms", "ms (b1)", fixed(2)), Column("latency_b32_ms", "ms (b32)", fixed(1)),
         Column("engine", "engine", text), Column("front", "on the front of", text),
         Column("run_ids", "runs", text)],
        frame, "No frontier points.")


def recipes_table(data: pd.DataFrame) -> Table:
    """Issue 33: every recipe at 10.7% and 5% density, per model and size, paired with the dense runs."""
    frame = recipe_report.summary(data)
    frame = frame.assign(spread=frame["hi"] - frame["lo"])
    ranked = [f"{size}: " + ", ".join(f"{name} {score:+.1%}" for name, score in recipe_report.ranking(
        frame, size, recipe_report.DENSITIES[0])) for size in frame["size"].unique()]
    return Table(
        "Recipes at high sparsity",
        "Each recipe (tsprune/prune/recipes.py) at 10.7% and 5% density: test MSE as the seed mean with its "
        "min–max spread over seeds, the dense MSE of the same seeds, the paired change (mean over seeds of pruned "
        "minus dense) and the machine minutes of one run (its prune_seconds: pruning, fine-tuning, evaluation and any "
        "timing taken in the run). Recipes ranked at "
        "10.7% by the mean relative change over models, one-epoch budget: " + ("; ".join(ranked) or "none yet") + ".",
        [Column("size", "size", text), Column("model", "model", text), Column("recipe", "recipe", text),
         Column("target_density", "density", number(3)), Column("finetune_epochs", "epochs", text),
         Column("seeds", "seeds", count), Column("mse", "MSE", number()), Column("spread", "spread", number(3)),
         Column("dense_mse", "dense MSE", number()), Column("change", "change", number(3)),
         Column("minutes", "minutes", fixed(1)), Column("run_ids", "runs", text)],
        frame, "No recipe runs.")


FRONT_NAMES = {"params": "nonzero_params", "FLOPs": "flops_effective", "b1": "latency_b1_ms", "b32": "latency_b32_ms"}


def build_tables(data: pd.DataFrame, timing: pd.DataFrame | None = None,
                 costs: pd.DataFrame | None = None) -> list[Table]:
    task = [Column("model", "model", text), Column("dataset", "dataset", text), Column("pred_len", "horizon", text),
            Column("series", "method", text)]  # the method and its variant, e.g. depgraph (taylor)
    grid = tables.grid_description(data)
    best = Table(
        "Lowest density within 5% of dense MSE",
        f"Per task and method (each variant of a method apart, e.g. depgraph (taylor): options other than its "
        f"defaults), the lowest target density whose seed-mean test MSE stays within "
        f"{tables.TOLERANCE:.0%} of the dense MSE (main grid: {grid}; no fine-tuning). '—' means no density did.",
        task + [Column("target_density", "target density", number(3)),
                Column("density_total", "density (all params)", number(3)), Column("mse", "MSE", number()),
                Column("dense_mse", "dense MSE", number()), Column("mse_change", "ΔMSE", signed_percent),
                Column("speedup", "speedup", fixed(2, "×")), Column("flops_ratio", "FLOPs ratio", number(3)),
                Column("flops_effective_ratio", "effective FLOPs ratio", number(3)), Column("runs", "runs", count)],
        tables.best_within(data), "No pruned runs on the main grid.")
    summary = Table(
        "Summary", f"Seed means per task, method, engine, target density and fine-tuning epochs (main grid: {grid}). "
                   "The sparse engine runs the same pruned model on sparse kernels: same MSE, its own speedup.",
        task + [Column("engine", "engine", text), Column("target_density", "target density", number(3)),
                Column("finetune_epochs", "fine-tune epochs", text), Column("mse", "MSE", number()),
                Column("density_total", "density (all params)", number(3)),
                Column("flops_ratio", "FLOPs ratio", number(3)),
                Column("flops_effective_ratio", "effective FLOPs ratio", number(3)),
                Column("speedup", "speedup", fixed(2, "×")), Column("runs", "runs", count)],
        tables.summary(data), "No completed runs on the main grid.")
    failed = Table(
        "Failed runs", "Runs that did not finish, with the last line of their error.",
        [Column("model", "model", text), Column("dataset", "dataset", text), Column("pred_len", "horizon", text),
         Column("size", "size", text), Column("series", "method", text),
         Column("target_density", "target density", number(3)), Column("seed", "seed", text),
         Column("status", "status", text), Column("error", "error", text), Column("run_id", "run", text)],
        tables.failed(data), "No failed runs.")
    spent = Table(
        "Compute spent", "Summed wall time of the runs (training, pruning, fine-tuning, evaluation and any timing "
                         "taken in the run) per model, grid, run kind and device. Thread-hours weigh each run by "
                         "its thread count: core-hours when runs had their cores to themselves, an upper bound when "
                         "parallel workers shared them. Training hours sum the epochs wherever they ran: more than the "
                         "wall time where a training was resumed after a stopped process (wall time is the last "
                         "process's) or a dense run was copied in (the demo's shipped models). Measuring passes "
                         "and plans are not runs and are not counted.",
        [Column("model", "model", text), Column("grid", "grid", text), Column("kind", "kind", text),
         Column("device", "device", text), Column("runs", "runs", count),
         Column("wall_hours", "wall hours", fixed(2)), Column("thread_hours", "thread-hours", fixed(2)),
         Column("training_hours", "training hours", fixed(2))],
        tables.compute(data), "No runs.")
    speed = [speed_table(timing)] if timing is not None else []
    if timing is not None:  # the runs' own timings are of other (small) models: time is the speed table's
        best, summary = (dataclasses.replace(table, columns=[c for c in table.columns if c.key != "speedup"],
                                             caption=table.caption + " Speed: see the speed table, at full size.")
                         for table in (best, summary))
    small = data["model"].isin(model_names("small")).any()
    front = [frontier_table(data, costs)] if small else []
    recipe = [recipes_table(data)] if not recipe_report.summary(data).empty else []  # 10.7% or 5% runs only
    return [findings_table(data, timing, costs), *speed, *front, *recipe, best, summary, spent, failed]


def cells(table: Table) -> list[list[str]]:
    return [[column.format(row[column.key]) for column in table.columns] for _, row in table.frame.iterrows()]


# --------------------------------------------------------------------------------------------------- markdown


def md_cell(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict], columns: Sequence[str], digits: int = 4) -> str:
    """A plain markdown table of dict rows (missing values as '-', floats to ``digits`` significant digits)."""
    def cell(value: object) -> str:
        if value is None:
            return "-"
        return f"{value:.{digits}g}" if isinstance(value, float) else md_cell(str(value))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def md_table(table: Table) -> str:
    rows = cells(table)
    if not rows:
        return f"_{table.empty}_"
    lines = ["| " + " | ".join(md_cell(c.header) for c in table.columns) + " |",
             "|" + "|".join("---" if c.format is text else "---:" for c in table.columns) + "|"]
    lines += ["| " + " | ".join(md_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(title: str, header: list[tuple[str, str]], report_tables: list[Table], preface: str = "",
                captions: dict[str, str] = CAPTIONS) -> str:
    parts = [f"# {title}", "", *([preface.strip(), ""] if preface else []),
             *(f"- **{label}**: {md_cell(value)}" for label, value in header), ""]
    for table in (t for t in report_tables if t.lead):
        parts += [f"## {table.title}", "", table.caption, "", md_table(table), ""]
    parts += ["## Figures", ""]
    for name in FIGURES:
        parts += [f"### {name.replace('_', ' ')}", "", f"![{name}](figures/{name}.png)", "", captions[name], "",
                  f"SVG: [figures/{name}.svg](figures/{name}.svg)", ""]
    for table in (t for t in report_tables if not t.lead):
        parts += [f"## {table.title}", "", table.caption, "", md_table(table), ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------------- html

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; line-height: 1.45; }
h1 { font-size: 1.6rem; border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; } h3 { font-size: 1.05rem; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; font-family: ui-monospace, monospace; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, p.caption { color: #555; font-size: .92rem; }
table { border-collapse: collapse; font-size: .88rem; margin: .6rem 0; }
th, td { border-bottom: 1px solid #e3e3e3; padding: .3rem .6rem; text-align: right; vertical-align: top; }
th { background: #f5f5f5; } td.text, th.text { text-align: left; }
tr:hover td { background: #fafafa; } td.error { font-family: ui-monospace, monospace; max-width: 40rem; }
nav a { margin-right: 1rem; }
"""


def html_table(table: Table) -> str:
    rows = cells(table)
    if not rows:
        return f'<p class="caption"><em>{html.escape(table.empty)}</em></p>'

    def css(column: Column) -> str:
        return ("text error" if column.key == "error" else "text") if column.format is text else "num"

    head = "".join(f'<th class="{css(c)}">{html.escape(c.header)}</th>' for c in table.columns)
    body = "\n".join("<tr>" + "".join(f'<td class="{css(c)}">{html.escape(v)}</td>' for c, v in zip(table.columns, row))
                     + "</tr>" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def to_html(title: str, header: list[tuple[str, str]], report_tables: list[Table], figure_dir: Path,
            preface: str = "", captions: dict[str, str] = CAPTIONS) -> str:
    meta = "\n".join(f"<dt>{html.escape(label)}</dt><dd>{html.escape(value)}</dd>" for label, value in header)
    nav = " ".join(f'<a href="#{name}">{name.replace("_", " ")}</a>' for name in FIGURES)
    head = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>")
    intro = "".join(f"<p>{html.escape(paragraph.strip())}</p>\n" for paragraph in preface.split("\n\n")
                    if paragraph.strip())
    parts = [head, f"<h1>{html.escape(title)}</h1>", intro, f'<dl class="meta">\n{meta}\n</dl>',
             f"<nav>{nav}</nav>"]
    for table in (t for t in report_tables if t.lead):
        parts += [f"<h2>{html.escape(table.title)}</h2>", f'<p class="caption">{html.escape(table.caption)}</p>',
                  html_table(table)]
    parts.append("<h2>Figures</h2>")
    for name in FIGURES:
        encoded = base64.b64encode((figure_dir / f"{name}.png").read_bytes()).decode("ascii")
        parts.append(f'<figure id="{name}">\n<h3>{name.replace("_", " ")}</h3>\n'
                     f'<img alt="{name}" src="data:image/png;base64,{encoded}">\n'
                     f"<figcaption>{html.escape(captions[name])}</figcaption>\n</figure>")
    for table in (t for t in report_tables if not t.lead):
        parts += [f"<h2>{html.escape(table.title)}</h2>", f'<p class="caption">{html.escape(table.caption)}</p>',
                  html_table(table)]
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)
