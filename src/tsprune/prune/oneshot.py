"""One-shot unstructured pruning that needs no retraining to hold accuracy: Wanda, SparseGPT and LAMP.

They cut the same weights magnitude pruning may cut (``unstructured.prunable_parameters``: every Linear and Conv1d
but the output layers, embeddings on request) and return keep-masks, so fine-tuning keeps them exact as it does for
magnitude's.

* **Wanda** (Sun et al. 2023) scores weight ``W[r, j]`` by ``|W[r, j]| * ||X_j||_2``: its magnitude times the norm
  of the input feature it multiplies, over every calibration token. The paper compares weights within each output
  row (``comparison="row"``); ``layer`` ranks each layer's weights together, ``global`` all prunable weights. One
  calibration pass of the unpruned model gives every norm: Wanda updates no weight, so there is nothing to feed
  forward.
* **SparseGPT** (Frantar & Alistarh 2023) prunes each layer to minimise ``||X W^T - X W'^T||`` on its calibration
  inputs: the Optimal-Brain-Surgeon update, column by column, from the inverse of the damped Hessian
  ``H = X^T X + damping * mean(diag H) * I`` (damping 0.1 by default, see below). Layers are processed in the
  order the forward pass calls them, each on the inputs the *already pruned* earlier layers produce (as the paper
  does); layers that read the very same input tensor (the query, key and value projections) are pruned from one
  pass. ``row`` keeps the same count in every
  output row; ``layer`` is the paper's adaptive mask selection (per block of 128 columns, over all rows).
* **LAMP** (Lee et al. 2021) ranks globally by ``w_u^2 / sum_{|w_v| >= |w_u|} w_v^2`` within each layer. Every
  layer's largest weight scores 1, so a global ratio never empties a layer (while the budget allows one weight per
  layer).

**Damping.** The paper damps by 1% of the mean diagonal. Here that is too little: the decoders' inputs are partly
placeholder tokens (zeros plus time features), so some Hessians are near singular (condition numbers ~1e7, e.g.
Informer's cross-attention queries), and at 1% the OBS update overshoots there: those layers reconstructed *worse*
than plain magnitude pruning (error ratios 1.1-1.3 on briefly trained tiny models). At 10% every layer of all five
models reconstructs better than magnitude's (median error ratio 0.2-0.4); ``tests/test_oneshot.py`` checks it.

FEDformer's complex Fourier weights (``include_fourier``): LAMP ranks them by modulus, as magnitude does. Wanda
scores ``W[h, i, o, m]`` by ``|W[h, i, o, m]| * ||F[:, m, h, i]||_2`` with ``F`` the block's mixing input (kept
frequency components, :meth:`mixing_input`), the complex modulus standing in for the absolute value; a row is one
``(h, o, m)``, the inputs ``E_in`` of one output of one head at one mode. SparseGPT's update is derived for real
least squares and refuses them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from tsprune.config import PruneConfig, TrainConfig
from tsprune.data.dataset import Batch, ForecastData
from tsprune.errors import TsPruneError
from tsprune.models.layers.fourier import FourierBlock, FourierCrossAttention
from tsprune.prune.calibration import Enough, calibration_batches, capturing, layer_features, run_calibration
from tsprune.prune.methods import Pruned
from tsprune.prune.unstructured import apply_masks, magnitude_masks, prunable_parameters

FOURIER = (FourierBlock, FourierCrossAttention)
BLOCK = 128  # SparseGPT's column block: the lazy batch update's width (the paper's B)


def _modules(model: nn.Module, params: Mapping[str, Tensor]) -> dict[str, nn.Module]:
    """``{weight name: the module that owns it}`` for the prunable weights."""
    return {name: model.get_submodule(name.rpartition(".")[0]) for name in params}


def keep_count(density: float, total: int) -> int:
    return round(density * total)


# ------------------------------------------------------------------------------------------------------- rows


def rows_view(module: nn.Module, tensor: Tensor) -> Tensor:
    """``tensor`` (shaped like ``module.weight``) as ``[rows, inputs]``: one row per output that the inputs share.

    Linear/Conv1d: ``[out, in * kernel]``; Fourier ``[H, E_in, E_out, M]``: ``[H * M * E_out, E_in]``.
    """
    if isinstance(module, FOURIER):
        return tensor.permute(0, 3, 2, 1).reshape(-1, tensor.shape[1])
    return tensor.reshape(tensor.shape[0], -1)


def from_rows(module: nn.Module, rows: Tensor, like: Tensor) -> Tensor:
    """Inverse of :func:`rows_view`."""
    if isinstance(module, FOURIER):
        heads, e_in, e_out, modes = like.shape
        return rows.reshape(heads, modes, e_out, e_in).permute(0, 3, 2, 1)
    return rows.reshape(like.shape)


def select(scores: Mapping[str, Tensor], modules: Mapping[str, nn.Module], density: float,
           comparison: str) -> dict[str, Tensor]:
    """Keep-masks of the ``density`` highest ``scores``: per output row, per layer, or over all of them."""
    if comparison == "global":
        return magnitude_masks(scores, density, "global")
    if comparison == "layer":
        return magnitude_masks(scores, density, "uniform")
    masks = {}
    for name, score in scores.items():
        rows = rows_view(modules[name], score)
        keep = rows.new_zeros(rows.shape, dtype=torch.bool)
        count = keep_count(density, rows.shape[1])
        if count:  # topk on each row at once: exactly ``count`` kept per row, whatever the ties
            keep.scatter_(1, rows.topk(count, dim=1, sorted=False).indices, True)
        masks[name] = from_rows(modules[name], keep, score)
    return masks


# ------------------------------------------------------------------------------------------------------ wanda


def feature_norms(model: nn.Module, modules: Mapping[str, nn.Module], batches: list[Batch],
                  device: torch.device) -> dict[str, Tensor]:
    """``||X_j||_2`` over all calibration tokens for every input feature of every module.

    Linear/Conv1d: ``[features]`` (see ``calibration.layer_features``); Fourier blocks: ``[H, E_in, 1, M]``, ready to
    broadcast against their weight. Squares are summed in float64 so thousands of tokens lose no digits.
    """
    sums: dict[str, Tensor] = {}

    def gather(name: str, module: nn.Module, args: tuple) -> None:
        if isinstance(module, FOURIER):
            mixing = module.mixing_input(*args[:2])  # [B, M, H, E_in] complex
            square = mixing.abs().double().square().sum(0).permute(1, 2, 0).unsqueeze(2)  # [H, E_in, 1, M]
        else:
            square = layer_features(module, args[0]).double().square().sum(0)  # [features]
        sums[name] = sums[name] + square if name in sums else square

    with capturing(modules, gather):
        run_calibration(model, batches, device)
    missing = [name for name in modules if name not in sums]
    if missing:
        raise TsPruneError(f"calibration never reached {missing[0]}: it cannot be scored")
    return {name: total.sqrt() for name, total in sums.items()}


def wanda_scores(weights: Mapping[str, Tensor], norms: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``|W| * ||X||`` per weight: ``[out, in]`` times ``[in]`` (a Conv1d's weight flattened to ``[out, in * k]``)."""
    scores = {}
    for name, weight in weights.items():
        norm = norms[name].to(weight.device)
        magnitude = weight.detach().abs().double()
        if norm.dim() == 1:
            scores[name] = (magnitude.reshape(weight.shape[0], -1) * norm).reshape(weight.shape)
        else:
            scores[name] = magnitude * norm
    return scores


