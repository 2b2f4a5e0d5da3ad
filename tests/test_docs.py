"""The manual (mkdocs.yml, docs/) and the README front page: every page in the nav exists, the references cover
every public name, CLI command and spec key, the generated blocks are what their committed tables give, and the
guide's runnable commands run.

A fenced block preceded by ``<!-- runnable -->`` holds ``.venv/bin/tsprune`` commands only. They run in-process
(one torch import for all of them) in one working directory, pages in the manual's order, each command with the
tiny settings of :data:`TINY` appended (a later option wins), so a guide page cannot rot. The default suite parses
every runnable command and runs the train and prune pages; ``make test-heavy`` runs the whole guide. The strict
site build itself is ``make docs`` (CI runs it).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "hooks"))

import cli_reference  # noqa: E402 - docs/hooks on the path above
import headline  # noqa: E402
import reference  # noqa: E402
import tsprune_docs  # noqa: E402

RUNNABLE = "<!-- runnable -->"
PREFIX = ".venv/bin/tsprune"
ONE = ["--threads", "1"]
# Appended to each runnable command by its subcommand: tiny models, one step, one timing repeat.
TINY: dict[str, list[str]] = {
    "train": ["--d-model", "8", "--d-ff", "16", "--n-heads", "2", "--e-layers", "1", "--d-layers", "1",
              "--epochs", "1", "--max-steps", "1", "--no-progress", *ONE],
    "evaluate": ONE,
    "prune": ["--finetune-max-steps", "1", "--calibration-windows", "4", "--batch-sizes", "1", "--repeats", "1", *ONE],
    "measure": ["--batch-sizes", "1", "--repeats", "1", *ONE],
    "compile": ["--batch-size", "1", "--repeats", "1", *ONE],
    "sweep run": ["--no-progress", "--threads", "1"],
}
FAST_PAGES = ("guide/train.md", "guide/prune.md")  # run in the default suite; the others under `make test-heavy`


def nav_pages() -> list[str]:
    """Every page of mkdocs.yml's nav, in order."""

    def walk(items: list) -> list[str]:
        out: list[str] = []
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            out += walk(value) if isinstance(value, list) else [value]
        return out

    return walk(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])


def runnable_commands(page: Path) -> list[str]:
    """The command lines of ``page``'s runnable blocks, continuation lines joined, comments dropped."""
    lines, commands, state = page.read_text(encoding="utf-8").splitlines(), [], "text"
    for i, line in enumerate(lines):
        if state == "text" and line.startswith("```") and i > 0 and lines[i - 1].strip() == RUNNABLE:
            state, pending = "block", ""
        elif state == "block" and line.startswith("```"):
            state = "text"
        elif state == "block":
            pending += line.rstrip("\\") + " " if line.endswith("\\") else line
            if not line.endswith("\\"):
                if " ".join(shlex.split(pending, comments=True)):
                    commands.append(pending)
                pending = ""
    return commands


def tsprune_args(command: str) -> list[str]:
    words = shlex.split(command, comments=True)
    assert words[0] == PREFIX, f"a runnable line must be a {PREFIX} command: {command}"
    return words[1:]


def with_tiny(args: list[str]) -> list[str]:
    key = " ".join(args[:2]) if args[0] == "sweep" else args[0]
    return [*args, *TINY.get(key, [])]


def guide_pages() -> list[str]:
    return [page for page in nav_pages() if runnable_commands(DOCS / page)]


# --- the site's structure ---------------------------------------------------------------------------------------------


