"""The feed-forward activation chosen by ``ModelConfig.activation``."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def activation_fn(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``relu`` or ``gelu`` (the config validates the name)."""
    return F.relu if name == "relu" else F.gelu
