"""A rough cost model for ``tsprune sweep plan``: CPU-seconds per run from a per-model step cost scaled by the model
size, the training steps and the evaluation windows. It is an estimate to size a sweep, not a promise: calibrated
on small models on a busy 2-core machine, it can be off by a factor of a few either way.
"""

from __future__ import annotations

import collections
import heapq
import itertools
from dataclasses import dataclass

from tsprune.config import ModelConfig
from tsprune.prune.methods import get_method
from tsprune.sweep.plan import DenseRun, Plan, PruneRun

# Relative cost of one training step of each model at equal size (Transformer = 1).
MODEL_WEIGHT = {"Transformer": 1.0, "Informer": 0.9, "Autoformer": 1.4, "FEDformer": 1.6, "Crossformer": 1.2}
# Full training windows of the built-in datasets at look-back 96 (approximate); unknown data: ETTh1's.
TRAIN_WINDOWS = {"ETTh1": 8450, "ETTh2": 8450, "ETTm1": 34370, "ETTm2": 34370, "weather": 36700,
                 "exchange_rate": 5120, "national_illness": 600}
EVAL_SHARE = 0.6  # validation + test windows per training window, roughly
STEP_OVERHEAD_S = 0.05  # a training step of a tiny model (batch 32, one core)
STEP_REFERENCE_S = 3.0  # extra for a default-size model (d_model 512, d_ff 2048, 3 layers)
MEASURE_S = 2.0  # FLOP count and latency timing of one pruned model, beyond evaluation
SETUP_S = 2.0  # reading the data, building and saving a model


@dataclass(frozen=True)
class Estimate:
    dense_cpu_s: float
    prune_cpu_s: float

    @property
    def cpu_minutes(self) -> float:
        return (self.dense_cpu_s + self.prune_cpu_s) / 60


def step_seconds(model: ModelConfig, pred_len: int) -> float:
    """One optimiser step at batch 32: compute grows with width x (width + FFN) x layers and the horizon."""
    layers = model.e_layers + model.d_layers
    scale = (model.d_model / 512) * ((model.d_model + model.d_ff) / 2560) * (layers / 3) * ((96 + pred_len) / 192)
    return MODEL_WEIGHT.get(model.name, 1.0) * (STEP_OVERHEAD_S + STEP_REFERENCE_S * scale)


def _windows(run: DenseRun) -> int:
    return TRAIN_WINDOWS.get(run.labels.dataset, TRAIN_WINDOWS["ETTh1"])


def dense_seconds(run: DenseRun) -> float:
    config = run.config
    step = step_seconds(config.model, config.data.pred_len)
    per_epoch = int(_windows(run) * config.data.train_fraction) // config.train.batch_size
    steps = min(per_epoch, config.train.max_steps or per_epoch)
    eval_steps = _windows(run) * EVAL_SHARE / config.train.batch_size / 3  # a forward pass is ~1/3 of a step
    return SETUP_S + config.train.epochs * (steps + eval_steps / 2) * step + eval_steps / 2 * step


def prune_seconds(run: PruneRun) -> float:
    config, parent = run.config, run.parent
    dense = parent.config
    step = step_seconds(dense.model, dense.data.pred_len)
    test_steps = _windows(parent) * EVAL_SHARE / 2 / dense.train.batch_size / 3
    seconds = test_steps * step + MEASURE_S + run.config.latency_repeats * len(config.batch_sizes) * step / 3
    seconds += get_method(config.method).search_passes * step
    if config.finetune_epochs:
        per_epoch = int(_windows(parent) * dense.data.train_fraction) // dense.train.batch_size
        steps = min(per_epoch, config.finetune_max_steps or dense.train.max_steps or per_epoch)
        # a teacher (distillation from the dense parent) adds its forward pass, ~1/3 of a step, to every step
        teacher = 1 / 3 if config.distill > 0 else 0.0
        seconds += config.finetune_epochs * (steps * step * (1 + teacher) + test_steps * step)
    return seconds


def estimate(plan: Plan) -> Estimate:
    return Estimate(sum(dense_seconds(run) for run in plan.dense), sum(prune_seconds(run) for run in plan.prune))


# --- a cluster ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeShape:
    """What one node of a cluster offers runs: its CPUs and GPUs (as Ray counts them)."""

    node_id: str
    address: str
    cpus: float
    gpus: float = 0.0


def run_slots(nodes: list[NodeShape], cpus: float, gpus: float = 0.0) -> int:
    """How many runs asking ``cpus`` (at least 1) CPUs and ``gpus`` GPUs each the ``nodes`` hold at once (a run
    never spans nodes, so each node's share is rounded down on its own)."""
    total = 0
    for node in nodes:
        fits = int(node.cpus // cpus)
        if gpus > 0:
            fits = min(fits, int(node.gpus / gpus + 1e-9))  # 1e-9: three 1/3-GPU runs fit one GPU
        total += fits
    return total


def wall_seconds(plan: Plan, slots: int, threads: int = 1) -> float:
    """Estimated wall time of ``plan`` on ``slots`` run slots of ``threads`` threads each: the cost model's
    per-run times, divided by the threads (ideal scaling: optimistic for wide slots), list-scheduled the way the
    executors hand runs out (dense runs in order; a finished dense run's prune runs go first)."""
    if slots < 1:
        raise ValueError("no run slots")
    children = plan.children()
    queue: collections.deque[DenseRun | PruneRun] = collections.deque(plan.dense)
    running: list[tuple[float, int, DenseRun | PruneRun]] = []
    order, now = itertools.count(), 0.0
    while queue or running:
        while queue and len(running) < slots:
            run = queue.popleft()
            seconds = dense_seconds(run) if isinstance(run, DenseRun) else prune_seconds(run)
            heapq.heappush(running, (now + seconds / threads, next(order), run))
        now, _, run = heapq.heappop(running)
        if isinstance(run, DenseRun):
            queue.extendleft(reversed(children.get(run.run_id, [])))
    return now
