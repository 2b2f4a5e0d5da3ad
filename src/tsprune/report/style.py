"""The report's look, shared by every figure: colors, markers, panel grids, log axes, legends and notes.

A fixed color per model (the same in every report), solid lines for unstructured pruning and dashed for
structured, a marker per method, and a figure that says in words what is missing instead of an empty plot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
from matplotlib.typing import RcKeyType

from tsprune.models.registry import SPECS
from tsprune.prune.methods import METHODS
from tsprune.report import tables
from tsprune.report.tables import is_structured

STYLE: dict[RcKeyType, Any] = {
    "font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "legend.fontsize": 9, "figure.titlesize": 12,
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
    "svg.hashsalt": "tsprune", "figure.dpi": 100,
}

# Fixed order of the registered models, so a model keeps its color from one report to the next.
KNOWN_MODELS = tuple(spec.name.lower() for spec in SPECS)
# tab10 is a ListedColormap, whose colors are RGB tuples; matplotlib's stubs know only the base Colormap here.
PALETTE: tuple[tuple[float, float, float], ...] = colormaps["tab10"].colors  # type: ignore[attr-defined]
METHOD_MARKERS = {"dense": "*", **{method.name: method.marker for method in METHODS}}
SPARE_MARKERS = ("D", "v", "P", "X", "<", ">")
# A method's variants (other options than its defaults) are drawn with markers no registered method uses.
VARIANT_MARKERS = tuple(m for m in ("X", "<", ">", "h", "p", "d", "8", "H") if m not in METHOD_MARKERS.values())
PANEL = (5.0, 3.6)  # inches per panel
SPARE = "spare panel"
MIN_WIDTH = 8.0  # inches: room for the two-line title and the legend under a single panel
MAX_COLUMNS = 3


def model_colors(models: Iterable[str]) -> dict[str, tuple]:
    """Known models get their fixed color; others follow in sorted order so the mapping is stable too."""
    colors = {name: PALETTE[i] for i, name in enumerate(KNOWN_MODELS)}
    for i, name in enumerate(sorted(set(models) - set(KNOWN_MODELS))):
        colors[name] = PALETTE[(len(KNOWN_MODELS) + i) % len(PALETTE)]
    return colors


def marker(method: str) -> str:
    """A marker per method; unknown methods take spare markers by a stable hash of their name."""
    if method in METHOD_MARKERS:
        return METHOD_MARKERS[method]
    return SPARE_MARKERS[sum(map(ord, method)) % len(SPARE_MARKERS)]


def series_markers(frame: pd.DataFrame) -> dict[str, str]:
    """A marker per series label of the pruned rows of a ``tables.prepare``-d frame: a method at its defaults keeps
    its own marker, its variants take :data:`VARIANT_MARKERS` in label order. Pass the whole table, so every figure
    of a report draws a series with the same marker."""
    rows = frame.loc[frame["kind"] == "prune", [*tables.SERIES, "series"]].drop_duplicates()
    markers = {label: marker(method) for method, variant, label in rows.itertuples(index=False) if not variant}
    variants = sorted(label for _, variant, label in rows.itertuples(index=False) if variant)
    markers.update({label: VARIANT_MARKERS[i % len(VARIANT_MARKERS)] for i, label in enumerate(variants)})
    return markers


def linestyle(method: str) -> str:
    return "--" if is_structured(method) else "-"


def percent(value: float) -> str:
    """0.05 -> "5%", 0.512 -> "51.2%": densities and fractions read best as percentages."""
    return f"{value * 100:.3g}%"


def panels(count: int, extra_height: float = 0.0) -> tuple[Figure, list[Axes]]:
    """A grid of ``count`` panels (at most three a row) in a constrained-layout figure; unused cells stay blank
    (``legend`` puts the key there)."""
    count = max(count, 1)
    columns = min(count, MAX_COLUMNS)
    rows = math.ceil(count / columns)
    width = max(PANEL[0] * columns, MIN_WIDTH)
    fig = Figure(figsize=(width, PANEL[1] * rows + extra_height), layout="constrained")
    axes = list(fig.subplots(rows, columns, squeeze=False).ravel())
    for unused in axes[count:]:
        unused.set_axis_off()
        unused.set_label(SPARE)  # the legend goes in the first one
    return fig, axes[:count]


def note(ax: Axes, text: str) -> None:
    """Say in the panel why it is empty, so the report explains itself instead of showing blank axes."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.35", fontsize=11, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def headline(fig: Figure, main: str, detail: str = "") -> None:
    """The figure's title, and on a second line which runs it shows (size, data, fine-tuning)."""
    fig.suptitle(main + (f"\n{detail}" if detail else ""))


