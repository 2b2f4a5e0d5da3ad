"""Structured pruning with Torch-Pruning's DepGraph: remove whole channels and head dimensions so the model becomes
physically smaller.

DepGraph traces autograd and couples every layer that must lose the same channels (a projection's outputs, the
LayerNorms and residual adds it feeds, the next projection's inputs). Our layers are written so the trace reads them
right (circular padding as a gather, routers repeated rather than expanded, no buffers of width ``d_model``); what
a trace cannot see is handled here by custom pruners:

* FEDformer's Fourier blocks: complex per-head weights ``[H, E_in, E_out, modes]`` lose the head dimensions their
  query (and key) projections lose on ``E_in``, and those the output projection loses on ``E_out``.
* Crossformer's segment merging: its LayerNorm and Linear see ``win_size`` copies of ``d_model`` side by side, so a
  removed channel ``c`` removes features ``i * d_model + c`` for every window position ``i``.
* Crossformer's routers and positional parameters: plain parameters pruned on their last (``d_model``) dimension.
* The sinusoidal positional encoding (Transformer, Informer) is computed, not stored, so no tracer sees it: after
  each step the channels its embedding kept are found and the encoding keeps the trained model's values for them.
* Informer's default ProbSparse layout (``tslib``) reads the ``[B, H, L, D]`` context as ``[B, L, H, D]``: output
  column ``k * D + d`` carries value dim ``d`` whatever ``D`` is, so removing the same value dims from every head
  (what head-dim pruning does: one set of indices, repeated per head) keeps the function. Removing a whole head
  would remove slot ``k`` of every row instead, which is not that head, so it is refused there.

``tests/test_structured_contract.py`` checks the result for every model: the pruned model computes what the dense
model computes with the removed weights zeroed.

Attention keeps equal head dimensions per head (default) or loses whole heads (``heads="heads"``); either way every
``AttentionLayer`` gets its ``n_heads`` written back, and attention temperatures are frozen at their trained value
``1/sqrt(E)`` so removing dimensions does not silently rescale the softmax.

Channels are ranked by a Torch-Pruning importance (``prune.importance``): ``l2`` magnitude (the study's), ``taylor``
``|w * dL/dw|``, or ``hessian``, Optimal Brain Damage ``w^2 * H_ww`` with the empirical Fisher ``E_n[(dL_n/dw)^2]``
(squared per-window gradients, averaged) as the Hessian's diagonal. ``L`` is the training MSE on seeded training
windows in eval mode; its gradients are taken once, on the unpruned model, and written into each trial's ``.grad``
(our own mean: Torch-Pruning 1.6's Hessian ``accumulate_grad`` keeps only the last sample).

The target is a *parameter* density; the channel ratio that reaches it is found by bisection (each trial prunes a
fresh copy), and the achieved density is reported. A pruner that hangs (DepGraph can loop on graphs it misreads) is
stopped by a time limit and reported as a failure.
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch_pruning as tp
from torch import nn

from tsprune.config import HEAD_MODES, SCOPES
from tsprune.errors import TsPruneError
from tsprune.measure import count_params, example_inputs
from tsprune.prune.importance import (Gradients, calibrate, check_gradients, clear_gradients, make_importance,
                                      scoring_gradients)
from tsprune.prune.methods import Pruned, TargetUnreachable
from tsprune.models.base import Forecaster
from tsprune.models.layers.attention import AttentionLayer
from tsprune.models.layers.embed import PositionedEmbedding
from tsprune.models.layers.prob_attention import ProbAttention
from tsprune.prune.custom_pruners import CUSTOM_PRUNERS, FlattenHeadPruner, FourierPruner, SegmentMergingPruner  # noqa: F401,E501
from tsprune.models.shapes import FROZEN_SETTINGS, apply_architecture, architecture  # noqa: F401 - re-exported

# Channel counts are rounded to multiples of ROUND_TO by default when the model is at least ROUND_MIN_WIDTH wide:
# CPU GEMMs ran odd widths (e.g. 246 x 1031) up to ~1.8x slower than the next multiple of 8, which kept DepGraph's
# speedup near 0.6x of its FLOPs reduction (benchmarks/profile_ops.py). Narrow models keep exact counts: there a
# step of 8 channels would be too coarse to reach a density target.
ROUND_TO = 8
ROUND_MIN_WIDTH = 128


class PruningTimeout(TsPruneError):
    """DepGraph did not finish within the time limit."""


@dataclass
class StructuredResult:
    """What a structured pruning call achieved (the pruned model is modified in place)."""

    target_density: float
    density: float  # achieved: parameters after / before
    channel_ratio: float  # the DepGraph pruning ratio that produced it
    params_before: int
    params_after: int
    reached: bool
    reason: str = ""
    trials: list[dict[str, float]] = field(default_factory=list)
    round_to: int | None = None  # channel counts are multiples of this (None: exact counts)


def default_round_to(model: nn.Module) -> int | None:
    """:data:`ROUND_TO` for models at least :data:`ROUND_MIN_WIDTH` wide (``config.d_model``), else None."""
    width = getattr(getattr(model, "config", None), "d_model", 0) or 0
    return ROUND_TO if width >= ROUND_MIN_WIDTH else None


# --------------------------------------------------------------------------------------------- pruning


def _params(model: nn.Module) -> int:
    return count_params(model)["params"]


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`PruningTimeout` after ``seconds`` (main thread only; elsewhere no limit can be set)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(*_: Any) -> None:
        raise PruningTimeout(f"structured pruning did not finish within {seconds:.0f} s (DepGraph may be looping)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def freeze_attention_scales(model: nn.Module) -> None:
    """Fix what attention derives from its width at the trained value, so removing channels changes nothing else:
    the softmax temperature ``1/sqrt(E)`` and Auto-Correlation's channel-average divisor ``H * E``."""
    for layer in model.modules():
        if not isinstance(layer, AttentionLayer):
            continue
        if hasattr(layer.inner, "scale") and layer.inner.scale is None:
            layer.inner.scale = 1.0 / math.sqrt(layer.query.out_features // layer.n_heads)
        if hasattr(layer.inner, "channels") and layer.inner.channels is None:
            layer.inner.channels = layer.query.out_features


def _attention_layers(model: nn.Module) -> list[AttentionLayer]:
    return [m for m in model.modules() if isinstance(m, AttentionLayer)]


def _refuse_whole_heads_in_mixed_layouts(model: nn.Module) -> None:
    """In Informer's ``tslib`` layout, column block ``k`` of the output projection reads slot ``k`` of every row, a
    mixture of heads and positions, not head ``k``; removing a head's block is not removing that head."""
    if any(isinstance(m, ProbAttention) and m.layout == "tslib" for m in model.modules()):
        raise TsPruneError("whole heads cannot be removed from Informer's prob_layout 'tslib' (its flattening mixes "
                           "heads and positions): use heads='dims', or prob_layout 'paper'")


def _pruner(model: nn.Module, inputs: tuple, ratio: float, scope: str, heads: str, round_to: int | None,
            importance: str = "l2"):
    num_heads: dict[nn.Module, int] = {}
    for layer in _attention_layers(model):
        for name in ("query", "key", "value"):
            if hasattr(layer, name):
                num_heads[getattr(layer, name)] = layer.n_heads
        if isinstance(layer.inner, tuple(CUSTOM_PRUNERS)):
            num_heads[layer.inner] = layer.n_heads  # its outputs are per head too
    unwrapped = [(model.get_parameter(name), dim % model.get_parameter(name).dim())
                 for name, dim in getattr(model, "unwrapped_parameters", {}).items()]
    fixed = (*cast(Forecaster, model).output_layers, *getattr(model, "fixed_output_layers", ()))
    ignored = [model.get_submodule(name) for name in fixed]
    whole_heads = heads == "heads"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch-Pruning warns about every unwrapped parameter it sees
        return tp.pruner.MetaPruner(
            model,
            inputs,
            importance=make_importance(importance),
            global_pruning=scope == "global",
            pruning_ratio=ratio,
            max_pruning_ratio=0.95,  # never empty a layer
            ignored_layers=ignored,
            round_to=round_to,
            num_heads=num_heads,
            prune_num_heads=whole_heads,
            prune_head_dims=not whole_heads,
            head_pruning_ratio=ratio if whole_heads else 0.0,
            customized_pruners=dict(CUSTOM_PRUNERS),
            unwrapped_parameters=unwrapped or None,
            root_module_types=[nn.Conv1d, nn.Linear, *CUSTOM_PRUNERS],
            forward_fn=lambda m, x: m(*x),
        )


def prune_channels(model: nn.Module, inputs: tuple, ratio: float, scope: str = "global", heads: str = "dims",
                   round_to: int | None = None, timeout_s: float | None = 600, importance: str = "l2",
                   gradients: Gradients | None = None) -> nn.Module:
    """Remove a fraction ``ratio`` of channels from ``model`` in place (one DepGraph step) and return it.
    ``taylor`` and ``hessian`` score ``gradients``, the unpruned model's by parameter name (``prune.importance``)."""
    if scope not in SCOPES:
        raise TsPruneError(f"unknown structured scope {scope!r}: use one of {', '.join(SCOPES)}")
    if heads not in HEAD_MODES:
        raise TsPruneError(f"unknown head mode {heads!r}: use one of {', '.join(HEAD_MODES)}")
    if heads == "heads" and any(isinstance(a.inner, tuple(CUSTOM_PRUNERS)) for a in _attention_layers(model)):
        raise TsPruneError("whole-head pruning is not supported for Fourier blocks: use heads='dims'")
    if heads == "heads":
        _refuse_whole_heads_in_mixed_layouts(model)
    freeze_attention_scales(model)
    was_training = model.training
    embeddings = {m: m.fingerprint() for m in model.modules()
                  if isinstance(m, PositionedEmbedding) and m.position is not None}
    with time_limit(timeout_s), torch.enable_grad():
        pruner = _pruner(model, inputs, ratio, scope, heads, round_to, importance)
        if ratio > 0:
            with scoring_gradients(model, importance, gradients):  # all groups are scored before any is pruned
                pruner.step()
    for layer in _attention_layers(model):  # heads removed by the pruner are written back to the layers
        layer.n_heads = pruner.num_heads.get(layer.query, layer.n_heads)
    for embedding, before in embeddings.items():
        _keep_positions(embedding, before)
    model.train(was_training)
    return model


def _keep_positions(embedding: PositionedEmbedding, before: torch.Tensor) -> None:
    """Point the embedding's positional encoding at the channels it kept (``before``: its fingerprint then)."""
    after = embedding.fingerprint()
    if after.shape[0] == before.shape[0]:
        return
    kept, row = [], 0
    for channel in range(after.shape[0]):  # pruning keeps channels in order: match each row to the next equal one
        while row < before.shape[0] and not torch.equal(before[row], after[channel]):
            row += 1
        if row == before.shape[0]:
            raise TsPruneError("structured pruning changed an embedding's weights, not only its channels")
        kept.append(row)
        row += 1
    position = embedding.position
    if position is None:  # only embeddings with a positional encoding are passed in
        return
    previous = position.channels if position.channels is not None else list(range(before.shape[0]))
    position.width = position.width or before.shape[0]
    position.channels = [previous[i] for i in kept]


def prune_to_density(model: nn.Module, inputs: tuple, density: float, scope: str = "global", heads: str = "dims",
                     round_to: int | None = None, tolerance: float = 0.005, max_trials: int = 14,
                     timeout_s: float | None = 600, importance: str = "l2",
                     gradients: Gradients | None = None) -> tuple[nn.Module, StructuredResult]:
    """Prune a copy of ``model`` until its parameter count is at most ``density`` of the original (within
    ``tolerance`` below it); returns the pruned copy and what was achieved. ``model`` is left untouched.

    The channel ratio is searched upwards in steps of 0.1, then bisected inside the step that crosses the target.
    (A plain bisection over [0, 1] is unsafe: near full removal DepGraph skips groups it cannot empty, so the
    parameter count stops falling with the ratio.) ``round_to`` None picks :func:`default_round_to`; 1 keeps exact
    channel counts. ``importance``, ``gradients``: see :func:`prune_channels`. The copy returned has no ``.grad``.
    """
    if not 0.0 < density <= 1.0:
        raise TsPruneError(f"density must be in (0, 1], got {density}")
    check_gradients(importance, gradients)
    if round_to is None:
        round_to = default_round_to(model)
    round_to = round_to if round_to and round_to > 1 else None
    before = _params(model)
    trials: list[dict[str, float]] = []

    def attempt(ratio: float) -> tuple[nn.Module, float]:
        pruned = prune_channels(copy.deepcopy(model), inputs, ratio, scope, heads, round_to, timeout_s, importance,
                                gradients)
        achieved = _params(pruned) / before
        trials.append({"channel_ratio": round(ratio, 6), "density": achieved})
        return pruned, achieved

    def result(pruned: nn.Module, ratio: float, reason: str = "") -> tuple[nn.Module, StructuredResult]:
        after = _params(pruned)
        clear_gradients(pruned)  # nothing of the scoring reaches fine-tuning or a saved run
        return pruned, StructuredResult(density, after / before, ratio, before, after, not reason, reason, trials,
                                        round_to)

    if density >= 1.0:
        return result(copy.deepcopy(model), 0.0)
    low, closest = 0.0, (copy.deepcopy(model), 1.0, 0.0)
    for step in range(1, 10):
        ratio = step / 10
        pruned, achieved = attempt(ratio)
        if achieved < closest[1]:
            closest = (pruned, achieved, ratio)
        if achieved <= density:
            best, best_density, high = pruned, achieved, ratio
            break
        low = ratio
    else:
        return result(closest[0], closest[2], f"density {density} is out of reach for this model: at most "
                                               f"{1 - closest[1]:.1%} of its parameters can be removed")
    for _ in range(max_trials):
        if best_density >= density - tolerance:
            break
        middle = (low + high) / 2
        pruned, achieved = attempt(middle)
        if achieved <= density:
            high, best, best_density = middle, pruned, achieved
        else:
            low = middle
    return result(best, high)


def prune_dependency_graph(model: nn.Module, data: Any, config: Any, train: Any, device: torch.device) -> Pruned:
    """The method record's implementation (``prune.methods``): prune ``model`` to ``config.density`` of its
    parameters, traced on two real windows of ``data`` (gradients, if used: ``calibration_windows``, ``train.seed``)."""
    inputs = example_inputs(data, 2, device=device)
    gradients, calibration = calibrate(model, data, config.importance, config.calibration_windows, train.seed, device)
    pruned, result = prune_to_density(model, inputs, config.density, config.scope, config.heads, config.round_to,
                                      timeout_s=config.timeout_s, importance=config.importance, gradients=gradients)
    if not result.reached:
        raise TargetUnreachable(result.reason)
    facts = {"importance": config.importance, **calibration, "channel_ratio": result.channel_ratio,
             "search_trials": len(result.trials), "density_params": result.density, "round_to": result.round_to}
    return Pruned(pruned, None, facts, architecture(pruned))
