"""The one-line error helpers (``tsprune.errors``): a caught exception's first line, a recorded error's gist."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tsprune.errors import TsPruneError, error_gist, exception_line, exception_record


def test_an_exception_becomes_its_first_line_without_colour_codes():
    exc = RuntimeError("\n  \x1b[31mFailed to convert\x1b[0m   the program.  \nDetails: a long dump\nmore")
    assert exception_line(exc) == "Failed to convert the program."
    assert exception_line(exc, lines=2) == "Failed to convert the program. Details: a long dump"
    assert exception_line(ValueError("x" * 500)) == "x" * 199 + "…"
    assert exception_line(KeyError()) == "KeyError"  # no message: its type says what happened
    assert exception_line(ValueError("\n \n")) == "ValueError"


def test_an_exception_is_recorded_with_its_type_and_whole_message_on_one_line():
    exc = RuntimeError("\n  \x1b[31mFailed to convert\x1b[0m   the program.  \nDetails: a long dump\nmore")
    assert exception_record(exc) == "RuntimeError: Failed to convert the program. Details: a long dump more"
    assert exception_record(KeyError()) == "KeyError: no message"
    assert exception_record(ValueError("z" * 2000)) == "ValueError: " + "z" * 999 + "…"
    assert exception_record(ValueError("z" * 50), limit=10) == "ValueError: " + "z" * 9 + "…"


def test_a_recorded_error_becomes_its_gist():
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\nMemoryError: out of memory\n'
    assert error_gist(trace) == "MemoryError: out of memory"  # Python names the exception last
    assert error_gist("RuntimeError: first\n  second") == "RuntimeError: first second"  # not a traceback: whole
    assert error_gist(None) == error_gist(math.nan) == error_gist("  ") == ""
    assert error_gist("y" * 300, limit=10) == "y" * 9 + "…"


def test_the_report_uses_the_same_gist():
    from tsprune.report import tables

    assert tables.error_gist is error_gist


def test_an_unreadable_csv_is_one_line_even_without_a_message(tmp_path, monkeypatch):
    """pandas may raise with an empty message; the error still says what happened (it used to be an IndexError)."""
    from tsprune.data.io import read_table

    path = tmp_path / "data.csv"
    path.write_text("date,x\n")

    def empty(*_, **__):
        raise pd.errors.EmptyDataError("")

    monkeypatch.setattr(pd, "read_csv", empty)
    with pytest.raises(TsPruneError, match=r"cannot read .*data\.csv as CSV: EmptyDataError$"):
        read_table(None, str(path))
