"""The README's headline table, generated from the committed results table of the study at real scale
(``benchmarks/results/study-etth1/results.parquet``): per model, the dense test MSE, what global magnitude pruning to
10.7% of the prunable weights (the study's 90% sparsity) does to it with and without one epoch of fine-tuning, what
that saves in time on dense kernels and on tsprune's sparse engine, and DepGraph at the same density.

    python docs/hooks/headline.py README.md      # rewrite the README's headline block (`make study-results`)

A test checks that the README's block is what this gives (tests/test_docs.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "benchmarks" / "results" / "study-etth1" / "results.parquet"
START, END = "<!-- tsprune headline start -->", "<!-- tsprune headline end -->"
DENSITY = 0.107  # 0.8^10, rounded as the tables round it


def _one(runs: pd.DataFrame, method: str, finetune: int, engine: str) -> pd.Series:
    mine = runs[(runs["method"] == method) & (runs["finetune_epochs"] == finetune) & (runs["engine"] == engine)
                & (runs["variant"].fillna("") == "")]
    if len(mine) != 1:
        raise ValueError(f"{len(mine)} runs of {method} ft {finetune} {engine} at {DENSITY} in {TABLE}")
    return mine.iloc[0]


def headline(frame: pd.DataFrame) -> str:
    """Markdown: one row per model of the main grid (default size, whole training split, first seed)."""
    main = frame[(frame["status"] == "done") & (frame["size"] == "default") & (frame["train_fraction"] == 1.0)]
    main = main[main["seed"] == main["seed"].min()]
    lines = ["| model | dense MSE | magnitude 10.7%: MSE / fine-tuned | speedup: masked / sparse engine "
             "| DepGraph 10.7% fine-tuned: MSE / speedup |", "|---|---|---|---|---|"]
    from tsprune.models.registry import model_names

    order = {name: i for i, name in enumerate(model_names())}  # the study's order: Transformer first
    for model in sorted(main["model"].drop_duplicates(), key=lambda name: order.get(name, len(order))):
        runs = main[main["model"] == model]
        dense = runs[runs["kind"] == "dense"]["mse"].iloc[0]
        runs = runs[(runs["kind"] == "prune") & (runs["target_density"].round(3) == DENSITY)]
        masked, sparse = _one(runs, "magnitude", 0, "dense"), _one(runs, "magnitude", 0, "sparse")
        tuned, structured = _one(runs, "magnitude", 1, "dense"), _one(runs, "depgraph", 1, "dense")
        lines.append(f"| {model} | {dense:.3f} | {masked['mse']:.3f} / {tuned['mse']:.3f} "
                     f"| {masked['speedup']:.2f}x / {sparse['speedup']:.2f}x "
                     f"| {structured['mse']:.3f} / {structured['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


def block(text: str) -> str:
    """The text between the headline markers of ``text`` (a clear error when it has none)."""
    first, last = text.find(START), text.find(END)
    if first < 0 or last < first:
        raise ValueError(f"no headline block: add a line {START} and, below it, a line {END}")
    return text[first + len(START):last].strip("\n") + "\n"


def write(readme: Path) -> None:
    """Replace the headline block of ``readme`` with :func:`headline` of the committed table; the rest is kept."""
    text = readme.read_text(encoding="utf-8")
    block(text)
    table = headline(pd.read_parquet(TABLE))
    first, last = text.find(START), text.find(END)
    readme.write_text(f"{text[:first + len(START)]}\n{table}{text[last:]}", encoding="utf-8")


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "README.md"))
