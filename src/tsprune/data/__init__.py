"""Benchmark datasets and user CSVs turned into forecasting windows."""

from tsprune.data.dataset import Batch, ForecastData, Scaler, prepare_data, split_borders
from tsprune.data.registry import DATASETS, DatasetInfo, get_dataset

__all__ = ["Batch", "DATASETS", "DatasetInfo", "ForecastData", "Scaler", "get_dataset", "prepare_data", "split_borders"]
