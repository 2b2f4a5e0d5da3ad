"""Calendar features derived from the data's frequency, each scaled to [-0.5, 0.5] (Autoformer's ``timeF``)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from tsprune.errors import TsPruneError

# Feature extractors: name -> function of a DatetimeIndex.
_EXTRACTORS = {
    "second_of_minute": lambda d: d.second / 59.0 - 0.5,
    "minute_of_hour": lambda d: d.minute / 59.0 - 0.5,
    "hour_of_day": lambda d: d.hour / 23.0 - 0.5,
    "day_of_week": lambda d: d.day_of_week / 6.0 - 0.5,
    "day_of_month": lambda d: (d.day - 1) / 30.0 - 0.5,
    "day_of_year": lambda d: (d.day_of_year - 1) / 365.0 - 0.5,
    "month_of_year": lambda d: (d.month - 1) / 11.0 - 0.5,
    "week_of_year": lambda d: (d.isocalendar().week.to_numpy() - 1) / 52.0 - 0.5,
}

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
    return list(_BY_BASE[base_frequency(freq)])


def time_features(dates: pd.DatetimeIndex, freq: str) -> np.ndarray:
    """``[len(dates), n_features]`` float32 calendar features for ``freq``."""
    names = feature_names(freq)
    if not names:
        return np.zeros((len(dates), 0), dtype=np.float32)
    columns = [np.asarray(_EXTRACTORS[name](dates), dtype=np.float64) for name in names]
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
