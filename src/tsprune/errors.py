"""One exception type for every error a user can fix; the CLI prints it as one line and exits 2.

Also the three ways tsprune turns other text into one line, named by what they read: :func:`exception_line` for an
exception caught to be re-raised as a :class:`TsPruneError` (its message leads with the point),
:func:`exception_record` for an exception caught to be written into a sweep record (type and whole message, so a
failed run says what happened), and :func:`error_gist` for a recorded error shown in a table (which may be a whole
traceback, whose point is its last line).
"""

from __future__ import annotations

import math
import re

_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # terminal colour codes (the ONNX exporter's messages carry them)


class TsPruneError(ValueError):
    """A problem with the user's input (data, config, checkpoint) with a message saying what to do.

    The message names what to change the way the Python API spells it (``batch_size``, ``data_path``); ``options``
    lists those names, so a front end can say them its own way (the CLI writes ``--batch-size``).
    """

    def __init__(self, message: str, *, options: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.options = options


def _lines(text: str) -> list[str]:
    """The non-blank lines of ``text``, colour codes removed."""
    return [line for line in (_COLOUR.sub("", raw).strip() for raw in text.splitlines()) if line]


def _shorten(text: str, limit: int) -> str:
    """``text`` with each run of whitespace one space, cut to ``limit`` characters (the cut marked with …)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def exception_line(exc: BaseException, limit: int = 200, lines: int = 1) -> str:
    """The gist of a caught exception's message as one line: its first ``lines`` non-blank lines joined (libraries
    put the point first and details, hints or dumps after), cut to ``limit``; the exception's type name when it has
    no message."""
    found = _lines(str(exc))[:lines]
    return _shorten(" ".join(found), limit) if found else type(exc).__name__


def exception_record(exc: BaseException, limit: int = 1000) -> str:
    """A caught exception as a sweep record keeps it: ``Type: message``, the whole message on one line, cut to
    ``limit``."""
    return f"{type(exc).__name__}: {_shorten(' '.join(_lines(str(exc))), limit) or 'no message'}"


def error_gist(error: object, limit: int = 240) -> str:
    """The gist of a recorded error (text, or None/NaN for none) as one line: a traceback shrinks to its final line,
    where Python names the exception; other text is kept whole on one line; both cut to ``limit``."""
    if error is None or (isinstance(error, float) and math.isnan(error)):
        return ""
    lines = _lines(str(error))
    if not lines:
        return ""
    return _shorten(lines[-1] if lines[0].startswith("Traceback") else " ".join(lines), limit)
