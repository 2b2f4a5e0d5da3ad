"""The sweep specification: the typed, validated :class:`SweepSpec` a YAML file or a preset is read into
(:mod:`tsprune.sweep.spec_reader` reads and validates it).

Every axis is a list; omitted axes take defaults.

A grid is one product of axes. A study that is not one product (the study's model-size x dataset-size part runs
one model only) adds ``studies``: a list of mappings, each the main spec with some keys replaced, planned as a
grid of its own. A run two grids share (the same configuration) is one run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tsprune.runtime import thread_budget

# Densities closer than this are the same density when matching finetune_densities (specs write 3 decimals).
DENSITY_MATCH = 1e-3


@dataclass(frozen=True)
class DatasetEntry:
    """One value of the ``datasets`` axis: a built-in name or a CSV path, with optional per-dataset settings."""

    label: str  # how the dataset is named in records and tables
    dataset: str | None  # built-in name (None for a user CSV)
    data_path: str | None = None
    data: dict[str, Any] = field(default_factory=dict)  # DataConfig overrides for this dataset
    pred_lens: tuple[int, ...] | None = None  # this dataset's horizons (default: the spec's pred_lens)


@dataclass(frozen=True)
class MeasureSpec:
    """Latency measurement of every pruned model; ``threads`` None uses the worker's thread budget. A prune run's
    thread count is one setting (a run is deterministic for it), so ``threads`` also sets the threads of its pruning,
    evaluation and fine-tuning, whatever the worker's budget."""

    batch_sizes: tuple[int, ...] = (1, 32)
    repeats: int = 10
    threads: int | None = None
    timed: bool = True  # False: prune runs take no latency timings (an accuracy-only grid); FLOPs are still counted

    def overrides_budget(self, threads: int | None, workers: int | None, cores: int) -> str | None:
        """A note when the prune runs will not use the worker thread budget ``threads`` (or ``cores // workers``)
        because these settings fix their threads; None when they do."""
        workers = workers or 1
        budget = threads if threads is not None else thread_budget(cores, workers)
        if self.threads is None or self.threads == budget:
            return None
        crowded = workers * self.threads > cores
        load = f"; {workers} workers run {workers * self.threads} threads on {cores} cores" if crowded else ""
        return (f"note: the spec's measure.threads ({self.threads}) sets every prune run's threads (pruning, "
                f"fine-tuning, evaluation and timing), not the worker budget ({budget}); dense runs use the budget"
                f"{load}")


@dataclass
class SweepSpec:
    """A validated sweep: the axes of the grid plus the settings shared by all its runs."""

    models: list[str]
    datasets: list[DatasetEntry]
    pred_lens: list[int] = field(default_factory=lambda: [96])
    methods: dict[str, list[float]] = field(default_factory=dict)  # method -> its densities
    recipes: dict[str, list[float]] = field(default_factory=dict)  # recipe -> its densities (prune.recipes)
    finetune_epochs: list[int] = field(default_factory=lambda: [0])
    finetune_densities: list[float] | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    train_fractions: list[float] = field(default_factory=lambda: [1.0])
    model_sizes: dict[str, dict[str, Any]] = field(default_factory=lambda: {"default": {}})
    train: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    prune: dict[str, Any] = field(default_factory=dict)
    measure: MeasureSpec = field(default_factory=MeasureSpec)
    prune_studies: bool = False
    device: str = "auto"
    engines: list[str] = field(default_factory=lambda: ["dense"])
    keep_pruned: bool = False
    description: str = ""
    studies: list[SweepSpec] = field(default_factory=list)  # further grids, each a variant of this one
    source: str = "<dict>"  # the file or preset it came from

    def finetunes_at(self, density: float) -> bool:
        """Whether fine-tuning runs (epochs > 0) are planned at ``density``."""
        if self.finetune_densities is None:
            return True
        return any(abs(density - d) <= DENSITY_MATCH for d in self.finetune_densities)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def spec_from_dict(raw: dict[str, Any]) -> SweepSpec:
    """The spec that :meth:`SweepSpec.to_dict` wrote (a sweep directory's ``spec.json``): the same plan, the same
    run ids. An unknown field (a spec.json from another tsprune version) is a ``ValueError``."""
    values = _field_values(SweepSpec, raw)
    values["datasets"] = [DatasetEntry(**_field_values(DatasetEntry, entry)) for entry in raw.get("datasets") or []]
    if isinstance(raw.get("measure"), dict):
        values["measure"] = MeasureSpec(**_field_values(MeasureSpec, raw["measure"]))
    values["studies"] = [spec_from_dict(study) for study in raw.get("studies") or []]
    return SweepSpec(**values)


def _field_values(kind: type, raw: dict[str, Any]) -> dict[str, Any]:
    """``raw``'s values for the fields of the dataclass ``kind``, lists turned back into tuples where the field is
    a tuple (JSON has lists only)."""
    fields = {item.name: item for item in dataclasses.fields(kind)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(f"unknown {kind.__name__} field(s) {', '.join(unknown)}")
    return {name: tuple(value) if isinstance(value, list) and str(fields[name].type).startswith("tuple") else value
            for name, value in raw.items()}