# -------------------------------------------------------------------------------------------------------- lamp


def lamp_scores(weights: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """LAMP score of every weight: ``w^2`` over the sum of ``w^2`` of the weights of its layer at least as large.

    Sorted ascending, the denominators are reversed cumulative sums, so one sort per layer scores it. An all-zero
    layer scores 0.
    """
    scores = {}
    for name, weight in weights.items():
        square = weight.detach().abs().double().square().flatten()
        ordered, order = square.sort()
        tail = ordered.flip(0).cumsum(0).flip(0)  # sum over this weight and every larger one
        ranked = torch.where(tail > 0, ordered / tail.clamp_min(torch.finfo(tail.dtype).tiny), 0.0)
        scores[name] = torch.empty_like(square).scatter_(0, order, ranked).view(weight.shape)
    return scores


# --------------------------------------------------------------------------------------------------- sparsegpt


def damped(hessian: Tensor, damping: float) -> Tensor:
    """``H + damping * mean(diag H) * I`` (an all-zero ``H`` gets ``damping * I``), so the inverse exists."""
    diagonal = hessian.diagonal()
    scale = float(diagonal.mean()) if float(diagonal.mean()) > 0 else 1.0
    return hessian + damping * scale * torch.eye(len(hessian), dtype=hessian.dtype, device=hessian.device)


def sparsegpt_layer(weight: Tensor, hessian: Tensor, density: float, comparison: str = "row",
                    damping: float = 0.01, block: int = BLOCK) -> tuple[Tensor, Tensor]:
    """SparseGPT on one layer: ``weight [rows, cols]`` (float), ``hessian = X^T X [cols, cols]``.

    Returns the updated weight (pruned entries exactly zero) and the keep-mask. Columns are visited left to right;
    pruning column ``c`` sets the pruned entries to zero and spreads their error over the columns right of it with
    row ``c`` of the upper Cholesky factor of ``H^-1`` (the OBS update restricted to the columns not yet visited).
    Within a block of ``block`` columns the updates are applied column by column (each column's error depends on
    the previous ones, so this loop is the algorithm, vectorised over rows); the block's accumulated error reaches the
    columns to its right in one matrix product (the paper's lazy batch update).

    The mask of a block is chosen when the block starts, from ``w^2 / [H^-1]_cc^2`` of the weights as updated so far:
    ``row`` prunes the same count from each row, ``layer`` the lowest of the whole block. Counts per block are the
    differences of ``round(prune_fraction * columns_so_far)``, so the totals are exact.
    """
    rows, cols = weight.shape
    work = weight.detach().double().clone()
    inverse = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(damped(hessian.double(), damping))),
                                    upper=True)  # [cols, cols]: U with H^-1 = U^T U
    prune = torch.zeros(rows, cols, dtype=torch.bool, device=weight.device)
    fraction = 1.0 - density
    for start in range(0, cols, block):
        stop = min(start + block, cols)
        part, factor = work[:, start:stop].clone(), inverse[start:stop, start:stop]
        saliency = part.square() / factor.diagonal().square()  # [rows, width]
        if comparison == "row":
            count = round(fraction * stop) - round(fraction * start)
            if count:
                prune[:, start:stop].scatter_(1, saliency.topk(count, dim=1, largest=False).indices, True)
        else:
            count = round(fraction * rows * stop) - round(fraction * rows * start)
            if count:
                flat = torch.zeros(saliency.numel(), dtype=torch.bool, device=weight.device)
                flat[saliency.flatten().topk(count, largest=False).indices] = True
                prune[:, start:stop] = flat.view_as(saliency)
        errors = torch.zeros_like(part)
        for column in range(stop - start):
            values = part[:, column]
            kept = torch.where(prune[:, start + column], 0.0, values)
            error = (values - kept) / factor[column, column]  # [rows]
            part[:, column:] -= error[:, None] * factor[column, column:][None, :]
            part[:, column] = kept
            errors[:, column] = error
        work[:, start:stop] = part
        work[:, stop:] -= errors @ inverse[start:stop, stop:]
    work[prune] = 0.0
    return work.to(weight.dtype), ~prune