def note_figure(title: str, text: str) -> Figure:
    """A small figure holding only a note: a missing study still gets its file, and says why it is empty."""
    fig = Figure(figsize=(MIN_WIDTH, 2.6), layout="constrained")
    ax = fig.subplots()
    note(ax, text)
    for spine in ax.spines.values():
        spine.set_visible(False)
    headline(fig, title)
    return fig


def nice_ticks(low: float, high: float) -> list[float]:
    """1-1.5-2-3-5-7 ticks per decade over a short log range, 1-2-5 over a longer one, decades over a huge one."""
    span = high / low
    mantissas = (1, 1.5, 2, 3, 5, 7) if span < 20 else (1, 2, 5) if span < 1e4 else (1,)
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    return [m * 10.0**d for d in decades for m in mantissas if low <= m * 10.0**d <= high]


def log_axis(ax: Axes, axis: str, values: Iterable[float], formatter: Callable[[float], str], pad: float = 1.25,
             ticks: Sequence[float] | None = None) -> None:
    """A log axis spanning ``values`` with readable labelled ticks (``nice_ticks`` unless given), minor unlabelled."""
    values = [v for v in values if np.isfinite(v) and v > 0]
    if not values:
        return
    low, high = min(values) / pad, max(values) * pad
    ticks = [t for t in (ticks if ticks is not None else nice_ticks(low, high)) if low <= t <= high]
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    (ax.set_xlim if axis == "x" else ax.set_ylim)(low, high)
    target.set_major_locator(FixedLocator(ticks or sorted({min(values), max(values)})))
    target.set_major_formatter(FuncFormatter(lambda v, _: formatter(v)))
    target.set_minor_formatter(NullFormatter())


def mse_axis(ax: Axes, values: Iterable[float]) -> None:
    """Log y when the MSEs span more than a factor of 8, else a collapsed model would flatten everything else."""
    finite = [v for v in values if np.isfinite(v) and v > 0]
    wide = bool(finite) and max(finite) / min(finite) > 8
    if wide:
        log_axis(ax, "y", finite, lambda v: f"{v:g}", pad=1.1)
    ax.set_ylabel("test MSE" + (" (log scale)" if wide else ""))


def legend(fig: Figure, groups: list[list], right: bool = False) -> None:
    """One key for all panels: in an unused panel cell if the grid has one, else below (or right of the first).

    Below the panels each group (models, methods, references) is a column, padded with blank entries; a single
    group reads best as rows of up to five. On the right, the groups stack in one column, a blank entry between them.
    """
    groups = [group for group in groups if group]
    if not groups:
        return
    blank = Line2D([], [], ls="none", label=" ")
    spare = [ax for ax in fig.axes if ax.get_label() == SPARE]
    if spare:
        handles = [handle for group in groups for handle in group]
        spare[0].legend(handles=handles, loc="center", ncols=1 if len(handles) <= 12 else 2, frameon=False)
        return
    if right:
        handles = [handle for group in groups for handle in [*group, blank]][:-1]
        fig.axes[0].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        return
    if len(groups) == 1:
        per_column = math.ceil(len(groups[0]) / 5)
        groups = [groups[0][i:i + per_column] for i in range(0, len(groups[0]), per_column)]
    rows = max(len(group) for group in groups)
    handles = [handle for group in groups for handle in group + [blank] * (rows - len(group))]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(groups), frameon=False)


def model_handles(models: Iterable[str], colors: dict[str, tuple]) -> list:
    return [Line2D([], [], color=colors[m], lw=2.5, label=m) for m in sorted(set(models))]


def series_handles(rows: pd.DataFrame, markers: dict[str, str]) -> list:
    """One legend entry per series (method and variant) in ``rows``, e.g. "depgraph (taylor), structured"."""
    kind = {True: "structured", False: "unstructured"}
    return [Line2D([], [], color="0.25", ls=linestyle(method), marker=markers[label], lw=1.4,
                   label=f"{label}, {kind[is_structured(method)]}") for method, label, _ in tables.series_groups(rows)]


def human_count(value: float) -> str:
    """12000 -> "12k", 3400000 -> "3.4M": parameter counts at a glance."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"
