"""Training state saved after every epoch, so a long run resumes after a crash or a stopped session.

The state is ``training_state.safetensors`` (model, best-so-far model, Adam moments, RNG states) plus
``training_state.json`` (epoch counters and history). No pickle: tensors in safetensors, the rest JSON.
"""

from __future__ import annotations

from pathlib import Path
import json
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tsprune.config import read_json, write_json
from tsprune.errors import TsPruneError
from tsprune.runtime import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from tsprune.config import RunConfig

TENSORS = "training_state.safetensors"
COUNTERS = "training_state.json"


def save_training_state(directory: Path, model: nn.Module, best_state: dict[str, torch.Tensor] | None,
                        optimizer: torch.optim.Optimizer, generator: torch.Generator,
                        counters: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    if best_state is not None:
        tensors.update({f"best.{k}": v for k, v in best_state.items()})
    optim = optimizer.state_dict()
    for index, slots in optim["state"].items():
        for slot, value in slots.items():
            tensors[f"optim.{index}.{slot}"] = torch.as_tensor(value)
    tensors["rng.shuffle"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    with atomic_path(directory / TENSORS) as tmp:
        save_file(tensors, str(tmp))
    write_json(directory / COUNTERS, {**counters, "param_groups": optim["param_groups"]})


def load_training_state(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        generator: torch.Generator) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None] | None:
    """Restore a saved state into ``model``/``optimizer``/``generator``; ``None`` when there is nothing to resume."""
    if not (directory / TENSORS).is_file() or not (directory / COUNTERS).is_file():
        return None
    try:
        tensors = load_file(str(directory / TENSORS))
    except (SafetensorError, OSError) as exc:
        raise TsPruneError(f"{directory / TENSORS} is corrupt ({exc}); delete it to start afresh") from None
    counters = read_json(directory / COUNTERS)
    device = next(model.parameters()).device
    part = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
    try:
        model.load_state_dict(part("model."))
    except RuntimeError:
        raise TsPruneError(f"{directory} holds the training state of another model; delete it or use another out",
                           options=("out",)) from None
    best = part("best.") or None
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in part("optim.").items():
        index, slot = key.split(".", 1)
        state.setdefault(int(index), {})[slot] = value.to(device) if slot != "step" else value
    optimizer.load_state_dict({"state": state, "param_groups": counters.pop("param_groups")})
    generator.set_state(tensors["rng.shuffle"])
    torch.set_rng_state(tensors["rng.torch"])
    return counters, best


# Where and how fast a run executes, not what it computes: a run may resume on another device or thread count.
EXECUTION_SETTINGS = ("device", "threads", "num_workers")
TRAINING_STATE = "training_state"  # folder of a run directory holding an unfinished run's per-epoch state


def training_state_dir(out: Path, config: RunConfig) -> Path:
    """Where ``train.train_run`` keeps its per-epoch state; an interrupted run with the same config resumes from it
    (execution settings, :data:`EXECUTION_SETTINGS`, may differ)."""
    def experiment(settings: dict[str, Any]) -> dict[str, Any]:
        train = {k: v for k, v in settings["train"].items() if k not in EXECUTION_SETTINGS}
        return {**settings, "train": train}

    state_dir = out / TRAINING_STATE
    stamp = state_dir / "run_config.json"
    if stamp.is_file():
        if experiment(read_json(stamp)) != experiment(json.loads(json.dumps(config.to_dict()))):
            raise TsPruneError(f"{out} holds an unfinished run with another configuration: use another out or "
                               f"delete {state_dir}", options=("out",))
    else:
        state_dir.mkdir(parents=True, exist_ok=True)
        write_json(stamp, config.to_dict())
    return state_dir
