"""A findings block: the findings a report wrote, put between two marker lines of a markdown file, the rest of
the file kept byte for byte (``tsprune report --readme FILE``; `make study-results` writes the study's into
docs/results/study-etth1.md, which the README once held)."""

from __future__ import annotations

from pathlib import Path

from tsprune.errors import TsPruneError
from tsprune.runtime import atomic_write

FINDINGS_FILE = "findings.md"  # what ``report.render.build_report`` writes beside report.md
README_START, README_END = "<!-- tsprune findings start -->", "<!-- tsprune findings end -->"


def readme_block(readme: Path) -> tuple[str, int, int]:
    """``readme``'s text and where its findings block starts and ends; a clear error when it has none (checked
    before a report is built, so a wrong file costs nothing)."""
    if not readme.is_file():
        raise TsPruneError(f"{readme} not found: readme takes the file whose findings block to update",
                           options=("readme",))
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise TsPruneError(f"{readme} has no findings block: add a line {README_START} and, below it, a line "
                           f"{README_END}")
    return text, start, end


def update_readme(readme: Path, out_dir: Path) -> None:
    """Replace the block between :data:`README_START` and :data:`README_END` in ``readme`` with the findings
    ``build_report`` wrote to ``out_dir``; the rest of the file is kept byte for byte."""
    text, start, end = readme_block(readme)
    block = (out_dir / FINDINGS_FILE).read_text(encoding="utf-8")
    updated = f"{text[:start + len(README_START)]}\n{block}{text[end:]}"
    atomic_write(readme, updated)
