"""Fine-tuning a pruned model as its recipe (``prune.recipes``) says: masks kept, raised along a gradual schedule,
and with or without the dense parent as a teacher.

* **Masks kept** (one shot): ``unstructured.finetune``; a structured model has no masks and trains as it is.
* **Gradual** (Zhu & Gupta 2017): fine-tuning starts from the dense parent; every ``gradual_every`` optimiser steps
  the method's magnitude ranking is recomputed over the still-kept weights at the density
  :func:`tsprune.schedule.gradual_density` gives, until the target is met at ``gradual_ramp`` of the budget; the
  rest of the budget fine-tunes the final mask. Pruned weights are zero from the step they are cut, and their
  gradients are zeroed, so the masks nest: every mask is a subset of the one before.
* **Distillation**: the loss is the MSE to the target plus ``distill`` times the MSE to the dense parent's forecast
  for the same windows (training split only; the parent frozen, in eval mode).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tsprune.config import PruneConfig, TrainConfig
from tsprune.data.dataset import Batch, ForecastData
from tsprune.prune.methods import get_method
from tsprune.prune.recipes import GRADUAL
from tsprune.prune.unstructured import MaskEnforcer, apply_masks, finetune, magnitude_masks, prunable_parameters
from tsprune.runtime import evaluating
from tsprune.schedule import gradual_density, gradual_end, gradual_prunes_at
from tsprune.train import Objective, TrainResult, fit, steps_per_epoch

# The teacher's forward passes draw from their own RNG seeded with this (Informer samples keys even in eval mode):
# they never advance the student's random stream (dropout, shuffling).
TEACHER_SEED = 0


class Distillation:
    """Loss ``MSE(forecast, target) + alpha * MSE(forecast, teacher's forecast)``, each over ``[batch, pred_len,
    c_out]``.

    The teacher runs in eval mode under inference mode, on a forked RNG seeded with :data:`TEACHER_SEED`: it
    receives no gradient, its weights never change, and the student's random state is what it would be without it,
    so ``alpha = 0`` is plain fine-tuning bit for bit (``tests/test_recipes.py``).
    """

    def __init__(self, teacher: nn.Module, alpha: float, device: torch.device) -> None:
        self.teacher, self.alpha, self.device = teacher, float(alpha), torch.device(device)

    def forecast(self, batch: Batch) -> Tensor:
        """The teacher's forecast for ``batch``, a plain tensor outside autograd."""
        with evaluating(self.teacher, self.device, TEACHER_SEED):
            forecast = self.teacher(*batch.inputs())
        return forecast.clone()  # an inference tensor cannot be saved for backward; its clone can

    def __call__(self, forecast: Tensor, batch: Batch) -> Tensor:
        return F.mse_loss(forecast, batch.y) + self.alpha * F.mse_loss(forecast, self.forecast(batch))


class GradualPruner:
    """``fit``'s ``after_step`` for a gradual schedule: keeps the masks, cuts along the schedule, records the cuts.

    Built over the prunable weights (``{name: weight}``) with all-true masks (density 1 at step 0); ``attach``
    hooks their gradients. After each optimiser step it first re-applies the current masks (Adam's moments may move
    a weight cut earlier), then, at a pruning step, ranks the kept weights by ``|w|`` at the schedule's density and
    narrows each mask in place (the gradient hooks hold the same tensors). ``trace`` lists ``(step, density)`` of
    every cut.
    """

    def __init__(self, params: Mapping[str, Tensor], target: float, total_steps: int, every: int, ramp: float,
                 scope: str) -> None:
        self.names = list(params)
        self.enforcer = MaskEnforcer({name: torch.ones_like(weight, dtype=torch.bool)
                                      for name, weight in params.items()})
        self.target, self.every, self.scope = target, every, scope
        self.end = gradual_end(total_steps, ramp)
        self.step = 0
        self.trace: list[tuple[int, float]] = []

    @property
    def masks(self) -> dict[str, Tensor]:
        return dict(self.enforcer.masks)

    def density(self, step: int) -> float:
        """The schedule's density after optimiser step ``step``."""
        return gradual_density(step, self.end, self.every, self.target)

    def attach(self, model: nn.Module) -> None:
        self.enforcer.hook_gradients(model)

    def detach(self) -> None:
        self.enforcer.remove_hooks()

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> None:
        self.step += 1
        self.enforcer(model)
        if not gradual_prunes_at(self.step, self.end, self.every):
            return
        self.cut(model, self.density(self.step))

    @torch.no_grad()
    def cut(self, model: nn.Module, density: float) -> None:
        """Narrow the masks to ``density`` by ``|w|`` among the kept weights, apply them, and record the cut."""
        params = {name: model.get_parameter(name) for name in self.names}
        for name, mask in magnitude_masks(params, density, self.scope).items():
            self.enforcer.masks[name].logical_and_(mask.to(self.enforcer.masks[name].device))
        self.enforcer(model)
        self.trace.append((self.step, density))


def finetune_pruned(model: nn.Module, masks: Mapping[str, Tensor] | None, data: ForecastData, train: TrainConfig,
                    config: PruneConfig, device: torch.device, teacher: nn.Module | None = None,
                    progress: bool = False) -> tuple[TrainResult, dict[str, Tensor] | None, dict[str, Any]]:
    """Fine-tune the pruned ``model`` in place for ``train.epochs`` as ``config`` says; returns the training result,
    the final masks (None for a structured model) and facts to record.

    ``masks`` are the method's (ignored by a gradual schedule, which starts from ``model`` dense: pass the dense
    parent's copy). ``teacher`` is the dense parent, needed when ``config.distill`` > 0.
    """
    objective: Objective | None = None
    if config.distill > 0:
        if teacher is None:
            raise ValueError("distillation needs the dense parent as teacher")
        objective = Distillation(teacher.to(device), config.distill, device)
    if config.schedule != GRADUAL:
        if masks is None:
            return fit(model, data, train, device, progress=progress, objective=objective), None, {}
        return finetune(model, masks, data, train, device, progress=progress, objective=objective), dict(masks), {}
    scope = get_method(config.method).gradual_scope
    if scope is None:
        raise ValueError(f"{config.method} has no gradual form")  # prune.recipes.check refuses it first
    model.to(device)
    pruner = GradualPruner(prunable_parameters(model, config.include_embeddings, config.include_fourier),
                           config.density, train.epochs * steps_per_epoch(data, train), config.gradual_every,
                           config.gradual_ramp, scope)
    pruner.attach(model)
    try:
        result = fit(model, data, train, device, after_step=pruner, progress=progress, objective=objective)
    finally:
        pruner.detach()
    short = pruner.step < pruner.end  # training stopped before the schedule's end: cut to the target now
    if short:
        pruner.cut(model, config.density)
    final = pruner.masks
    # ``fit`` restores the best validation epoch; were that one from before the final cut (a budget of several
    # epochs with the ramp beyond the first), the final mask is applied to it, and the record says so.
    before_final = short or result.best_epoch * steps_per_epoch(data, train) < pruner.end
    apply_masks(model, final)
    facts = {"gradual_cuts": [[step, density] for step, density in pruner.trace], "gradual_end_step": pruner.end,
             "gradual_total_steps": pruner.step, **({"gradual_best_before_final_mask": True} if before_final else {})}
    return result, final, facts
