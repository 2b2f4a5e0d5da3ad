"""Reading a series from disk: built-in files (checksum-verified) or any user CSV, validated before training."""

from __future__ import annotations

import gzip
import hashlib
import io
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from tsprune.data.registry import DatasetInfo, get_dataset, missing_file_message
from tsprune.errors import TsPruneError, exception_line

_VERIFIED: set[str] = set()  # built-in files whose checksum this process already checked
# Values that some benchmark files (weather) use to mark a missing reading. The benchmarks' convention is to use them
# as they are, and so do we; loading such data says so (`MissingMarkers`), for built-in files and user CSVs alike.
MISSING_MARKERS = (-9999.0,)
_REPORTED: set[tuple[str, str]] = set()  # (source, message): each said once per process


class MissingMarkers(UserWarning):
    """The data holds missing-value markers that are used as values (one line, once per file and process)."""


def report_missing_markers(values: pd.DataFrame, source: str) -> str | None:
    """Warn, once per ``source``, when ``values`` hold :data:`MISSING_MARKERS`; returns the message (None: none)."""
    counts = {str(column): int(values[column].isin(MISSING_MARKERS).sum()) for column in values.columns}
    counts = {column: count for column, count in counts.items() if count}
    if not counts:
        return None
    listed = ", ".join(f"{count} in {column!r}" for column, count in counts.items())
    message = (f"{source}: {sum(counts.values())} values are {MISSING_MARKERS[0]:g} missing-value markers ({listed}); "
               "they are used as values, as the benchmark's published results do (clean the file to change that)")
    if (source, message) not in _REPORTED:
        _REPORTED.add((source, message))
        warnings.warn(message, MissingMarkers, stacklevel=2)
    return message


def builtin_bytes(info: DatasetInfo) -> bytes:
    """The uncompressed bytes of a shipped dataset, verified against its sha256."""
    resource = resources.files("tsprune.data").joinpath("files").joinpath(info.filename + ".gz")
    try:
        raw = gzip.decompress(resource.read_bytes())
    except (FileNotFoundError, OSError) as exc:
        raise TsPruneError(f"built-in file for {info.name} is missing or unreadable ({exc}); "
                           "reinstall tsprune") from None
    if info.name not in _VERIFIED:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != info.sha256:
            expected = info.sha256[:12] if info.sha256 is not None else "none recorded"
            raise TsPruneError(f"checksum mismatch for built-in {info.name} (got {digest[:12]}..., expected "
                               f"{expected}...): the package is corrupt, reinstall tsprune")
        _VERIFIED.add(info.name)
    return raw


def read_table(dataset: str | None, data_path: str | None) -> tuple[pd.DataFrame, DatasetInfo | None]:
    """Load the raw table and the registry entry (``None`` for a user CSV with no known name)."""
    info = get_dataset(dataset) if dataset else None
    if data_path is not None:
        path = Path(data_path)
        if not path.is_file():
            raise TsPruneError(f"data file {path} not found: check data_path", options=("data_path",))
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise TsPruneError(f"cannot read {path} as CSV: {exception_line(exc)}") from None
        return frame, info
    if info is None:
        raise TsPruneError("no data given: set dataset (a name) or data_path (a CSV file)",
                          options=("dataset", "data_path"))
    if not info.shipped:
        raise TsPruneError(missing_file_message(info), options=("data_path",))
    return pd.read_csv(io.BytesIO(builtin_bytes(info))), info


def find_date_column(frame: pd.DataFrame) -> str:
    for column in frame.columns:
        if str(column).strip().lower() in ("date", "datetime", "timestamp", "time"):
            return column
    raise TsPruneError(f"no date column: the CSV needs a column named 'date' with timestamps (columns: "
                       f"{', '.join(map(str, frame.columns[:8]))}{', ...' if len(frame.columns) > 8 else ''})")


def validated_frame(frame: pd.DataFrame) -> tuple[pd.DatetimeIndex, pd.DataFrame]:
    """Split the table into timestamps and an all-numeric, finite value frame, or raise naming the culprit."""
    date_column = find_date_column(frame)
    try:
        dates = pd.DatetimeIndex(pd.to_datetime(frame[date_column]))
    except (ValueError, TypeError) as exc:
        raise TsPruneError(f"date column {date_column!r} has values that are not timestamps ({exc})") from None
    if dates.hasnans:
        row = int(np.flatnonzero(dates.isna())[0])
        raise TsPruneError(f"date column {date_column!r} is empty at row {row}")
    values = frame.drop(columns=[date_column])
    if values.shape[1] == 0:
        raise TsPruneError("the CSV has a date column but no value columns")
    for column in values.columns:
        series = values[column]
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            numeric = pd.to_numeric(series, errors="coerce")
            bad = numeric.isna() & series.notna()
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise TsPruneError(f"column {column!r} is not numeric: row {row} holds {series.iloc[row]!r}")
            values[column] = numeric
    array = values.to_numpy(dtype=np.float64)
    bad_rows, bad_cols = np.nonzero(~np.isfinite(array))
    if len(bad_rows):
        row, col = int(bad_rows[0]), int(bad_cols[0])
        kind = "NaN" if np.isnan(array[row, col]) else "inf"
        raise TsPruneError(f"column {values.columns[col]!r} has {kind} at row {row} ({len(bad_rows)} non-finite "
                           f"value(s) in all); fill or drop them first")
    return dates, values.astype(np.float64)
