"""Dense test MSE/MAE of a results table against the published values, on the seed mean (issue 32's band check).

    python benchmarks/study/published_check.py benchmarks/results/small-etth1/results.parquet [--tolerance 0.10]

One row per model at its default size (the published configuration): the seeds finished, the seed mean and range
of test MSE and MAE, the published MSE/MAE (``benchmarks/published_mse.csv``, same dataset and horizon), the ratio,
and whether the mean lies within the tolerance (10%: issue 32's band for the small models). Measures only: it prints
what the table holds and asserts nothing; a model with fewer seeds than asked says so.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from tsprune.report import tables
from tsprune.sweep.results import read_results

PUBLISHED = Path(__file__).resolve().parents[1] / "published_mse.csv"
cli = typer.Typer(add_completion=False)


def published(path: Path = PUBLISHED) -> pd.DataFrame:
    """The published values, one row per model, dataset and horizon (comment lines skipped)."""
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    frame = pd.DataFrame(rows)
    return frame.astype({"pred_len": int, "mse": float, "mae": float})


def compare(frame: pd.DataFrame, reference: pd.DataFrame, tolerance: float = 0.10, seeds: int = 3) -> pd.DataFrame:
    """Seed means of the default-size dense runs of ``frame`` beside ``reference``'s published values."""
    done = tables.done(frame)
    dense = done[(done["kind"] == "dense") & (done["size"] == "default") & done["mse"].notna()]
    stats = dense.groupby(["model", "dataset", "pred_len"], as_index=False).agg(
        seeds=("seed", "nunique"), mse=("mse", "mean"), mse_min=("mse", "min"), mse_max=("mse", "max"),
        mae=("mae", "mean"))
    out = stats.merge(reference.rename(columns={"mse": "published_mse", "mae": "published_mae"}),
                      on=["model", "dataset", "pred_len"], how="left")
    out["ratio"] = out["mse"] / out["published_mse"]
    within = (out["ratio"] - 1.0).abs() <= tolerance
    out["within"] = within.map({True: "yes", False: "no"}).where(out["published_mse"].notna(), "no published value")
    out.loc[out["seeds"] < seeds, "within"] = out["within"] + f" (fewer than {seeds} seeds)"
    return out


@cli.command()
def main(table: Annotated[Path, typer.Argument(help="A results table or sweep directory.")],
         tolerance: Annotated[float, typer.Option(help="Band around the published MSE.")] = 0.10,
         seeds: Annotated[int, typer.Option(help="Seeds the band check asks for.")] = 3) -> None:
    """Print the comparison (see the module doc)."""
    rows = compare(read_results(table), published(), tolerance, seeds)
    for row in rows.itertuples():
        typer.echo(f"{row.model} {row.dataset}/{row.pred_len}: {row.seeds} seed(s), MSE {row.mse:.4f} "
                   f"({row.mse_min:.4f}-{row.mse_max:.4f}), MAE {row.mae:.4f}; published {row.published_mse} / "
                   f"{row.published_mae}; ratio {row.ratio:.3f}; within {tolerance:.0%}: {row.within}")


if __name__ == "__main__":
    cli()
