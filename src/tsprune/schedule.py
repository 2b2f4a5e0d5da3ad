"""Density schedules: the study's 0.8^i steps and the text forms that CLI options and sweep specs accept.

No torch here: specs and plans read densities without loading any model.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Sequence
from typing import cast

from tsprune.errors import TsPruneError

# The study's density schedule: each step keeps 80% of the previous step's weights (1.0, 0.8, ..., 0.107).
STUDY_SCHEDULE: tuple[float, ...] = tuple(0.8**i for i in range(11))

_POWER_SPEC = re.compile(r"^\s*([^\^]+?)\s*\^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")


def check_density(density: float) -> float:
    # `not 0 < d <= 1` also rejects NaN.
    if not 0.0 < density <= 1.0:
        raise TsPruneError(f"density {density!r} is not in (0, 1]: it is the fraction of weights kept")
    return float(density)


def parse_densities(spec: str | float | Sequence[float]) -> list[float]:
    """Target densities from a command-line style ``spec``, in the order given.

    ``"0.8^0..10"`` is ``base ** i`` for ``i`` from start to stop inclusive; ``"study"`` is ``STUDY_SCHEDULE``;
    ``"0.5,0.25"`` a list; a number or a sequence of numbers is taken as is. Every density must be in (0, 1].
    """
    if isinstance(spec, str):
        values = _parse_density_text(spec)
    elif isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        values = [float(spec)]
    else:  # a sequence (mypy cannot tell numbers.Real covers float); a bool fails here as it should
        try:
            values = [float(value) for value in cast(Iterable[float], spec)]
        except (TypeError, ValueError):
            raise TsPruneError(f"cannot read densities from {spec!r}: give numbers in (0, 1]") from None
    if not values:
        raise TsPruneError(f"no densities in {spec!r}")
    return [check_density(value) for value in values]


def _parse_density_text(text: str) -> list[float]:
    hint = "use e.g. 0.8^0..10, study, 0.5,0.25 or 0.3"
    if text.strip().lower() == "study":
        return list(STUDY_SCHEDULE)
    try:
        power = _POWER_SPEC.match(text)
        if power:
            base, start, stop = float(power[1]), int(power[2]), int(power[3])
            return [base**i for i in range(start, stop + 1)]
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise TsPruneError(f"cannot read densities from {text!r}: {hint}") from None


# ---------------------------------------------------------------------------------------------- gradual pruning


def gradual_end(total_steps: int, ramp: float) -> int:
    """The optimiser step at which a gradual schedule over ``total_steps`` reaches its target: ``ramp`` of the
    steps, rounded up, at least 1 (the rest of the budget fine-tunes the final mask)."""
    return max(1, math.ceil(ramp * total_steps))


def gradual_prunes_at(step: int, end: int, every: int) -> bool:
    """Whether the masks are recomputed after optimiser step ``step`` (1-based): every ``every`` steps up to ``end``,
    and at ``end`` itself, so the target is met there whatever ``every`` is."""
    return 1 <= step <= end and (step % every == 0 or step == end)


def gradual_density(step: int, end: int, every: int, target: float) -> float:
    """Density after optimiser step ``step`` on Zhu & Gupta's cubic schedule ("To prune, or not to prune", 2017).

    Sparsity ``s = s_f * (1 - (1 - t / end)^3)`` at each pruning step ``t`` (:func:`gradual_prunes_at`), from the
    dense parent (initial sparsity 0) to ``s_f = 1 - target`` at ``end``, held between pruning steps and after
    ``end``. The cube prunes fast while many weights are redundant and slowly as the target nears, leaving the
    network time to recover from each cut. Step 0 is the dense model.
    """
    check_density(target)
    if step >= end:
        return target
    last = step - step % every  # the last pruning step so far (0: none yet)
    if last < 1:
        return 1.0
    return 1.0 - (1.0 - target) * (1.0 - (1.0 - last / end) ** 3)
