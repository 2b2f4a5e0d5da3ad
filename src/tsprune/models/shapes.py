"""The shape of a structurally pruned model, saved with its run and replayed on a fresh dense build.

``architecture`` records every tensor's shape, each attention layer's head count and frozen settings, and the
channels a positional encoding kept; ``apply_architecture`` reshapes a model built from its dense config to match,
before the weights are loaded. Models layer: loading a pruned run needs no pruning code.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from torch import nn

from tsprune.errors import TsPruneError
from tsprune.models.layers.attention import AttentionLayer
from tsprune.models.layers.embed import PositionalEmbedding

# Settings of inner attention mechanisms that depend on the width unless fixed; saved with a pruned architecture.
FROZEN_SETTINGS = ("scale", "channels")

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def architecture(model: nn.Module) -> dict[str, Any]:
    """What a dense rebuild needs to become this pruned model: every tensor's shape and the attention settings."""
    shapes = {name: list(t.shape) for name, t in model.state_dict().items()}
    attention = {name: {"n_heads": m.n_heads, **{key: getattr(m.inner, key) for key in FROZEN_SETTINGS
                                                 if getattr(m.inner, key, None) is not None}}
                 for name, m in model.named_modules() if isinstance(m, AttentionLayer)}
    positions = {name: {"width": m.width, "channels": list(m.channels)} for name, m in model.named_modules()
                 if isinstance(m, PositionalEmbedding) and m.channels is not None}
    return {"shapes": shapes, "attention": attention, **({"positions": positions} if positions else {})}


def apply_architecture(model: ModuleT, arch: dict[str, Any]) -> ModuleT:
    """Reshape a freshly built dense model to a saved pruned ``architecture`` (weights are then loaded)."""
    try:
        return _apply_architecture(model, arch)
    except (AttributeError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise TsPruneError(f"the saved pruned architecture does not fit this model ({exc}); "
                           "the run directory is corrupt or from another version") from None


def _apply_architecture(model: ModuleT, arch: dict[str, Any]) -> ModuleT:
    shapes = arch.get("shapes", {})
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        for pname, param in list(module.named_parameters(recurse=False)):
            shape = shapes.get(prefix + pname)
            if shape is not None and list(param.shape) != shape:
                setattr(module, pname, nn.Parameter(param.new_empty(shape), requires_grad=param.requires_grad))
        for bname, buffer in list(module.named_buffers(recurse=False)):
            shape = shapes.get(prefix + bname)
            if buffer is not None and shape is not None and list(buffer.shape) != shape:
                setattr(module, bname, buffer.new_empty(shape))
        _sync_sizes(module)
    for name, settings in arch.get("positions", {}).items():
        position = cast(PositionalEmbedding, model.get_submodule(name))  # named so when the architecture was saved
        position.width, position.channels = int(settings["width"]), [int(c) for c in settings["channels"]]
    for name, settings in arch.get("attention", {}).items():
        layer = cast(AttentionLayer, model.get_submodule(name))
        layer.n_heads = int(settings["n_heads"])
        for key in FROZEN_SETTINGS:
            if settings.get(key) is not None:
                setattr(layer.inner, key, settings[key])
    return model


def _sync_sizes(module: nn.Module) -> None:
    """Make a layer's size attributes agree with its (reshaped) tensors."""
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, nn.Conv1d):
        module.out_channels, module.in_channels = module.weight.shape[:2]
    elif isinstance(module, nn.LayerNorm) and module.weight is not None:
        module.normalized_shape = tuple(module.weight.shape)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        source = module.running_mean if module.running_mean is not None else module.weight
        module.num_features = source.shape[0]
