"""Issue 33's recipe table from a sweep's results table: per model, recipe and density (10.7% and 5%), the MSE
(seed mean and spread), the paired change from dense and the minutes of a run, with the recipes' ranking; the
report's "Recipes at high sparsity" table (``tsprune.report.render.recipes_table``) as markdown.

    python benchmarks/recipes_table.py RESULTS.parquet [--readme docs/results/in-progress.md --block recipes-mini]

Reads only the results table (``tsprune results DIR --export``), so the same table always gives the same text.
``--readme`` replaces the block between ``<!-- tsprune BLOCK start -->`` and ``<!-- tsprune BLOCK end -->``
(``oneshot_table.emit``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer

from oneshot_table import emit
from tsprune.report.render import md_table, recipes_table
from tsprune.report.tables import prepare

cli = typer.Typer(add_completion=False)


def recipes_markdown(frame: pd.DataFrame) -> str:
    """The caption (with the ranking) and the table, as a results page carries them."""
    table = recipes_table(prepare(frame))
    return f"{table.caption}\n\n{md_table(table)}\n"


@cli.command()
def main(results: Annotated[Path, typer.Argument(help="A results table (.parquet) or a sweep directory.")],
         readme: Annotated[Optional[Path], typer.Option(help="Also write the table into this file's block.")] = None,
         block: Annotated[str, typer.Option(help="The block's name in --readme.")] = "recipes-mini") -> None:
    emit(results, readme, block, recipes_markdown)


if __name__ == "__main__":
    cli()
