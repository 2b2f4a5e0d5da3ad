"""tsprune: prune Transformer time-series forecasters and measure what you really save.

    >>> import tsprune
    >>> config = tsprune.make_config("Autoformer", data={"dataset": "ETTh1", "pred_len": 96})
    >>> run = tsprune.train(config, out="runs/autoformer")
    >>> tsprune.evaluate("runs/autoformer")["mse"]
    >>> pruned = tsprune.prune("runs/autoformer", "magnitude", 0.107, out="runs/autoformer-0.107", finetune_epochs=1)
    >>> pruned.metrics["speedup"], tsprune.measure("runs/autoformer-0.107")["flops"]

The names below are imported when first used, so ``import tsprune`` stays light.
"""

from tsprune._lazy import lazy_attributes
from tsprune._version import __version__  # noqa: F401 - listed in __all__

_WHERE = {
    "evaluate": "tsprune.api", "load": "tsprune.api", "measure": "tsprune.api", "prune": "tsprune.api",
    "train": "tsprune.api", "predict": "tsprune.api", "export": "tsprune.api", "make_config": "tsprune.configure",
    "DataConfig": "tsprune.config", "ModelConfig": "tsprune.config", "PruneConfig": "tsprune.config",
    "RunConfig": "tsprune.config", "TrainConfig": "tsprune.config", "TsPruneError": "tsprune.errors",
    "Run": "tsprune.run",
}
__getattr__ = lazy_attributes(__name__, _WHERE)
__all__ = sorted([*_WHERE, "__version__"])