def _sequential_groups(model: nn.Module, modules: Mapping[str, nn.Module], batch: Batch,
                       device: torch.device) -> list[tuple[list[str], bool]]:
    """The modules in order of their first call, grouped when consecutive ones are called once each on the very
    same input tensor (pruning one cannot change another's input); with each group, whether its modules are called
    once per forward pass (then a pass may stop as soon as the group's input is seen). Inputs are held until the
    pass ends, so no address or id is reused inside it."""
    calls: dict[str, list[Tensor]] = {}
    with capturing(modules, lambda name, _, args: calls.setdefault(name, []).append(args[0])):
        run_calibration(model, [batch], device)
    groups: list[tuple[list[str], bool]] = []
    previous: Tensor | None = None
    for name, inputs in calls.items():
        once = len(inputs) == 1
        if groups and once and previous is not None and inputs[0] is previous:
            groups[-1][0].append(name)
        else:
            groups.append(([name], once))
        previous = inputs[0] if once else None
    return groups


LayerCallback = Callable[[str, Tensor, Tensor, Tensor], None]


def sparsegpt(model: nn.Module, params: Mapping[str, Tensor], batches: list[Batch], density: float,
              comparison: str, damping: float, device: torch.device,
              on_layer: LayerCallback | None = None) -> dict[str, Tensor]:
    """Prune ``params`` of ``model`` in place with SparseGPT, earlier layers first; returns the keep-masks.

    ``on_layer(name, dense_weight, pruned_weight, hessian)`` sees every layer as it is pruned (tests use it to
    check the reconstruction error on the very inputs the layer was pruned on).
    """
    modules = _modules(model, params)
    masks: dict[str, Tensor] = {}
    groups = _sequential_groups(model, modules, batches[0], device)
    reached = {name for group, _ in groups for name in group}
    missing = [name for name in modules if name not in reached]
    if missing:
        raise TsPruneError(f"calibration never reached {missing[0]}: it cannot be reconstructed")
    for group, once in groups:
        hessians: dict[str, Tensor] = {}
        last = group[-1]

        def gather(name: str, module: nn.Module, args: tuple) -> None:
            features = layer_features(module, args[0]).float()  # [tokens, cols]
            product = (features.T @ features).double()  # a float32 GEMM; the sum over chunks and the solve in float64
            hessians[name] = hessians[name] + product if name in hessians else product
            if once and name == last:  # nothing later in this forward reaches the group: skip the rest of it
                raise Enough

        with capturing({name: modules[name] for name in group}, gather):
            run_calibration(model, batches, device)
        for name in group:
            weight = params[name]
            rows = weight.detach().reshape(weight.shape[0], -1)
            pruned, keep = sparsegpt_layer(rows, hessians[name], density, comparison, damping)
            if on_layer is not None:
                on_layer(name, rows.clone(), pruned, hessians[name])
            with torch.no_grad():
                weight.copy_(pruned.view_as(weight))
            masks[name] = keep.view(weight.shape)
    return masks


