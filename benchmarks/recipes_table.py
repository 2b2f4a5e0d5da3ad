"""Issue 33's recipe table from a sweep's results table: per model, recipe and density (10.7% and 5%), the MSE
(seed mean and spread), the paired change from dense and the minutes of a run, with the recipes' ranking; the
report's "Recipes at high sparsity" table (``tsprune.report.render.recipes_table``) as markdown.

    python benchmarks/recipes_table.py RESULTS.parquet [--readme docs/results/in-progress.md --block recipes-mini]

Reads only the results table (``tsprune results DIR --export``), so the same table always gives the same text.
``--readme`` replaces the block between ``<!-- tsprune BLOCK start -->`` and ``<!-- tsprune BLOCK end -->``
(``oneshot_table.table_cli``).
"""

from __future__ import annotations

import pandas as pd

from oneshot_table import table_cli
from tsprune.report.render import md_table, recipes_table
from tsprune.report.tables import prepare


def recipes_markdown(frame: pd.DataFrame) -> str:
    """The caption (with the ranking) and the table, as a results page carries them."""
    table = recipes_table(prepare(frame))
    return f"{table.caption}\n\n{md_table(table)}\n"


cli = table_cli(recipes_markdown, "recipes-mini")


if __name__ == "__main__":
    cli()