def test_every_nav_page_exists_and_every_page_is_in_the_nav():
    pages = nav_pages()
    assert len(pages) == len(set(pages))
    for page in pages:
        assert (DOCS / page).is_file(), page
    on_disk = {str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md") if "hooks" not in path.parts}
    assert on_disk == set(pages)


def test_every_generated_block_renders():
    for page in nav_pages():
        text = tsprune_docs.expand((DOCS / page).read_text(encoding="utf-8"), page)
        assert not tsprune_docs.MARKER.search(text), page


def test_api_reference_covers_every_public_name():
    import tsprune

    text = reference.api()
    for name, module in tsprune._WHERE.items():
        assert f"::: {module}.{name}\n" in text, name
    assert "<!-- generate: api -->" in (DOCS / "reference" / "api.md").read_text()


def test_cli_reference_covers_every_command():
    text = cli_reference.cli_reference()
    paths = cli_reference.command_paths()
    assert {"tsprune train", "tsprune prune", "tsprune sweep run", "tsprune export"} <= set(paths)
    for path in paths:
        assert f"`{path}`" in text, path
    assert "<!-- generate: cli -->" in (DOCS / "reference" / "cli.md").read_text()


def test_spec_reference_covers_every_key_and_columns_every_column():
    from tsprune.sweep import results, spec_reader

    keys, columns = reference.spec_keys(), reference.results_columns()
    for key in [*spec_reader._KEYS, "studies"]:
        assert f"| `{key}` |" in keys, key
    for column in results.COLUMNS:
        assert f"| `{column}` |" in columns, column


# --- generated blocks: what the committed tables give -----------------------------------------------------------


def generated_block(page: str, name: str) -> str:
    """The text between ``<!-- tsprune NAME start -->`` and its end line, as the generators write it."""
    start, end = f"<!-- tsprune {name} start -->", f"<!-- tsprune {name} end -->"
    return page[page.index(start) + len(start):page.index(end)].strip("\n") + "\n"


def test_oneshot_blocks_are_those_of_the_committed_tables():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from oneshot_table import comparison

    page = (DOCS / "results" / "oneshot.md").read_text(encoding="utf-8")
    for block in ("oneshot-mini", "oneshot-etth1"):
        text = generated_block(page, block)
        table = pd.read_parquet(ROOT / "benchmarks" / "results" / block / "results.parquet")
        assert text == comparison(table), f"{block} is stale: run benchmarks/oneshot_table.py (docs/results/oneshot.md)"


def test_the_recipe_screening_block_is_that_of_the_committed_table():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from recipes_table import recipes_markdown

    from tsprune.sweep.results import read_results

    page = (DOCS / "results" / "in-progress.md").read_text(encoding="utf-8")
    text = generated_block(page, "recipes-mini")
    table = read_results(ROOT / "benchmarks" / "results" / "recipes-mini" / "results.parquet")
    assert text == recipes_markdown(table), "recipes-mini is stale: run benchmarks/recipes_table.py (see the page)"


def test_the_runtime_race_block_is_that_of_the_committed_race():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from runtime_race import race_markdown, race_summary

    page = (DOCS / "results" / "speed.md").read_text(encoding="utf-8")
    source = re.search(r"--from-json (benchmarks/results/runtime-race/[\w.-]+\.json)", page)
    assert source, "speed.md names no committed race (--from-json ...)"
    text = generated_block(page, "runtime-race")
    race = json.loads((ROOT / source.group(1)).read_text(encoding="utf-8"))
    assert text == race_markdown(race), "runtime-race is stale: run the command on docs/results/speed.md"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    short = generated_block(readme, "runtime-race-summary")
    assert short == race_summary(race), "the README's runtime-race-summary is stale: run the command in speed.md"


def test_readme_is_a_front_page_with_a_generated_headline():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 150
    first_screen = "\n".join(lines[:10])
    assert "make demo" in first_screen and "make test" in first_screen
    assert headline.block(text) == headline.headline(pd.read_parquet(headline.TABLE)), \
        "README headline is stale: run `make study-results`"
    assert "make docs" in text and "site/index.html" in text
    for target in ("docs/get-started.md", "docs/results/study-etth1.md", "docs/reference/api.md"):
        assert f"]({target}" in text


# --- runnable blocks ------------------------------------------------------------------------------------------------


def test_every_runnable_command_parses():
    """Each runnable line (of the manual and the README) names a command that exists, with options it has and
    values of their types."""
    commands = {path: (command, context) for path, command, context in cli_reference.command_tree()}
    found = 0
    for page in [*nav_pages(), "../README.md"]:
        for line in runnable_commands(DOCS / page):
            args = with_tiny(tsprune_args(line))
            depth = 2 if args[0] == "sweep" else 1
            path = " ".join(["tsprune", *args[:depth]])
            assert path in commands, f"{page}: no command {path}"
            command, context = commands[path]
            try:
                command.make_context(args[depth - 1], args[depth:], parent=context.parent)
            except Exception as exc:  # click's usage errors: an option that no longer exists, a bad value
                pytest.fail(f"{page}: `{line}` does not parse: {exc}")
            found += 1
    assert found >= 20


def run_pages(pages: list[str], workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tsprune.cli import app

    shutil.copytree(DOCS / "examples", workdir / "docs" / "examples")
    monkeypatch.chdir(workdir)
    threads, runner = torch.get_num_threads(), CliRunner()
    try:
        for page in pages:
            for line in runnable_commands(DOCS / page):
                result = runner.invoke(app, with_tiny(tsprune_args(line)))
                assert result.exit_code == 0, f"{page}: `{line}` failed:\n{result.output[-2000:]}"
    finally:
        torch.set_num_threads(threads)


def test_train_and_prune_pages_run(tmp_path, monkeypatch):
    assert set(FAST_PAGES) <= set(guide_pages())
    run_pages(list(FAST_PAGES), tmp_path, monkeypatch)
    assert (tmp_path / "runs" / "af-dg-0.25" / "metrics.json").is_file()


@pytest.mark.heavy
def test_the_whole_guide_runs(tmp_path, monkeypatch):
    pages = [page for page in guide_pages() if page.startswith("guide/") or page == "get-started.md"]
    assert len(pages) >= 9
    run_pages(pages, tmp_path, monkeypatch)
    assert (tmp_path / "sweeps" / "quick" / "results.parquet").is_file()
    assert (tmp_path / "af.pt2").is_file() and (tmp_path / "forecast.csv").is_file()
