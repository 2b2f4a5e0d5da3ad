"""One record per pruning recipe: how a model is brought to a high sparsity within a fine-tuning budget. A recipe
is a pruning method (``prune.methods``) plus what happens while fine-tuning: masks fixed before it (one shot) or
raised during it along a schedule (gradual), and a loss with or without distillation from the dense parent.

Everything that depends on the recipe derives from its record: ``tsprune prune --recipe``'s choices and help, the
sweep spec's ``recipes`` key, the cost model (a teacher adds a forward pass per step), and the report's recipe
table. A recipe is not a setting of its own: it names a combination of :class:`~tsprune.config.PruneConfig` fields
(``method``, ``schedule``, ``distill``, ``finetune_epochs``), so :func:`recipe_of` finds the recipe of any record,
including records written before recipes existed (the study's magnitude runs fine-tuned for an epoch are
``magnitude-ft``), and a recipe run and the method run it equals are one run.

No torch here: specs, plans and reports read recipes without loading a model. The mechanics (the gradual pruner,
the distillation loss) are in ``prune.finetune``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tsprune.config import SCHEDULES
from tsprune.errors import TsPruneError
from tsprune.prune.methods import MAGNITUDE, get_method

if TYPE_CHECKING:  # pragma: no cover
    from tsprune.config import PruneConfig

# How a recipe's masks come about (PruneConfig.schedule): fixed by the method before fine-tuning, or raised along
# Zhu & Gupta's cubic schedule during it (tsprune.schedule.gradual_density).
ONESHOT, GRADUAL = SCHEDULES
# The distillation weight of the shipped recipes: the target's MSE and the MSE to the dense parent's forecast count
# the same.
ALPHA = 1.0
# The study's fine-tuning budget, which every shipped recipe keeps so that they compare at equal cost.
BUDGET_EPOCHS = 1


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str  # one line for help texts
    method: str  # the pruning method whose masks it fine-tunes (gradual: whose ranking it repeats)
    schedule: str = ONESHOT  # see SCHEDULES
    distill: float = 0.0  # alpha: weight of the MSE to the dense parent's forecast in the fine-tuning loss (0: none)
    epochs: int = BUDGET_EPOCHS  # fine-tuning budget
    marker: str = "o"  # matplotlib marker in the report's figures

    def settings(self) -> dict[str, Any]:
        """The PruneConfig fields this recipe sets."""
        return {"method": self.method, "schedule": self.schedule, "distill": self.distill,
                "finetune_epochs": self.epochs}

    @property
    def teacher(self) -> bool:
        """Whether fine-tuning runs the dense parent beside the model (one more forward pass per step)."""
        return self.distill > 0


RECIPES: tuple[Recipe, ...] = (
    Recipe("magnitude-ft", "the study's: global magnitude masks, then fine-tuning with the masks kept",
           MAGNITUDE, marker="o"),
    Recipe("wanda-ft", "Wanda's one-shot masks (|w| x input norm), then fine-tuning with the masks kept",
           "wanda", marker="D"),
    Recipe("sparsegpt-ft", "SparseGPT's one-shot masks and reconstructed weights, then fine-tuning with the masks "
           "kept", "sparsegpt", marker="P"),
    Recipe("gradual", "global magnitude sparsity raised from dense to the target along Zhu & Gupta's cubic "
           "schedule during fine-tuning, pruned weights kept at zero", MAGNITUDE, schedule=GRADUAL, marker="s"),
    Recipe("magnitude-distill", "global magnitude masks, then fine-tuning on the target plus the dense parent's "
           "forecast (MSE to each, equal weight)", MAGNITUDE, distill=ALPHA, marker="^"),
    Recipe("sparsegpt-distill", "SparseGPT's masks, then fine-tuning on the target plus the dense parent's "
           "forecast", "sparsegpt", distill=ALPHA, marker="X"),
    Recipe("gradual-distill", "the gradual schedule with the dense parent's forecast in the loss",
           MAGNITUDE, schedule=GRADUAL, distill=ALPHA, marker="v"),
)
_BY_NAME = {recipe.name: recipe for recipe in RECIPES}

# `tsprune prune`'s default at high sparsity (issue 33): at a density of HIGH_SPARSITY_DENSITY or less, a prune that
# names neither a method nor a recipe uses the recipe that kept the models nearest their dense accuracy at 10.7%
# (``report.recipes.best`` on the committed recipe results; tests/test_recipes.py checks the name against them).
# Above it, the study's plain magnitude pruning stays the default: without fine-tuning it keeps the dense MSE
# within the measured seed spread down to about 0.4-0.6 density (the study's findings, claim 1).
HIGH_SPARSITY = "gradual-distill"
RUNNER_UP = "sparsegpt-distill"  # second in the screening's ranking (confirmed on one seed; presets.recipes-etth1)
HIGH_SPARSITY_DENSITY = 0.2


def recipe_names() -> list[str]:
    return list(_BY_NAME)


def get_recipe(name: str) -> Recipe:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise TsPruneError(f"unknown recipe {name!r}: use one of {', '.join(_BY_NAME)}") from None


def default_for(density: float) -> str | None:
    """The recipe a prune at ``density`` that names neither method nor recipe uses: :data:`HIGH_SPARSITY` at or
    below :data:`HIGH_SPARSITY_DENSITY`, else None (plain magnitude pruning)."""
    return HIGH_SPARSITY if density <= HIGH_SPARSITY_DENSITY else None


def describe() -> str:
    """``name: summary`` of every recipe, for help texts."""
    return "; ".join(f"{recipe.name}: {recipe.summary}" for recipe in RECIPES)


def apply(config: PruneConfig, name: str) -> PruneConfig:
    """``config`` with recipe ``name``'s settings. A fine-tuning budget already in ``config`` (finetune_epochs > 0)
    stays: a longer budget is the same recipe, reported with its epochs."""
    recipe = get_recipe(name)
    settings = recipe.settings()
    if config.finetune_epochs:
        settings["finetune_epochs"] = config.finetune_epochs
    return dataclasses.replace(config, **settings)


def recipe_of(prune: Mapping[str, Any]) -> str | None:
    """The recipe a pruning is (``prune``: a PruneConfig as ``dataclasses.asdict`` or a record's ``config.prune``),
    or None: no fine-tuning, an iterative walk, or a combination no record names. The distillation weight need not
    be the record's (a sweep may set another; its tables show it as a variant)."""
    if not prune.get("finetune_epochs") or prune.get("iterative"):
        return None
    distilled = float(prune.get("distill") or 0.0) > 0
    for recipe in RECIPES:
        if (recipe.method == prune.get("method") and recipe.schedule == (prune.get("schedule") or ONESHOT)
                and recipe.teacher == distilled):
            return recipe.name
    return None


def plain(name: str | None) -> bool:
    """Whether recipe ``name`` is its method fine-tuned as the study fine-tunes (masks fixed, no teacher): such a
    run *is* the method's fine-tuned run, in the same series of every table. Other recipes are variants of their
    method (:func:`variant`)."""
    if name is None:
        return True
    recipe = get_recipe(name)
    return recipe.schedule == ONESHOT and not recipe.teacher


def variant(name: str | None) -> str:
    """The ``variant`` label (``sweep.plan.Labels``) a recipe adds to its method's: ``recipe=NAME``, or "" when
    it is :func:`plain`. Tables then keep, e.g., magnitude with distillation apart from the study's magnitude."""
    return "" if plain(name) else f"recipe={name}"


def with_recipe(variant_: str, recipe: str | None) -> str:
    """A run's ``variant`` label with its recipe's part (:func:`variant`) added once."""
    parts = [part for part in variant_.split(",") if part]
    extra = variant(recipe)
    return ",".join([*parts, extra] if extra and extra not in parts else parts)


def check(config: PruneConfig) -> None:
    """The checks of the fine-tuning settings that depend on the method (``methods.check`` runs the others)."""
    during = [what for what, on in (("distillation", config.distill > 0), ("gradual pruning",
                                                                           config.schedule == GRADUAL)) if on]
    if during and not config.finetune_epochs:
        raise TsPruneError(f"{' and '.join(during)} run(s) while fine-tuning: set finetune_epochs to 1 or more",
                           options=("finetune_epochs",))
    if config.schedule == GRADUAL:
        method = get_method(config.method)
        if method.gradual_scope is None:
            gradual = ", ".join(m for m in (MAGNITUDE, "magnitude-layerwise") if get_method(m).gradual_scope)
            raise TsPruneError(f"{method.name} has no gradual form (its masks are no magnitude ranking to repeat "
                               f"while training): use {gradual}, or schedule oneshot", options=("schedule",))
        if config.iterative:
            raise TsPruneError("a gradual schedule and iterative pruning are two ways to walk down to the target: "
                               "choose one", options=("iterative",))
