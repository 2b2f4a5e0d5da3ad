"""Expand a :class:`SweepSpec` into the runs it stands for: dense trainings, and prune runs that each name the dense
run they start from. A run's id is a short hash of its configuration, so the same run always gets the same id
(that is what lets an interrupted sweep skip what it already did) and two different runs never share one.

The hash leaves out every config field that holds its default. A field added in a later version (with a default
that keeps the old behaviour) therefore leaves the ids of earlier runs unchanged, and a sweep that ran for days
resumes on newer code. The price: changing a field's *default* changes what an id means, so a default is changed
only with a new record format. Records keep the full configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, TypeVar

from tsprune.config import PruneConfig, RunConfig
from tsprune.errors import TsPruneError
from tsprune.models.registry import get_spec
from tsprune.prune.methods import get_method
from tsprune.prune.recipes import get_recipe, recipe_of, with_recipe
from tsprune.sweep.spec import DatasetEntry, SweepSpec


@dataclass(frozen=True)
class Labels:
    """The axis values that identify a run in tables (its configuration holds everything else)."""

    model: str
    dataset: str
    pred_len: int
    seed: int
    size: str
    train_fraction: float
    method: str = "dense"
    target_density: float = 1.0
    finetune_epochs: int = 0
    engine: str = "dense"
    variant: str = ""  # the method options a grid sets away from their defaults, e.g. "importance=taylor"
    recipe: str = ""  # the recipe the pruning is (prune.recipes.recipe_of), "" for none

    def describe(self) -> str:
        head = f"{self.model} {self.dataset}/{self.pred_len} seed {self.seed} {self.size} frac {self.train_fraction:g}"
        if self.method == "dense":
            return f"{head} dense"
        finetune = f" +ft{self.finetune_epochs}" if self.finetune_epochs else ""
        engine = f" [{self.engine}]" if self.engine != "dense" else ""
        variant = f" ({self.variant})" if self.variant else ""
        recipe = f" <{self.recipe}>" if self.recipe else ""
        return f"{head} {self.method}{variant} {self.target_density:.3g}{finetune}{recipe}{engine}"


@dataclass(frozen=True)
class DenseRun:
    """Train one dense forecaster (``config.train.threads`` is left to the worker)."""

    kind: ClassVar[str] = "dense"
    labels: Labels
    config: RunConfig
    parent_id: ClassVar[None] = None

    def identity(self) -> dict[str, Any]:
        """The full configuration, as records keep it."""
        return {"kind": "dense", "config": self.config.to_dict()}

    @cached_property
    def run_id(self) -> str:
        return config_hash({"kind": "dense", "config": non_default(self.config)})


@dataclass(frozen=True)
class PruneRun:
    """Prune dense run ``parent`` as ``config`` says (``config.threads`` None: the worker's thread budget)."""

    kind: ClassVar[str] = "prune"
    parent: DenseRun
    labels: Labels
    config: PruneConfig

    @property
    def parent_id(self) -> str:
        return self.parent.run_id

    @property
    def engine(self) -> str:
        return self.config.engine

    def twin_of(self, other: "PruneRun") -> bool:
        """Whether ``other`` is the same pruning of the same dense run, timed or run differently (its engine twin):
        the two share one pruning, fine-tuning and evaluation when one worker runs them one after the other."""
        return self.parent_id == other.parent_id and self.config.settings() == other.config.settings()

    def identity(self) -> dict[str, Any]:
        return {"kind": "prune", "parent": self.parent_id, "engine": self.engine,
                "prune": dataclasses.asdict(self.config)}

    @cached_property
    def run_id(self) -> str:
        # the engine sits beside the pruning settings in the hash, as it did before it was a PruneConfig field
        prune = {key: value for key, value in non_default(self.config).items() if key != "engine"}
        return config_hash({"kind": "prune", "parent": self.parent_id, "engine": self.engine, "prune": prune})


@dataclass
class Plan:
    """Every run of a sweep, dense runs first; prune runs grouped under their parent."""

    dense: list[DenseRun] = field(default_factory=list)
    prune: list[PruneRun] = field(default_factory=list)

    def runs(self) -> list[DenseRun | PruneRun]:
        """Every run, dense runs first."""
        return [*self.dense, *self.prune]

    def children(self) -> dict[str, list[PruneRun]]:
        groups: dict[str, list[PruneRun]] = defaultdict(list)
        for run in self.prune:
            groups[run.parent_id].append(run)
        return groups

    def __len__(self) -> int:
        return len(self.dense) + len(self.prune)


def non_default(config: Any) -> dict[str, Any]:
    """The fields of dataclass ``config`` that differ from their defaults, nested dataclasses likewise."""
    out: dict[str, Any] = {}
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        if dataclasses.is_dataclass(value):
            out[spec.name] = non_default(value)
            continue
        if spec.default is not dataclasses.MISSING:
            default = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            default = spec.default_factory()
        else:
            default = dataclasses.MISSING
        if value != default:
            out[spec.name] = list(value) if isinstance(value, tuple) else value
    return out


def config_hash(payload: dict[str, Any]) -> str:
    """12 hex digits of the SHA-256 of ``payload`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def dense_config(spec: SweepSpec, entry: DatasetEntry, model: str, pred_len: int, size: str, fraction: float,
                 seed: int) -> RunConfig:
    from tsprune.configure import make_config

    data = {"dataset": entry.dataset, "data_path": entry.data_path, **spec.data, **entry.data,
            "pred_len": pred_len, "train_fraction": fraction}
    train = {**spec.train, "seed": seed, "device": spec.device}
    return make_config(model, data=data, train=train, **spec.model_sizes[size])


def plan_sweep(spec: SweepSpec) -> Plan:
    """All runs of ``spec`` and of its ``studies``; a run that several grids share is planned once, with the
    labels of the first grid that has it."""
    plan = _plan_grid(spec)
    seen = {run.run_id for run in plan.runs()}
    for study in spec.studies:
        extra = _plan_grid(study)
        _add_unseen(plan.dense, extra.dense, seen)
        _add_unseen(plan.prune, extra.prune, seen)
    return plan


RunT = TypeVar("RunT", DenseRun, PruneRun)


def _add_unseen(group: list[RunT], runs: list[RunT], seen: set[str]) -> None:
    """Append to ``group`` the ``runs`` whose ids are not in ``seen``, adding their ids to it."""
    for run in runs:
        if run.run_id not in seen:
            seen.add(run.run_id)
            group.append(run)


def _plan_grid(spec: SweepSpec) -> Plan:
    """The runs of one grid. Prune runs start from the first model size at the largest train fraction only,
    unless ``prune_studies`` is set (then from every size and fraction)."""
    plan = Plan()
    first_size, top_fraction = next(iter(spec.model_sizes)), max(spec.train_fractions)
    for entry in spec.datasets:
        for pred_len in entry.pred_lens or spec.pred_lens:
            for model in spec.models:
                for size in spec.model_sizes:
                    for fraction in spec.train_fractions:
                        for seed in spec.seeds:
                            config = dense_config(spec, entry, model, pred_len, size, fraction, seed)
                            labels = Labels(model, entry.label, pred_len, seed, size, fraction)
                            dense = DenseRun(labels, config)
                            plan.dense.append(dense)
                            if spec.prune_studies or (size == first_size and fraction == top_fraction):
                                plan.prune.extend(_prune_runs(spec, dense))
    _check_unique(plan)
    return plan


def _prune_runs(spec: SweepSpec, dense: DenseRun) -> list[PruneRun]:
    """The prune runs of one dense run, the methods' then the recipes'; engine twins side by side, so a worker
    prunes and fine-tunes them once. A recipe run that is one of the methods' runs (``magnitude-ft`` is magnitude
    fine-tuned for an epoch) is planned once."""
    runs: dict[str, PruneRun] = {}
    channels = get_spec(dense.labels.model).channels
    # (method, densities, fine-tuning budgets, fine-tuning settings): the methods', then each recipe's
    planned: list[tuple[str, list[float], list[int], dict[str, Any]]] = [
        (method, densities, spec.finetune_epochs, {}) for method, densities in spec.methods.items()]
    for name, densities in spec.recipes.items():
        recipe = get_recipe(name)
        planned.append((recipe.method, densities, [recipe.epochs], {"schedule": recipe.schedule,
                                                                     "distill": recipe.distill}))
    for method, densities, budgets, finetuning in planned:
        if get_method(method).structured and not channels:
            continue  # nothing to remove (DLinear): the model's record says so, and `tsprune prune` refuses it
        variant = _variant(spec, method)
        for density in densities:
            for epochs in budgets:
                if epochs and not finetuning and not spec.finetunes_at(density):
                    continue
                for engine in spec.engines:
                    if engine == "sparse" and not get_method(method).sparse_engine:
                        continue  # channels are gone, no zeros are left for sparse kernels to skip
                    config = PruneConfig(method=method, density=density, finetune_epochs=epochs,
                                         batch_sizes=spec.measure.batch_sizes, latency_repeats=spec.measure.repeats,
                                         threads=spec.measure.threads, timed=spec.measure.timed,
                                         device=spec.device, engine=engine,
                                         **{**spec.prune, **finetuning})
                    named = recipe_of(dataclasses.asdict(config))
                    labels = dataclasses.replace(dense.labels, method=method, target_density=density,
                                                 finetune_epochs=epochs, engine=engine,
                                                 variant=with_recipe(variant, named), recipe=named or "")
                    run = PruneRun(dense, labels, config)
                    runs.setdefault(run.run_id, run)
    return list(runs.values())


def _variant(spec: SweepSpec, method: str) -> str:
    """``key=value`` of each option of ``method`` that the grid sets away from its default (tables tell apart
    grids that differ only there, such as DepGraph's importances)."""
    defaults = PruneConfig()
    options = get_method(method).options
    return ",".join(f"{key}={value}" for key, value in sorted(spec.prune.items())
                    if key in options and value != getattr(defaults, key))


def _check_unique(plan: Plan) -> None:
    seen: dict[str, Labels] = {}
    for run in plan.runs():
        if run.run_id in seen:
            raise TsPruneError(f"two runs of the sweep have the same configuration ({seen[run.run_id].describe()} "
                               f"and {run.labels.describe()}): make the model sizes or axis values distinct")
        seen[run.run_id] = run.labels
