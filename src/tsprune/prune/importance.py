"""How DepGraph ranks channels (``PruneConfig.importance``), and the calibration gradients two of the rankings need.

* ``l2``: the L2 norm of each channel's weights (Torch-Pruning's ``GroupMagnitudeImportance(p=2)``), the study's.
* ``taylor``: first-order Taylor expansion of the loss, ``|w * dL/dw|`` summed over a channel's weights
  (``GroupTaylorImportance``), with ``dL/dw`` the gradient of the mean training loss over the calibration windows.
* ``hessian``: Optimal Brain Damage, ``w^2 * H_ww`` summed over a channel's weights (``GroupHessianImportance``),
  with the Hessian's diagonal estimated by the empirical Fisher: the mean over windows of each window's squared
  gradient, ``H_ww ~ E_n[(dL_n/dw)^2]``.

The loss is the training loss (MSE of the forecast against the scaled target) on a seeded sample of training windows
(``prune.calibration``), with the model in eval mode (no dropout) and a seeded random stream (Informer's ProbSparse
attention samples keys), so the gradients, and the pruned model, are reproducible.

Torch-Pruning's importances read ``param.grad`` of every layer they score. The gradients are computed here once, on
the unpruned model, and kept by parameter name (:func:`calibration_gradients`); ``prune.structured`` writes them
into each trial copy before its pruning step and clears them afterwards.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import torch
import torch_pruning as tp
from torch import Tensor, nn

from tsprune.config import IMPORTANCES
from tsprune.data.dataset import Batch, ForecastData
from tsprune.errors import TsPruneError
from tsprune.prune.calibration import calibration_batches
from tsprune.runtime import INFERENCE_SEED

GRADIENT_IMPORTANCES = ("taylor", "hessian")  # the importances that read calibration gradients

Gradients = Mapping[str, Tensor]  # parameter name -> a tensor shaped like the parameter


def check_importance(importance: str) -> None:
    """Raise a clear error for an importance name that is not one of ``config.IMPORTANCES``."""
    if importance not in IMPORTANCES:
        raise TsPruneError(f"unknown importance {importance!r}: use one of {', '.join(IMPORTANCES)}",
                           options=("importance",))


def check_gradients(importance: str, gradients: Gradients | None) -> None:
    """Raise unless ``importance`` is known and, when it scores gradients, ``gradients`` are given."""
    check_importance(importance)
    if importance in GRADIENT_IMPORTANCES and gradients is None:
        raise TsPruneError(f"importance {importance!r} needs calibration gradients: compute them with "
                           "prune.importance.calibration_gradients on the unpruned model")


def make_importance(importance: str) -> tp.importance.Importance:
    """Torch-Pruning's importance object for ``importance`` (each call a fresh one: Hessian's holds state)."""
    check_importance(importance)
    if importance == "taylor":
        return tp.importance.GroupTaylorImportance()
    if importance == "hessian":
        # Its accumulate_grad is not used: in Torch-Pruning 1.6 it tests `name not in self._accu_grad` but stores
        # under the parameter, so every call overwrites and only the last sample is kept. calibration_gradients
        # computes E[g^2] itself and the caller writes it into .grad; with `_accu_grad` left empty, __call__ scores
        # w^2 * .grad directly.
        return tp.importance.GroupHessianImportance()
    return tp.importance.GroupMagnitudeImportance(p=2)  # the study's L2 magnitude


@contextlib.contextmanager
def _seeded_gradients(model: nn.Module, device: torch.device, seed: int = INFERENCE_SEED) -> Iterator[None]:
    """``model`` in eval mode with autograd on, on a forked random stream seeded with ``seed`` (CPU and the CUDA
    device): what ``runtime.seeded_inference`` does, but with gradients. Mode and random state are restored."""
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    was_training = model.training
    model.eval()  # dropout off: the gradients are those of the function that is pruned
    try:
        with torch.random.fork_rng(devices=cuda), torch.enable_grad():
            torch.manual_seed(seed)  # seeds the CPU and every CUDA generator
            yield
    finally:
        model.train(was_training)


def _window_losses(model: nn.Module, batch: Batch) -> Tensor:
    """The training loss (MSE) of each window of ``batch``: ``[B]`` (their mean is ``nn.MSELoss()``'s value)."""
    out = model(*batch.inputs())  # [B, pred_len, c_out]
    return nn.functional.mse_loss(out, batch.y, reduction="none").flatten(1).mean(1)


def _grad(loss: Tensor, params: Sequence[nn.Parameter]) -> list[Tensor]:
    """``d loss / d param`` for each param, zeros for a parameter the loss does not reach (``torch.autograd.grad``
    leaves ``.grad`` untouched, so the model's own gradients, if any, are not disturbed)."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def calibration_gradients(model: nn.Module, batches: Sequence[Batch], importance: str,
                          device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """The gradients ``importance`` scores with, by parameter name, computed on ``model`` over ``batches``.

    ``taylor``: ``dL/dw`` of the mean loss over all windows. ``hessian``: ``E_n[(dL_n/dw)^2]``, the mean over windows
    of each window's squared gradient (|g|^2 for complex parameters). Every parameter gets an entry shaped like it:
    zeros where the loss does not reach it or it is frozen, since the importances read ``.grad`` of every layer they
    score. ``model``'s parameters and their ``.grad`` are left as they were.
    """
    check_importance(importance)
    if importance not in GRADIENT_IMPORTANCES:
        raise TsPruneError(f"importance {importance!r} uses no gradients")
    windows = sum(int(batch.y.shape[0]) for batch in batches)
    if windows == 0:
        raise TsPruneError("no calibration windows to compute gradients on")
    named = dict(model.named_parameters())
    trainable = [name for name, p in named.items() if p.requires_grad]
    params = [named[name] for name in trainable]
    total = [torch.zeros_like(p) for p in params]
    with _seeded_gradients(model, torch.device(device)):
        for batch in batches:
            if importance == "taylor":
                # sum of window losses / all windows: accumulated over batches this is the mean over windows
                for acc, g in zip(total, _grad(_window_losses(model, batch).sum() / windows, params)):
                    acc.add_(g)
                continue
            # Per-window gradients: one backward pass per window on its own (batch of 1). Backpropagating each row
            # of a batched loss instead would cost a whole batch's backward per window.
            for row in range(batch.y.shape[0]):
                one = Batch(*(t[row:row + 1] for t in (*batch.inputs(), batch.y)))
                for acc, g in zip(total, _grad(_window_losses(model, one).sum(), params)):
                    acc.add_(g * g.conj() / windows)  # g^2 for real weights, |g|^2 for complex ones
    gradients = {name: torch.zeros_like(p).detach() for name, p in named.items()}
    gradients.update({name: acc.detach() for name, acc in zip(trainable, total)})
    return gradients


def set_gradients(model: nn.Module, gradients: Gradients) -> None:
    """Write ``gradients`` into the ``.grad`` of ``model``'s parameters, by name (a copy each; zeros for a name
    without an entry). Done explicitly: a deep copy does not carry ``.grad`` (``nn.Parameter.__deepcopy__``)."""
    for name, param in model.named_parameters():
        grad = gradients.get(name)
        if grad is not None and grad.shape != param.shape:
            raise TsPruneError(f"gradient for {name} is shaped {tuple(grad.shape)}, its parameter "
                               f"{tuple(param.shape)}: gradients must come from the unpruned model")
        param.grad = torch.zeros_like(param) if grad is None else grad.detach().to(param).clone()


@contextlib.contextmanager
def scoring_gradients(model: nn.Module, importance: str, gradients: Gradients | None) -> Iterator[None]:
    """``gradients`` in ``model``'s ``.grad`` while the context is open, for ``taylor`` and ``hessian`` (``l2``
    leaves ``.grad`` alone); every ``.grad`` is None afterwards, even if the step fails."""
    if importance not in GRADIENT_IMPORTANCES:
        yield
        return
    check_gradients(importance, gradients)
    set_gradients(model, cast(Gradients, gradients))
    try:
        yield  # Torch-Pruning prunes each .grad along with its weight, so the rest of the step stays consistent
    finally:
        clear_gradients(model)


def calibrate(model: nn.Module, data: ForecastData, importance: str, windows: int, seed: int,
              device: torch.device | str = "cpu") -> tuple[Gradients | None, dict[str, Any]]:
    """:func:`calibration_gradients` on ``windows`` training windows drawn with ``seed`` when ``importance`` needs
    them (else None), and the facts to record: windows actually used (fewer if the split is short) and seconds."""
    if importance not in GRADIENT_IMPORTANCES:
        check_importance(importance)
        return None, {}
    started = time.perf_counter()
    batches = calibration_batches(data, windows, seed, device)
    gradients = calibration_gradients(model, batches, importance, device)
    return gradients, {"calibration_windows": sum(int(batch.y.shape[0]) for batch in batches),
                       "importance_seconds": time.perf_counter() - started}


def clear_gradients(model: nn.Module) -> None:
    """Set every parameter's ``.grad`` to None, so no calibration gradient reaches fine-tuning or a saved run."""
    for param in model.parameters():
        param.grad = None
