"""Unstructured magnitude pruning: zero the smallest weights, keep them zero while fine-tuning.

The study's method is *global* magnitude pruning: one threshold over every prunable weight, so layers with many
small weights lose more. Prunable weights are the ``weight`` of every ``nn.Linear`` and ``nn.Conv1d`` except the
model's declared ``output_layers`` (always dense) and ``embedding_layers`` (dense unless asked); FEDformer's complex
Fourier weights join on request and are ranked by the modulus of each complex entry (one entry = one weight).

Masks are boolean tensors keyed by qualified parameter name (``model.get_parameter(name)`` finds the weight), so they
survive moving the model between devices and can be rebuilt from a pruned checkpoint with ``masks_from_zeros``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import reduce

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from tsprune.config import SCOPES, PruneConfig, TrainConfig
from tsprune.data.dataset import ForecastData
from tsprune.errors import TsPruneError
from tsprune.schedule import STUDY_SCHEDULE, check_density, parse_densities  # noqa: F401 - this module's API too
from tsprune.models.layers.fourier import FourierBlock, FourierCrossAttention
from tsprune.prune.methods import Pruned
from tsprune.train import Objective, TrainResult, fit

def _under(name: str, prefixes: Sequence[str]) -> bool:
    """Whether module ``name`` is one of ``prefixes`` or lies inside one (a prefix may name a parent module)."""
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def prunable_parameters(model: nn.Module, include_embeddings: bool = False,
                        include_fourier: bool = False) -> dict[str, Tensor]:
    """``{qualified name: weight}`` of the layers magnitude pruning may cut, each tensor once.

    Linear and Conv1d weights (never biases), minus the model's ``output_layers`` and, unless ``include_embeddings``,
    its ``embedding_layers``; ``include_fourier`` adds the complex ``weight`` of FEDformer's Fourier blocks.
    A module shared by several layers (FEDformer's Fourier blocks) is listed under its first name.
    """
    excluded = tuple(getattr(model, "output_layers", ()))
    if not include_embeddings:
        excluded += tuple(getattr(model, "embedding_layers", ()))
    kinds: tuple[type[nn.Linear | nn.Conv1d | FourierBlock | FourierCrossAttention], ...] = (nn.Linear, nn.Conv1d)
    if include_fourier:
        kinds += (FourierBlock, FourierCrossAttention)
    params: dict[str, Tensor] = {}  # parameters, which torch types as plain tensors for a Conv1d
    seen: set[int] = set()
    for name, module in model.named_modules():  # yields a shared module once
        if isinstance(module, kinds) and not _under(name, excluded) and id(module.weight) not in seen:
            seen.add(id(module.weight))  # also guards weights tied between distinct modules
            params[f"{name}.weight" if name else "weight"] = module.weight
    return params


def _keep_count(density: float, numel: int) -> int:
    return round(density * numel)


def _top_mask(scores: Tensor, keep: int) -> Tensor:
    """Boolean mask of exactly ``keep`` largest ``scores`` (flat); topk indices, so ties cannot change the count."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask[scores.topk(keep, sorted=False).indices] = True
    return mask


def magnitude_masks(params: Mapping[str, Tensor], density: float, scope: str = "global") -> dict[str, Tensor]:
    """Boolean keep-masks for ``params`` at ``density`` (fraction kept) by weight magnitude.

    ``global`` keeps the ``round(density * total)`` largest ``|w|`` over all tensors together (the study's method);
    ``uniform`` keeps ``round(density * numel)`` per tensor. Complex weights are ranked by modulus. Zero weights rank
    lowest, so pruning an already-pruned model to a lower density keeps its zeros: the masks nest.
    """
    density = check_density(density)
    if scope not in SCOPES:
        raise TsPruneError(f"unknown pruning scope {scope!r}: use one of {', '.join(SCOPES)}")
    if not params:
        return {}
    # |w| per tensor, flat; abs of a complex tensor is its real modulus.
    scores = [weight.detach().abs().flatten() for weight in params.values()]
    if scope == "uniform":
        flat_masks = [_top_mask(score, _keep_count(density, score.numel())) for score in scores]
    else:
        dtype = reduce(torch.promote_types, (score.dtype for score in scores))
        everything = torch.cat([score.to(dtype) for score in scores])
        flat_masks = _top_mask(everything, _keep_count(density, everything.numel())).split(
            [score.numel() for score in scores])
    return {name: mask.view(weight.shape) for (name, weight), mask in zip(params.items(), flat_masks, strict=True)}


def _lookup(target: nn.Module | Mapping[str, Tensor], name: str) -> Tensor:
    return target.get_parameter(name) if isinstance(target, nn.Module) else target[name]


@torch.no_grad()
def apply_masks(model_or_params: nn.Module | Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> None:
    """Zero, in place, every weight whose mask entry is False; ``model_or_params`` is a model or a name->weight map."""
    for name, mask in masks.items():
        weight = _lookup(model_or_params, name)
        weight.mul_(mask.to(weight.device))


class MaskEnforcer:
    """Keeps pruned weights at exactly zero while a model trains.

    Call it after every optimiser step (``fit``'s ``after_step``): it re-applies the masks. ``hook_gradients``
    also zeroes the masked gradients, so Adam's moments for pruned weights stay zero and the re-masking only
    has to undo rounding, not fight a growing update. Masks move to their parameter's device on first use.
    """

    def __init__(self, masks: Mapping[str, Tensor]) -> None:
        self.masks: dict[str, Tensor] = dict(masks)
        self.handles: list[RemovableHandle] = []

    def _mask_for(self, name: str, weight: Tensor) -> Tensor:
        mask = self.masks[name]
        if mask.device != weight.device:
            mask = self.masks[name] = mask.to(weight.device)  # cached: the step loop never copies it again
        return mask

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> None:
        for name in self.masks:
            weight = model.get_parameter(name)
            weight.mul_(self._mask_for(name, weight))

    def hook_gradients(self, model: nn.Module) -> list[RemovableHandle]:
        """Register hooks that zero the masked entries of each weight's gradient; ``remove_hooks`` undoes it."""
        for name in self.masks:
            weight = model.get_parameter(name)
            self.handles.append(weight.register_hook(_gradient_masker(self._mask_for(name, weight))))
        return list(self.handles)

    def remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _gradient_masker(mask: Tensor):
    # A factory so each hook captures its own mask (a lambda in a loop would capture the last one).
    def hook(grad: Tensor) -> Tensor:
        return grad * mask

    return hook


def _count_nonzero(tensors: Sequence[Tensor]) -> int:
    return sum(int(torch.count_nonzero(t.detach())) for t in tensors)


def density_report(model: nn.Module, params: Mapping[str, Tensor]) -> dict:
    """How dense ``params`` (the prunable weights) and the whole model are.

    ``density_total`` is nonzero over all of the model's parameters (biases, norms and excluded layers included,
    buffers not; a shared tensor counted once; one complex entry counts as one parameter). ``emptied_layers``
    counts the prunable tensors with no nonzero weight left (a layer that then passes only its bias on).
    """
    prunable = list(params.values())
    everything = list(model.parameters())  # deduplicates shared parameters
    prunable_count = sum(p.numel() for p in prunable)
    total_count = sum(p.numel() for p in everything)
    nonzero_prunable = _count_nonzero(prunable)
    nonzero_total = _count_nonzero(everything)
    return {
        "density_prunable": nonzero_prunable / prunable_count if prunable_count else 1.0,
        "density_total": nonzero_total / total_count if total_count else 1.0,
        "prunable_params": prunable_count,
        "params": total_count,
        "nonzero_params": nonzero_total,
        "nonzero_prunable": nonzero_prunable,
        "emptied_layers": sum(1 for weight in prunable if not bool(weight.detach().any())),
    }


def prune_magnitude(model: nn.Module, density: float, scope: str = "global", include_embeddings: bool = False,
                    include_fourier: bool = False) -> tuple[dict[str, Tensor], dict]:
    """Magnitude-prune ``model`` in place to ``density`` of its prunable weights; returns ``(masks, report)``."""
    params = prunable_parameters(model, include_embeddings=include_embeddings, include_fourier=include_fourier)
    masks = magnitude_masks(params, density, scope)
    apply_masks(params, masks)
    return masks, density_report(model, params)


def masks_from_zeros(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Masks of a pruned model: keep exactly the nonzero weights (to fine-tune or prune on from a checkpoint)."""
    return {name: weight.detach() != 0 for name, weight in params.items()}


def finetune(model: nn.Module, masks: Mapping[str, Tensor], data: ForecastData, train_config: TrainConfig,
             device: torch.device | str, progress: bool = False, objective: Objective | None = None) -> TrainResult:
    """Fine-tune a pruned ``model`` in place with ``fit``; pruned weights stay exactly zero throughout.

    The model is moved to ``device``; gradient hooks are removed afterwards, also when training fails.
    ``objective`` is ``fit``'s (None: the MSE to the target).
    """
    device = torch.device(device)
    model.to(device)
    enforcer = MaskEnforcer(masks)
    enforcer(model)  # start from exactly masked weights, whatever the caller did
    enforcer.hook_gradients(model)
    try:
        return fit(model, data, train_config, device, after_step=enforcer, progress=progress, objective=objective)
    finally:
        enforcer.remove_hooks()


# --------------------------------------------------------------------------------------------------- methods
# Implementations of the records in ``prune.methods`` (see there for the signature).


def _prune_magnitude(scope: str, model: nn.Module, data: ForecastData, config: PruneConfig, train: TrainConfig,
                     device: torch.device) -> Pruned:
    steps = [config.density]
    if config.iterative:  # walk the study's schedule down to the target, fine-tuning after each step
        steps = [d for d in STUDY_SCHEDULE if d > config.density + 1e-9 and d < 1.0] + steps
    masks: dict[str, Tensor] = {}
    for i, density in enumerate(steps):
        masks, _ = prune_magnitude(model, density, scope, config.include_embeddings, config.include_fourier)
        if config.iterative and config.finetune_epochs and i < len(steps) - 1:
            finetune(model, masks, data, train, device)
    return Pruned(model, masks, {"iterative_steps": len(steps)})


def prune_global(model: nn.Module, data: ForecastData, config: PruneConfig, train: TrainConfig,
                 device: torch.device) -> Pruned:
    """Global magnitude pruning: one threshold over all prunable weights."""
    return _prune_magnitude("global", model, data, config, train, device)


def prune_layerwise(model: nn.Module, data: ForecastData, config: PruneConfig, train: TrainConfig,
                    device: torch.device) -> Pruned:
    """Layer-wise magnitude pruning: every prunable tensor at the same density."""
    return _prune_magnitude("uniform", model, data, config, train, device)
