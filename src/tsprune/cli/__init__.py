"""The ``tsprune`` command line: parses options, calls the Python API, prints. No logic of its own.

``app`` holds the shared pieces; ``runs``, ``studies`` and ``deploy`` add their commands to it when imported here.
"""

from __future__ import annotations

import warnings

from tsprune.cli import deploy, runs, studies  # noqa: F401 - they register their commands
from tsprune.cli.app import app, console, err_console, show_warning, user_errors

__all__ = ["app", "console", "err_console", "main", "show_warning", "user_errors"]


def main() -> None:
    warnings.showwarning = show_warning
    app()
