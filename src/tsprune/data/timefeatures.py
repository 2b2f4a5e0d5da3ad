"""Calendar features derived from the data's frequency, each scaled to [-0.5, 0.5] (Autoformer's ``timeF``)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from tsprune.errors import TsPruneError

@dataclass(frozen=True)
class CalendarFeature:
    """One calendar feature: a field of the timestamps scaled from ``[first, last]`` to ``[-0.5, 0.5]``,
    ``(field - first) / (last - first) - 0.5``. The one definition of what the models see: the data pipeline
    computes it (``values``) and an exported model's sidecar states it (``formula``) from these same numbers."""

    name: str
    field: str  # a pandas DatetimeIndex attribute, or "iso_week" (the ISO 8601 week number)
    first: int
    last: int
    note: str = ""  # how the field counts, where its name does not say

    def values(self, dates: pd.DatetimeIndex) -> np.ndarray:
        """``[len(dates)]`` float64 feature values."""
        raw = dates.isocalendar().week.to_numpy() if self.field == "iso_week" else getattr(dates, self.field)
        return (np.asarray(raw, dtype=np.int64) - self.first) / float(self.last - self.first) - 0.5

    @property
    def formula(self) -> str:
        """The computation in words, for callers without tsprune, e.g. ``day_of_month = (day - 1) / 30 - 0.5``."""
        shifted = self.field if self.first == 0 else f"({self.field} - {self.first})"
        counts = f"{self.field} from {self.first} to {self.last}" + (f", {self.note}" if self.note else "")
        return f"{self.name} = {shifted} / {self.last - self.first} - 0.5 ({counts})"


# Every feature a frequency can get, by name (Autoformer's timeF features).
FEATURES = {feature.name: feature for feature in (
    CalendarFeature("second_of_minute", "second", 0, 59),
    CalendarFeature("minute_of_hour", "minute", 0, 59),
    CalendarFeature("hour_of_day", "hour", 0, 23),
    CalendarFeature("day_of_week", "day_of_week", 0, 6, "Monday = 0"),
    CalendarFeature("day_of_month", "day", 1, 31),
    CalendarFeature("day_of_year", "day_of_year", 1, 366),
    CalendarFeature("month_of_year", "month", 1, 12),
    CalendarFeature("week_of_year", "iso_week", 1, 53, "ISO 8601 week number"),
)}

# Which features each base frequency gets (finer data sees every coarser calendar cycle that varies within it).
_BY_BASE = {
    "year": [],
    "month": ["month_of_year"],
    "week": ["day_of_month", "week_of_year"],
    "day": ["day_of_week", "day_of_month", "day_of_year"],
    "hour": ["hour_of_day", "day_of_week", "day_of_month", "day_of_year"],
    "minute": ["minute_of_hour", "hour_of_day", "day_of_week", "day_of_month", "day_of_year"],
    "second": ["second_of_minute", "minute_of_hour", "hour_of_day", "day_of_week", "day_of_month", "day_of_year"],
}

_OFFSET_BASE = {
    "YearEnd": "year", "YearBegin": "year", "QuarterEnd": "month", "QuarterBegin": "month",
    "MonthEnd": "month", "MonthBegin": "month", "BusinessMonthEnd": "month", "BusinessMonthBegin": "month",
    "Week": "week", "Day": "day", "BusinessDay": "day", "Hour": "hour", "Minute": "minute", "Second": "second",
}


def base_frequency(freq: str) -> str:
    try:
        offset = to_offset(freq)
    except ValueError:
        raise TsPruneError(f"unknown frequency {freq!r}: use a pandas offset alias such as h, 15min, D, W") from None
    base = _OFFSET_BASE.get(type(offset).__name__)
    if base is None:
        raise TsPruneError(f"unsupported frequency {freq!r}: use hours, minutes, seconds, days, weeks, months or years")
    if base == "day" and getattr(offset, "n", 1) % 7 == 0:
        base = "week"
    return base


def feature_names(freq: str) -> list[str]:
    """The features ``time_features`` computes for ``freq``, in column order."""
    return list(_BY_BASE[base_frequency(freq)])


def feature_formulas(freq: str) -> dict[str, str]:
    """``{name: formula}`` of the features of ``freq``, in column order (what an exported model's sidecar says)."""
    return {name: FEATURES[name].formula for name in feature_names(freq)}


def time_features(dates: pd.DatetimeIndex, freq: str) -> np.ndarray:
    """``[len(dates), n_features]`` float32 calendar features for ``freq``."""
    names = feature_names(freq)
    if not names:
        return np.zeros((len(dates), 0), dtype=np.float32)
    columns = [FEATURES[name].values(dates) for name in names]
    return np.stack(columns, axis=1).astype(np.float32)


def infer_frequency(dates: pd.DatetimeIndex) -> str:
    """The data's frequency: pandas' inference, else the most common step (real files have gaps and duplicates)."""
    if len(dates) >= 3:
        with warnings.catch_warnings():  # pandas 3 warns that it will return an offset instead of a string
            warnings.simplefilter("ignore")
            inferred = pd.infer_freq(dates[: min(len(dates), 2000)])
        if inferred:
            return inferred if isinstance(inferred, str) else inferred.freqstr
    steps = pd.Series(dates[1:] - dates[:-1])
    steps = steps[steps > pd.Timedelta(0)]
    if steps.empty:
        raise TsPruneError("cannot infer the frequency: timestamps do not increase; set freq (e.g. h, 15min, D)",
                          options=("freq",))
    return to_offset(steps.mode().iloc[0]).freqstr
