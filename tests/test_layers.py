"""The shape of the source tree: no import cycles, and no module importing from a layer above its own.

Every ``import`` in ``src/tsprune`` counts, at module level or inside a function (a deferred import is still a
dependency; deferring only hides a cycle from the interpreter).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tsprune"

# Bottom up; a module may import from its own layer and the layers below it.
LAYERS: list[tuple[str, ...]] = [
    ("_version", "_commit", "_lazy", "errors", "config", "schedule", "runtime"),
    ("data", "models", "checkpoint", "configure", "sparse"),
    ("train", "measure", "run"),
    ("prune", "forecast", "plots", "speed", "export", "export_pt2"),
    ("sweep", "report"),
    ("api", "demo"),
    ("cli",),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in SRC.rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """The tsprune modules ``path`` imports (``from a import b`` counts ``a.b`` when that is a module)."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base
                                                                                                   else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, set(known)) - {name} for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else ""
    for level, names in enumerate(LAYERS):
        if top in names:
            return level
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_no_module_imports_from_a_higher_layer():
    upward = sorted(f"{source} -> {target}" for source, targets in graph().items() if source != "tsprune"
                    for target in targets if target != "tsprune" and layer_of(target) > layer_of(source))
    assert upward == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_library_errors_name_api_parameters_not_cli_flags():
    """Below the CLI, an error says what to change as the Python API spells it (``batch_size``); the CLI writes
    its own flags (``--batch-size``) from the names the error lists. A ``--flag`` in a library message would be
    wrong for every Python user. Naming a whole command (`tsprune demo --retrain`) is fine."""
    import re

    flag = re.compile(r"(?<![\w-])--[a-z]")
    found = []
    for name, path in modules().items():
        if name == "tsprune.cli" or name.startswith("tsprune.cli."):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                texts = [c.value for c in ast.walk(node.exc)
                         if isinstance(c, ast.Constant) and isinstance(c.value, str)]
                found += [f"{path.name}:{node.lineno}: {text}" for text in texts
                          if flag.search(text) and "`tsprune " not in text]  # a whole command line is fine
    assert not found, found


def test_the_cli_writes_the_api_names_an_error_lists_as_flags():
    from tsprune.cli.app import cli_message
    from tsprune.errors import TsPruneError

    error = TsPruneError("batch_size must be at least 1 (threads and gpu_threads untouched)",
                         options=("batch_size", "threads"))
    assert cli_message(error) == "--batch-size must be at least 1 (--threads and gpu_threads untouched)"
    assert cli_message(TsPruneError("batch_size stays when not listed")) == "batch_size stays when not listed"
