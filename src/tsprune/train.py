"""One training loop for every forecaster (and, later, for fine-tuning pruned ones), plus evaluation.

Protocol defaults are the study's: Adam, MSE loss, batch 32, lr halved after each epoch, early stopping on the
validation MSE with the best weights restored.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
import shutil
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from tsprune.checkpoint import load_training_state, save_training_state, training_state_dir
from tsprune.config import RunConfig, TrainConfig
from tsprune.data.dataset import Batch, ForecastData
from tsprune.errors import TsPruneError
from tsprune.runtime import configure_threads, resolve_device, seed_everything, seeded_inference

if TYPE_CHECKING:  # pragma: no cover
    from tsprune.run import Run


class TrainingDiverged(TsPruneError):
    """The loss became NaN or infinite."""


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """Learning rate of 0-based ``epoch``."""
    if config.lr_schedule == "halve":
        return config.lr * 0.5**epoch
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))
    return config.lr


EVAL_SEED = 0


def evaluate(model: nn.Module, data: ForecastData, split: str = "test", batch_size: int = 32,
             device: torch.device | str = "cpu") -> dict[str, float]:
    """MSE/MAE over **all** windows of ``split``: scaled (the field's convention) and in original units.

    Evaluation draws from its own seeded RNG (Informer samples keys even in eval mode), so the same weights always
    give the same metrics and the caller's RNG stream is left untouched.
    """
    device = torch.device(device)
    with seeded_inference(device, EVAL_SEED):
        return _evaluate(model, data, split, batch_size, device)


def _evaluate(model: nn.Module, data: ForecastData, split: str, batch_size: int,
              device: torch.device) -> dict[str, float]:
    model.eval()
    channels = slice(len(data.columns) - data.c_out, None)
    sums = torch.zeros(4, dtype=torch.float64)
    count = 0
    for batch in data.batches(split, batch_size, device=device):
        pred = model(*batch.inputs())
        err = pred - batch.y
        raw_err = data.scaler.inverse(pred.double(), channels) - data.scaler.inverse(batch.y.double(), channels)
        sums += torch.stack([err.double().pow(2).sum(), err.double().abs().sum(),
                             raw_err.pow(2).sum(), raw_err.abs().sum()]).cpu()
        count += err.numel()
    if count == 0:
        raise TsPruneError(f"the {split} split has no complete window")
    mse, mae, mse_raw, mae_raw = (sums / count).tolist()
    return {"mse": mse, "mae": mae, "mse_raw": mse_raw, "mae_raw": mae_raw}


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    epochs_run: int = 0
    train_seconds: float = 0.0
    stopped_early: bool = False


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        disable=not enabled, transient=False,
    )


def epoch_line(entry: dict[str, float]) -> str:
    """One line summarising a finished epoch (an entry of :attr:`TrainResult.history`)."""
    return (f"epoch {entry['epoch']}: train loss {entry['train_loss']:.4f}, val mse {entry['val_mse']:.4f}, "
            f"lr {entry['lr']:.2e}, {entry['seconds']:.0f}s elapsed")


def steps_per_epoch(data: ForecastData, config: TrainConfig) -> int:
    """Optimiser steps in one epoch of :func:`fit`: full training batches, at most ``config.max_steps``."""
    steps = data.n_batches("train", config.batch_size, drop_last=True)
    return min(steps, config.max_steps) if config.max_steps is not None else steps


# A training loss: (forecast [batch, pred_len, c_out], the batch it is for) -> scalar.
Objective = Callable[[torch.Tensor, Batch], torch.Tensor]


def fit(model: nn.Module, data: ForecastData, config: TrainConfig, device: torch.device,
        after_step: Callable[[nn.Module], None] | None = None, progress: bool = True,
        state_dir: Path | None = None, log: Callable[[str], None] | None = None,
        objective: Objective | None = None) -> TrainResult:
    """Train ``model`` in place; on return it holds the weights of the best validation epoch.

    ``after_step`` runs after every optimiser step (fine-tuning re-applies pruning masks there).
    ``objective`` replaces the MSE to the target as the training loss (distillation adds a teacher's forecast);
    validation and early stopping read the validation MSE whatever it is.
    ``state_dir`` saves the training state after every epoch and resumes from it when one is there.
    ``log`` receives a line per finished epoch (and one on resuming) when no progress bar prints them, e.g. for
    background runs whose output goes to a file.
    """
    config.validate()
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = nn.MSELoss()
    result = TrainResult()
    best_val, best_state, bad_epochs = math.inf, None, 0
    steps = steps_per_epoch(data, config)
    first_epoch, elapsed_before, resumed, finished = 0, 0.0, None, False
    if state_dir is not None:
        restored = load_training_state(state_dir, model, optimizer, generator)
        if restored is not None:
            counters, best_state = restored
            first_epoch, best_val, bad_epochs = counters["epoch"], counters["best_val"], counters["bad_epochs"]
            result.history, result.best_epoch = counters["history"], counters["best_epoch"]
            result.stopped_early, elapsed_before = counters["stopped_early"], counters["seconds"]
            finished = result.stopped_early or first_epoch >= config.epochs
            what = f"training in {state_dir} already finished" if finished else f"resuming from {state_dir}"
            resumed = f"{what} after epoch {first_epoch} (best val mse {best_val:.4f} at epoch {result.best_epoch})"
    result.epochs_run = first_epoch
    if finished:
        first_epoch = config.epochs  # nothing left to train: only restore the best weights below
    start = time.perf_counter() - elapsed_before
    with _progress(progress) as bar:
        say = (lambda line: bar.console.print(line, highlight=False)) if progress else log
        if resumed is not None and say is not None:
            say(resumed)
        for epoch in range(first_epoch, config.epochs):
            lr = learning_rate(config, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            task = bar.add_task(f"epoch {epoch + 1}/{config.epochs}", total=steps, loss=float("nan"))
            model.train()
            losses = []
            for step, batch in enumerate(data.batches("train", config.batch_size, shuffle=True, drop_last=True,
                                                      generator=generator, device=device)):
                if step >= steps:
                    break
                optimizer.zero_grad(set_to_none=True)
                pred = model(*batch.inputs())
                loss = objective(pred, batch) if objective is not None else loss_fn(pred, batch.y)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"training diverged: loss is {loss.item()} at epoch {epoch + 1}, step "
                                           f"{step + 1}; lower the learning rate (lr)", options=("lr",))
                loss.backward()
                optimizer.step()
                if after_step is not None:
                    after_step(model)
                losses.append(loss.item())
                bar.update(task, advance=1, loss=float(np.mean(losses[-50:])))
            val = evaluate(model, data, "val", config.batch_size, device)["mse"]
            result.history.append({"epoch": epoch + 1, "lr": lr, "train_loss": float(np.mean(losses)), "val_mse": val,
                                   "seconds": time.perf_counter() - start})
            bar.update(task, description=f"epoch {epoch + 1}/{config.epochs} val {val:.4f}")
            if say is not None:
                say(epoch_line(result.history[-1]))
            result.epochs_run = epoch + 1
            if val < best_val:
                best_val, best_state, bad_epochs = val, copy.deepcopy(model.state_dict()), 0
                result.best_epoch = epoch + 1
            else:
                bad_epochs += 1
                if bad_epochs >= config.patience:
                    result.stopped_early = True
            if state_dir is not None:
                save_training_state(state_dir, model, best_state, optimizer, generator, {
                    "epoch": epoch + 1, "best_val": best_val, "bad_epochs": bad_epochs, "history": result.history,
                    "best_epoch": result.best_epoch, "seconds": time.perf_counter() - start,
                    "stopped_early": result.stopped_early})
            if result.stopped_early:
                break
    result.train_seconds = time.perf_counter() - start
    if best_state is not None:
        model.load_state_dict(best_state)
    return result


def train_run(config: RunConfig, out: str | Path | None = None, progress: bool = True,
          log: Callable[[str], None] | None = None) -> Run:
    """Train a dense forecaster with ``config``; write the run directory to ``out`` when given.

    Without a progress bar, ``log`` (e.g. ``print``) still receives one line per epoch.
    """
    from tsprune.configure import bind_to_data
    from tsprune.data.dataset import prepare_data
    from tsprune.models.registry import build_model
    from tsprune.run import Run, environment, save_run

    configure_threads(config.train.threads)
    device = resolve_device(config.train.device)
    data = prepare_data(config.data)  # validates the data before anything is built or trained
    config = bind_to_data(config, data)
    seed_everything(config.train.seed)
    model = build_model(config.model).to(device)
    state_dir = training_state_dir(Path(out), config) if out is not None else None
    result = fit(model, data, config.train, device, progress=progress, state_dir=state_dir, log=log)
    started = time.perf_counter()
    metrics: dict[str, Any] = evaluate(model, data, "test", config.train.batch_size, device)
    metrics.update({
        "params": sum(p.numel() for p in model.parameters()),
        "train_seconds": result.train_seconds,
        "test_seconds": time.perf_counter() - started,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "best_val_mse": min(h["val_mse"] for h in result.history),
        "test_windows": data.n_windows("test"),
        "history": result.history,
        "device": str(device),
        "environment": environment(device),
    })
    run = Run(config, model.cpu(), data.scaler, data.columns, data.freq, metrics)
    if out is not None:
        save_run(run, Path(out))
    if state_dir is not None:  # set exactly when ``out`` is
        shutil.rmtree(state_dir, ignore_errors=True)  # the run is complete: nothing left to resume
    return run
