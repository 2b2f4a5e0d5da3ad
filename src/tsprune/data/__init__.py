"""Benchmark datasets and user CSVs turned into forecasting windows."""

from tsprune._lazy import lazy_attributes

_WHERE = {**{name: "tsprune.data.dataset" for name in ("Batch", "ForecastData", "Scaler", "prepare_data",
                                                         "split_borders")},
          **{name: "tsprune.data.registry" for name in ("DATASETS", "DatasetInfo", "get_dataset")}}
__getattr__ = lazy_attributes(__name__, _WHERE)
__all__ = sorted(_WHERE)
