"""Density schedules: the study's 0.8^i steps and the text forms that CLI options and sweep specs accept.

No torch here: specs and plans read densities without loading any model.
"""

from __future__ import annotations

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
