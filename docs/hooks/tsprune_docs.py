"""The mkdocs hook of tsprune's manual (``hooks:`` in mkdocs.yml).

* A line ``<!-- generate: NAME -->`` in a page is replaced by the markdown that :data:`GENERATORS` makes from the
  code (the CLI, the spec keys, the results columns, the records, the kernel's appendix, ...). An unknown name fails
  the build.
* The report's figures of the study at real scale are served from where ``make study-results`` writes them
  (``benchmarks/results/study-etth1/report/figures/``) as ``figures/study-etth1/``: nothing is copied into docs/.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cli_reference  # noqa: E402 - after the path above
import headline  # noqa: E402
import reference  # noqa: E402
import sources  # noqa: E402

FIGURES = sources.ROOT / "benchmarks" / "results" / "study-etth1" / "report" / "figures"
MARKER = re.compile(r"^<!-- generate: ([\w-]+) -->$", re.MULTILINE)


def _headline() -> str:
    """The README's headline table, from the same committed table."""
    import pandas as pd

    return headline.headline(pd.read_parquet(headline.TABLE))


def _flop_convention() -> str:
    """measure.py's docstring, its section underlines turned into third-level headings."""
    text = sources.module_docstring("measure.py")
    return re.sub(r"^(.+)\n-{3,}$", r"### \1", text, flags=re.MULTILINE)


GENERATORS: dict[str, Callable[[], str]] = {
    "cli": cli_reference.cli_reference,
    "spec-keys": reference.spec_keys,
    "results-columns": reference.results_columns,
    "models": reference.models,
    "methods": reference.methods,
    "recipes": reference.recipes,
    "presets": reference.presets,
    "api": reference.api,
    "headline": _headline,
    "kernel-appendix": sources.kernel_appendix,
    "attention-appendix": sources.attention_appendix,
    "layers": sources.layers_table,
    "flop-convention": _flop_convention,
}


def expand(markdown: str, where: str = "page") -> str:
    """``markdown`` with every generate marker replaced by its generator's output."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"{where}: unknown generated block {name!r} (known: {', '.join(GENERATORS)})")
        return GENERATORS[name]().rstrip("\n")

    return MARKER.sub(one, markdown)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    return expand(markdown, page.file.src_uri)


def on_files(files: Any, config: Any, **_: Any) -> Any:
    from mkdocs.structure.files import File

    for figure in sorted(FIGURES.glob("*.png")):
        files.append(File.generated(config, f"figures/study-etth1/{figure.name}", abs_src_path=str(figure)))
    return files


ROLE = re.compile(r":(?:func|class|meth|data|mod|attr|exc|obj):(?=<code>)")


def on_page_content(html: str, **_: Any) -> str:
    """Docstrings cross-reference in reST (``:func:`train```); the rendered names keep their code style, the role
    prefix goes."""
    return ROLE.sub("", html)