# ------------------------------------------------------------------------------------------------------ methods
# Implementations of the records in ``prune.methods`` (see there for the signature).


def _calibration(data: ForecastData, config: PruneConfig, train: TrainConfig, device: torch.device) -> list[Batch]:
    return calibration_batches(data, config.calibration_windows, train.seed, device)


def _facts(batches: list[Batch]) -> dict[str, Any]:
    return {"calibration_windows": sum(len(batch.x_enc) for batch in batches), "calibration_split": "train"}


def prune_wanda(model: nn.Module, data: ForecastData, config: PruneConfig, train: TrainConfig,
                device: torch.device) -> Pruned:
    """Wanda: ``|W| * ||X||`` from one calibration pass, compared per row, per layer or globally."""
    params = prunable_parameters(model, config.include_embeddings, config.include_fourier)
    modules = _modules(model, params)
    batches = _calibration(data, config, train, device)
    scores = wanda_scores(params, feature_norms(model, modules, batches, device))
    masks = select(scores, modules, config.density, config.comparison)
    apply_masks(params, masks)
    return Pruned(model, masks, {**_facts(batches), "comparison": config.comparison})


def prune_sparsegpt(model: nn.Module, data: ForecastData, config: PruneConfig, train: TrainConfig,
                    device: torch.device) -> Pruned:
    """SparseGPT: layer-wise OBS reconstruction, earlier layers first, on the pruned model's own activations."""
    if config.include_fourier:
        raise TsPruneError("sparsegpt does not prune FEDformer's complex Fourier weights (its update is derived for "
                           "real least squares): drop include_fourier, or use wanda or lamp",
                           options=("include_fourier",))
    if config.comparison == "global":
        raise TsPruneError("sparsegpt prunes each layer to the density (comparison 'row' or 'layer'); 'global' is "
                           "for wanda", options=("comparison",))
    params = prunable_parameters(model, config.include_embeddings, config.include_fourier)
    batches = _calibration(data, config, train, device)
    masks = sparsegpt(model, params, batches, config.density, config.comparison, config.damping, device)
    return Pruned(model, masks, {**_facts(batches), "comparison": config.comparison,
                                 "damping": config.damping})


def prune_lamp(model: nn.Module, data: ForecastData, config: PruneConfig, train: TrainConfig,
               device: torch.device) -> Pruned:
    """LAMP: one global ranking of layer-adaptive magnitude scores (no data needed)."""
    params = prunable_parameters(model, config.include_embeddings, config.include_fourier)
    masks = magnitude_masks(lamp_scores(params), config.density, "global")
    apply_masks(params, masks)
    return Pruned(model, masks)
