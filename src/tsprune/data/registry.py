"""The benchmark datasets tsprune knows: where each file is, its checksum, frequency and split rule."""

from __future__ import annotations

from dataclasses import dataclass

from tsprune.errors import TsPruneError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    filename: str
    sha256: str | None  # of the uncompressed CSV; None for files the user supplies
    freq: str
    split: str  # "ett_hour" | "ett_minute" | "ratio"
    description: str
    shipped: bool = True

    @property
    def split_text(self) -> str:
        """The train/validation/test split in words: ETT files by months, the others by 70/10/20 per cent."""
        return "12/4/4 months" if self.split.startswith("ett") else "70/10/20"


_DATASETS = [
    DatasetInfo("ETTh1", "ETTh1.csv",
                "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066", "h", "ett_hour",
                "Electricity transformer temperature, hourly, 7 channels"),
    DatasetInfo("ETTh2", "ETTh2.csv",
                "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b", "h", "ett_hour",
                "Electricity transformer temperature, hourly, 7 channels"),
    DatasetInfo("ETTm1", "ETTm1.csv",
                "6ce1759b1a18e3328421d5d75fadcb316c449fcd7cec32820c8dafda71986c9e", "15min", "ett_minute",
                "Electricity transformer temperature, 15 minutes, 7 channels"),
    DatasetInfo("ETTm2", "ETTm2.csv",
                "db973ca252c6410a30d0469b13d696cf919648d0f3fd588c60f03fdbdbadd1fd", "15min", "ett_minute",
                "Electricity transformer temperature, 15 minutes, 7 channels"),
    DatasetInfo("weather", "weather.csv",
                "34ee981d07313e51da2a50bb600072c8ae4a69cb4b0651f4cb93a069d7a2ba63", "10min", "ratio",
                "Jena weather station 2020, 10 minutes, 21 channels"),
    DatasetInfo("exchange_rate", "exchange_rate.csv",
                "48b4d9d3d508f5104162e85b9a6042e3557fde11aa9f2944eba8c0d0efc89842", "D", "ratio",
                "Daily exchange rates of 8 countries, 1990-2010"),
    DatasetInfo("national_illness", "national_illness.csv",
                "93601f64d2566dc796ca4305adad8b8560c2db1a1ff04543c3bd813a7263570a", "W-TUE", "ratio",
                "US CDC influenza-like illness, weekly, 7 channels"),
    DatasetInfo("electricity", "electricity.csv", None, "h", "ratio",
                "Hourly consumption of 321 clients (ECL)", shipped=False),
    DatasetInfo("traffic", "traffic.csv", None, "h", "ratio",
                "Hourly road occupancy of 862 sensors", shipped=False),
]

DATASETS: dict[str, DatasetInfo] = {info.name: info for info in _DATASETS}


def get_dataset(name: str) -> DatasetInfo:
    for key, info in DATASETS.items():
        if key.lower() == name.lower():
            return info
    raise TsPruneError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)} or give data_path, a CSV file",
                       options=("data_path",))


def missing_file_message(info: DatasetInfo) -> str:
    return (
        f"dataset {info.name!r} is not shipped with tsprune (too large to bundle): download {info.filename} from the "
        f"Autoformer / Time-Series-Library benchmark archive ({info.name}/{info.filename}) and pass "
        f"its path as data_path"
    )
