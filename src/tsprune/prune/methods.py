"""One record per pruning method: the one place a method is described. Everything that depends on which method runs
derives from its record: the CLI's choices and help, the checks on a ``PruneConfig``, which sweep runs get a
sparse-engine twin, the cost model, the report's markers and which FLOPs it compares on.

A record names its implementation by module path (as ``models.registry`` names model classes), so reading the
records imports no torch: specs, plans, cost estimates and reports use them without loading a model.

An implementation is ``run(model, data, config, train, device) -> Pruned``: it prunes ``model`` (a copy the caller
owns) as ``config`` says. Fine-tuning, evaluation, measurement and saving are shared (``prune.pipeline``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tsprune.errors import TsPruneError

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    import torch
    from torch import nn

    from tsprune.config import PruneConfig

# The study's two methods, by the names the rest of the code refers to them.
MAGNITUDE = "magnitude"
DEPGRAPH = "depgraph"


class TargetUnreachable(TsPruneError):
    """A density target this model cannot reach (recorded as a failure with its reason, not a crash)."""


@dataclass
class Pruned:
    """What an implementation returns: the pruned model, its masks (unstructured) and facts to record."""

    model: nn.Module
    masks: dict[str, torch.Tensor] | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    architecture: dict[str, Any] | None = None  # the reduced shapes of a structured method (``models.shapes``)


@dataclass(frozen=True)
class PruneMethod:
    name: str
    implementation: str  # "module:function", see the module doc
    summary: str  # one line for help texts
    structured: bool  # removes channels (a smaller dense model) rather than masking weights
    density_of: str  # what ``density`` is the kept fraction of
    iterative: bool = False  # may walk the study's 0.8^i schedule down to its target, fine-tuning between steps
    options: tuple[str, ...] = ()  # PruneConfig fields only this method reads
    marker: str = "o"  # matplotlib marker in the report's figures
    search_passes: int = 0  # cost model: forward + backward passes its search adds (in training steps)
    gradual_scope: str | None = None  # the magnitude scope a gradual schedule re-ranks with (None: no gradual form)

    @property
    def sparse_engine(self) -> bool:
        """Whether its zeros can run on the sparse engine (a structured model has none left)."""
        return not self.structured

    @property
    def flops_compared(self) -> str:
        """Which FLOPs tell what it saves: a shrunk model's real FLOPs, a masked one's non-zero-weight FLOPs."""
        return "flops" if self.structured else "flops_effective"

    def run(self) -> Callable[..., Pruned]:
        module, _, name = self.implementation.partition(":")
        return getattr(importlib.import_module(module), name)


METHODS: tuple[PruneMethod, ...] = (
    PruneMethod(MAGNITUDE, "tsprune.prune.unstructured:prune_global",
                "the study's method: one global threshold on |w| over every prunable weight",
                structured=False, density_of="prunable weights", iterative=True,
                options=("include_embeddings", "include_fourier", "iterative"), marker="o", gradual_scope="global"),
    PruneMethod("magnitude-layerwise", "tsprune.prune.unstructured:prune_layerwise",
                "every prunable weight tensor keeps the same share of its largest |w|",
                structured=False, density_of="prunable weights", iterative=True,
                options=("include_embeddings", "include_fourier", "iterative"), marker="s", gradual_scope="uniform"),
    PruneMethod(DEPGRAPH, "tsprune.prune.structured:prune_dependency_graph",
                "Torch-Pruning's dependency graph removes whole channels and head dimensions (L2, Taylor or "
                "Hessian importance)",
                structured=True, density_of="parameters",
                options=("scope", "heads", "round_to", "timeout_s", "importance", "calibration_windows"),
                marker="^", search_passes=12),
    PruneMethod("wanda", "tsprune.prune.oneshot:prune_wanda",
                "one shot, no weight update: |w| times the norm of its input over calibration windows, per row",
                structured=False, density_of="prunable weights",
                options=("include_embeddings", "include_fourier", "calibration_windows", "comparison"),
                marker="D", search_passes=8),  # measured: 7.7 training steps' time on the demo's models
    PruneMethod("sparsegpt", "tsprune.prune.oneshot:prune_sparsegpt",
                "one shot: each layer pruned and its kept weights updated to reconstruct its output (OBS), "
                "earlier layers first",
                structured=False, density_of="prunable weights",
                options=("include_embeddings", "calibration_windows", "comparison", "damping"),
                # one calibration pass per layer group: measured 94 steps' time (demo's models) to ~1,100 (default
                # Crossformer, 138 prunable layers, one thread beside other work)
                marker="P", search_passes=400),
    PruneMethod("lamp", "tsprune.prune.oneshot:prune_lamp",
                "one global ratio of layer-adaptive magnitude scores: no layer is emptied",
                structured=False, density_of="prunable weights", options=("include_embeddings", "include_fourier"),
                marker="v"),
)
_BY_NAME = {method.name: method for method in METHODS}


def method_names() -> list[str]:
    return list(_BY_NAME)


def get_method(name: str) -> PruneMethod:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise TsPruneError(f"unknown pruning method {name!r}: use one of {', '.join(_BY_NAME)}") from None


def using(option: str) -> list[str]:
    """The methods that read PruneConfig field ``option`` (for help texts)."""
    return [method.name for method in METHODS if option in method.options]


def describe() -> str:
    """``name: summary`` of every method, for help texts."""
    return "; ".join(f"{method.name}: {method.summary}" for method in METHODS)


def is_structured(name: str) -> bool:
    """Whether ``name`` removes channels (False for names no record has, as old tables may hold)."""
    return name in _BY_NAME and _BY_NAME[name].structured


def check(config: PruneConfig) -> PruneMethod:
    """The config's method record, after the checks that depend on it."""
    method = get_method(config.method)
    if config.iterative and not method.iterative:
        raise TsPruneError(f"iterative pruning is not for {method.name} (it prunes in one shot): drop iterative",
                           options=("iterative",))
    if config.engine == "sparse" and not method.sparse_engine:
        raise TsPruneError(f"the sparse engine runs models with zeros; {method.name} removes channels and leaves "
                           "none: use engine 'dense'", options=("engine",))
    return method
