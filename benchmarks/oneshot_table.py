"""Issue 19's comparison table from a sweep's results table: test MSE without fine-tuning per model, method and
density, with each run's pruning time and how many prunable layers it emptied.

    python benchmarks/oneshot_table.py RESULTS.parquet [--readme docs/results/oneshot.md --block oneshot-mini]

Reads only the results table (``tsprune results DIR --export``), so the same table always gives the same text.
``--readme`` replaces the block between ``<!-- tsprune BLOCK start -->`` and ``<!-- tsprune BLOCK end -->``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable, Optional

import pandas as pd
import typer

from tsprune.errors import TsPruneError
from tsprune.report.tables import series_labels
from tsprune.runtime import atomic_write
from tsprune.sweep.results import load_results, read_results

METHOD_ORDER = ("magnitude", "lamp", "wanda", "sparsegpt", "depgraph")


def _cell(row: pd.Series) -> str:
    if row["status"] != "done":
        return "failed"
    emptied = row.get("emptied_layers")
    empty = "" if emptied is None or pd.isna(emptied) else f", {int(emptied)} emptied"
    seconds = row.get("method_seconds")
    took = "" if seconds is None or pd.isna(seconds) else f" ({seconds:.1f} s{empty})"
    return f"{row['mse']:.3f}{took}"


def comparison(frame: pd.DataFrame) -> str:
    """Markdown: one row per model and method, one column per target density (largest first)."""
    prune = frame[(frame["kind"] == "prune") & (frame["finetune_epochs"].fillna(0) == 0)].copy()
    if prune.empty:
        raise TsPruneError("the results table has no prune runs without fine-tuning")
    prune["name"] = series_labels(prune)  # the report's series: a method and its variant, e.g. depgraph (taylor)
    prune["density"] = prune["target_density"].round(3)
    densities = sorted(prune["density"].unique(), reverse=True)
    dense = frame[frame["kind"] == "dense"].set_index("run_id")["mse"]
    order = {name: i for i, name in enumerate(METHOD_ORDER)}
    lines = ["| model | dense MSE | method | " + " | ".join(f"density {d:g}" for d in densities) + " |",
             "|---|---|---|" + "---|" * len(densities)]
    for model, rows in prune.groupby("model", sort=True):
        parent = rows["parent_id"].iloc[0]
        series = rows[["method", "name"]].drop_duplicates()
        names = [name for _, name in sorted(zip(series["method"].map(lambda m: order.get(m, 99)), series["name"]))]
        for i, name in enumerate(names):
            mine = rows[rows["name"] == name].set_index("density")
            cells = [_cell(mine.loc[d]) if d in mine.index else "" for d in densities]
            head = f"{model} | {dense.get(parent, float('nan')):.3f}" if i == 0 else " | "
            lines.append(f"| {head} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def replace_block(readme: Path, block: str, text: str) -> None:
    start, end = f"<!-- tsprune {block} start -->", f"<!-- tsprune {block} end -->"
    content = readme.read_text(encoding="utf-8")
    first, last = content.find(start), content.find(end)
    if first < 0 or last < first:
        raise TsPruneError(f"{readme} has no {block} block: add a line {start} and, below it, a line {end}")
    atomic_write(readme, f"{content[:first + len(start)]}\n{text}{content[last:]}")


def emit(results: Path, readme: Path | None, block: str, render: Callable[[pd.DataFrame], str]) -> None:
    """Print ``render`` of the results table (a .parquet file or a sweep directory) and, with ``readme``, write it
    into that page's ``block``; a bad table or page is one line and exit 2."""
    try:
        text = render(load_results(results) if results.is_dir() else read_results(results))
        if readme is not None:
            replace_block(readme, block, text)
    except (TsPruneError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(text, nl=False)


def table_cli(render: Callable[[pd.DataFrame], str], default_block: str) -> typer.Typer:
    """The command line of a table script: a results table in, ``render``'s markdown out (see :func:`emit`)."""
    app = typer.Typer(add_completion=False)

    @app.command()
    def main(results: Annotated[Path, typer.Argument(help="A results table (.parquet) or a sweep directory.")],
             readme: Annotated[Optional[Path], typer.Option(help="Also write the table into this file's block.")]
             = None,
             block: Annotated[str, typer.Option(help="The block's name in --readme.")] = default_block) -> None:
        emit(results, readme, block, render)

    return app


cli = table_cli(comparison, "oneshot")


if __name__ == "__main__":
    cli()
