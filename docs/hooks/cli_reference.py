"""The CLI reference, generated from the typer app (``tsprune.cli.app``) through its click command tree: every
command and sub-command with its help text, usage and options, grouped by the panels ``--help`` shows."""

from __future__ import annotations

import re
from typing import Any


def command_tree() -> list[tuple[str, Any, Any]]:
    """``(path, command, context)`` of every command under ``tsprune``, depth first, in the app's order
    (groups included: ``tsprune sweep``)."""
    import typer.main

    from tsprune.cli import app

    root = typer.main.get_command(app)
    context_type = type(root.context_class(root, info_name="tsprune"))
    found: list[tuple[str, Any, Any]] = []

    def walk(command: Any, context: Any, path: str) -> None:
        found.append((path, command, context))
        if hasattr(command, "list_commands"):
            for name in command.list_commands(context):
                sub = command.get_command(context, name)
                walk(sub, context_type(sub, info_name=name, parent=context), f"{path} {name}")

    walk(root, context_type(root, info_name="tsprune"), "tsprune")
    return found


def command_paths() -> list[str]:
    """Every command a user can run (``tsprune train``, ``tsprune sweep run``, ...): the leaves of the tree."""
    return [path for path, command, _ in command_tree() if not hasattr(command, "list_commands")]


def option_flags(command: str) -> dict[str, str]:
    """Parameter name -> its first flag, for ``tsprune COMMAND``."""
    for path, found, _ in command_tree():
        if path == f"tsprune {command}":
            flags = {param.name: param.opts[0] for param in found.params if param.opts}
            # a field whose flag drops its unit: PruneConfig.timeout_s is --timeout
            return {**{f"{name}_s": flag for name, flag in flags.items()}, **flags}
    raise KeyError(command)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _section(path: str, command: Any, context: Any) -> list[str]:
    level = "#" * min(2 + path.count(" "), 4)
    pieces = [re.sub(r"\{(\w+)\}", lambda m: m.group(1).upper(), piece)
              for piece in command.collect_usage_pieces(context)]
    usage = " ".join([path, *pieces])
    out = [f"{level} `{path}`", "", _cell(command.help or ""), "", "```text", usage, "```", ""]
    if hasattr(command, "list_commands"):
        subs = command.list_commands(context)
        return out + ["Commands: " + ", ".join(f"`{path} {name}`" for name in subs) + ".", ""]
    panels: dict[str, list[str]] = {}
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        record = param.get_help_record(context)
        if record is None:
            continue
        flags, help_text = record
        if not param.opts or param.param_type_name == "argument":
            flags, help_text = param.name.upper(), help_text or "(argument)"
        panel = getattr(param, "rich_help_panel", None) or ("Arguments" if param.param_type_name == "argument"
                                                            else "Options")
        panels.setdefault(panel, []).append(f"| `{flags}` | {_cell(help_text)} |")
    for panel, rows in panels.items():
        head = "argument" if panel == "Arguments" else "option"
        out += [f"**{panel}**", "", f"| {head} | help |", "|---|---|", *rows, ""]
    return out


def cli_reference() -> str:
    """Markdown: one section per command, in the app's order."""
    lines: list[str] = []
    for path, command, context in command_tree():
        lines += _section(path, command, context)
    return "\n".join(lines)
