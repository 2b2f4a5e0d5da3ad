"""Pages quoted from the sources, read as text (nothing imported): the kernels' appendices from the heads of
``sparse_linear.cpp`` and ``short_attention.cpp``, a module's docstring (``measure.py``'s FLOP convention), and the
layers the import rule of ``tests/test_layers.py`` checks."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KERNEL = ROOT / "src" / "tsprune" / "sparse" / "csrc" / "sparse_linear.cpp"
ATTENTION_KERNEL = ROOT / "src" / "tsprune" / "sparse" / "csrc" / "short_attention.cpp"
LAYERS_TEST = ROOT / "tests" / "test_layers.py"


def kernel_appendix(path: Path = KERNEL) -> str:
    """The comment that opens a kernel's source (its design appendix), as a preformatted block."""
    text = path.read_text(encoding="utf-8")
    if not text.startswith("/*") or "*/" not in text:
        raise ValueError(f"{path} no longer opens with its appendix comment")
    body = text[2:text.index("*/")].strip("\n")
    return "```text\n" + body.rstrip() + "\n```\n"


def attention_appendix() -> str:
    """The appendix of ``short_attention.cpp``, the fused short attention."""
    return kernel_appendix(ATTENTION_KERNEL)


def module_docstring(relative: str) -> str:
    """The docstring of ``src/tsprune/<relative>``, as markdown (its ``code`` spans kept)."""
    path = ROOT / "src" / "tsprune" / relative
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    if not doc:
        raise ValueError(f"{path} has no module docstring")
    return doc.replace("``", "`") + "\n"


def layers() -> list[tuple[str, ...]]:
    """``LAYERS`` of ``tests/test_layers.py``, bottom up."""
    for node in ast.parse(LAYERS_TEST.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "LAYERS":
            assert node.value is not None
            value: list[tuple[str, ...]] = ast.literal_eval(node.value)
            return value
    raise ValueError(f"{LAYERS_TEST} no longer defines LAYERS")


def layers_table() -> str:
    """The layers, top first (the order a reader meets them), each with the modules and packages in it."""
    rows = ["| layer (top first) | modules and packages |", "|---|---|"]
    stack = layers()
    for number, layer in reversed(list(enumerate(stack, 1))):
        rows.append(f"| {number} | " + ", ".join(f"`{name}`" for name in layer) + " |")
    return "\n".join(rows) + "\n"
