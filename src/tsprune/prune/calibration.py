"""Calibration data for the pruning methods that look at inputs (Wanda, SparseGPT, DepGraph's Taylor and Hessian
importances): a seeded sample of *training* windows, and hooks that gather what each layer sees of them.

Windows come from the training split only: validation picks the checkpoint and test scores it, so neither may shape
the pruning. They are the windows the model trains on: encoder values, decoder input (the last ``label_len``
values, then zeros) and both time-feature tensors, drawn without replacement by a generator seeded with the run's
training seed.

A layer's input is read as a matrix ``X [tokens, features]`` whose rows meet the weight viewed as
``W [rows, features]`` in one product ``X @ W.T`` (:func:`layer_features`):

* ``Linear``: every position of every window is a token; the features are the input channels.
* ``Conv1d`` (no groups): a token is one output position; its features are the receptive field, channel-major
  (``c * kernel + t``), which is ``weight.view(out, -1)``'s column order. Padding is applied as the layer would.
* FEDformer's Fourier blocks are per-(head, mode) complex maps ``E_in -> E_out``; their inputs are the kept
  frequency components (:meth:`mixing_input`), not a matrix against one real weight (see ``prune.oneshot``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tsprune.data.dataset import Batch, ForecastData
from tsprune.errors import TsPruneError
from tsprune.runtime import seeded_inference

CALIBRATION_WINDOWS = 128  # the default sample size (Wanda and SparseGPT calibrate on 128 sequences)
CHUNK = 32  # windows per forward pass: bounds the memory of captured activations


def calibration_starts(data: ForecastData, windows: int, seed: int) -> Tensor:
    """First rows (in the training split) of ``windows`` distinct training windows, a seeded sample, sorted.

    Every row a window reads (encoder ``seq_len`` rows and the ``pred_len`` rows after them) lies in the training
    split: starts range over ``data.n_windows("train")``, the windows that fit inside it.
    """
    if windows < 1:
        raise TsPruneError(f"calibration_windows must be at least 1, got {windows}", options=("calibration_windows",))
    available = data.n_windows("train")
    if available == 0:
        raise TsPruneError("the training split has no complete window to calibrate on")
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(available, generator=generator)[:windows].sort().values


def calibration_batches(data: ForecastData, windows: int, seed: int, device: torch.device | str = "cpu",
                        chunk: int = CHUNK) -> list[Batch]:
    """The calibration sample as batches of at most ``chunk`` windows (inputs and targets, scaled)."""
    starts = calibration_starts(data, windows, seed)
    return [data.batch("train", part, device) for part in starts.split(chunk)]


def layer_features(module: nn.Module, inputs: Tensor) -> Tensor:
    """What ``module`` multiplies its weight with, as ``X [tokens, features]`` (see the module doc).

    ``inputs``: a Linear's ``[..., in_features]`` or a Conv1d's ``[batch, channels, length]``.
    """
    if isinstance(module, nn.Linear):
        return inputs.reshape(-1, module.in_features)
    if isinstance(module, nn.Conv1d):
        if module.groups != 1:
            raise TsPruneError("grouped convolutions are not supported by calibrated pruning")
        x = inputs
        pad = module.padding
        if isinstance(pad, str) or module.padding_mode != "zeros" and any(pad):
            raise TsPruneError("Conv1d with string or non-zero-mode padding is not supported by calibrated pruning")
        if pad[0]:
            x = F.pad(x, (pad[0], pad[0]))
        span = module.dilation[0] * (module.kernel_size[0] - 1) + 1
        patches = x.unfold(-1, span, module.stride[0])[..., ::module.dilation[0]]  # [B, C, L_out, k]
        return patches.permute(0, 2, 1, 3).reshape(-1, module.in_channels * module.kernel_size[0])
    raise TsPruneError(f"{type(module).__name__} has no real input matrix")  # pragma: no cover - callers check


class Enough(Exception):
    """Raised by a hook that has gathered all it needs from a batch: the rest of that forward pass is skipped."""


def run_calibration(model: nn.Module, batches: list[Batch], device: torch.device) -> None:
    """One seeded, gradient-free pass of the model over the calibration batches (hooks do the gathering; a hook
    may end a batch's forward early by raising :class:`Enough`)."""
    was_training = model.training
    model.eval()
    try:
        with seeded_inference(device):
            for batch in batches:
                try:
                    model(*batch.inputs())
                except Enough:
                    pass
    finally:
        model.train(was_training)


@contextlib.contextmanager
def capturing(modules: Mapping[str, nn.Module], gather: Callable[[str, nn.Module, tuple], None]) -> Iterator[None]:
    """Call ``gather(name, module, inputs)`` on every forward of each module while the context is open."""
    handles = [module.register_forward_pre_hook(lambda m, args, name=name: gather(name, m, args))
               for name, module in modules.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def execution_order(model: nn.Module, modules: Mapping[str, nn.Module], batch: Batch,
                    device: torch.device) -> list[str]:
    """``modules``' names in the order of their first call in a forward pass (a layer never called is left out)."""
    order: dict[str, None] = {}
    with capturing(modules, lambda name, *_: order.setdefault(name, None)):
        run_calibration(model, [batch], device)
    return list(order)
