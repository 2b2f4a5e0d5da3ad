"""tsprune: prune Transformer time-series forecasters and measure what you really save.

    >>> import tsprune
    >>> config = tsprune.make_config("Autoformer", data={"dataset": "ETTh1", "pred_len": 96})
    >>> run = tsprune.train(config, out="runs/autoformer")
    >>> tsprune.evaluate("runs/autoformer")["mse"]
    >>> pruned = tsprune.prune("runs/autoformer", "magnitude", 0.107, out="runs/autoformer-0.107", finetune_epochs=1)
    >>> pruned.metrics["speedup"], tsprune.measure("runs/autoformer-0.107")["flops"]
"""

from tsprune._version import __version__
from tsprune.api import evaluate, load, make_config, measure, prune, train
from tsprune.config import DataConfig, ModelConfig, PruneConfig, RunConfig, TrainConfig
from tsprune.errors import TsPruneError
from tsprune.run import Run

__all__ = ["DataConfig", "ModelConfig", "PruneConfig", "Run", "RunConfig", "TrainConfig", "TsPruneError", "__version__",
           "evaluate", "load", "make_config", "measure", "prune", "train"]
