"""Reading a sweep spec: a YAML file or a preset name, validated key by key into a :class:`SweepSpec`
(:mod:`tsprune.sweep.spec`). Validation happens here, once, so a typo fails before anything trains, with a one-line
message that names the offending key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tsprune.config import (
    ENGINES,
    DataConfig,
    PruneConfig,
    TrainConfig,
    replace_known,
)
from tsprune.errors import TsPruneError
from tsprune.prune.methods import MAGNITUDE, get_method
from tsprune.prune.recipes import GRADUAL, get_recipe
from tsprune.schedule import STUDY_SCHEDULE, parse_densities
from tsprune.sweep.spec import DatasetEntry, MeasureSpec, SweepSpec

# DataConfig fields a spec may fix for all datasets (or per dataset); the rest are axes or come from the entry.
DATA_FIELDS = ("seq_len", "label_len", "target", "features", "freq")
# PruneConfig fields a spec may fix; method, density, fine-tuning epochs and measurement settings are axes/keys.
PRUNE_FIELDS = ("include_embeddings", "include_fourier", "iterative", "scope", "heads", "round_to", "timeout_s",
                "importance", "calibration_windows", "comparison", "damping", "finetune_lr", "finetune_max_steps",
                "gradual_every", "gradual_ramp")
TRAIN_AXES = ("seed", "threads", "device")  # set by the seeds axis, the worker's thread budget, the device key

def load_spec(source: str | Path) -> SweepSpec:
    """Read ``source``: a YAML file, or the name of a preset (``paper``, ``paper-mini``)."""
    from tsprune.sweep.presets import PRESETS

    path = Path(source)
    if path.is_file():
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise TsPruneError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
        return parse_spec({} if raw is None else raw, base_dir=path.resolve().parent, source=str(path))
    if str(source) in PRESETS:
        return parse_spec(PRESETS[str(source)], base_dir=Path.cwd(), source=str(source))
    raise TsPruneError(f"sweep spec {str(source)!r} is neither a YAML file nor a preset: give a path or one of "
                       f"{', '.join(PRESETS)}")


def parse_spec(raw: Any, base_dir: Path | None = None, source: str = "<dict>") -> SweepSpec:
    """Validate a spec mapping (as YAML gives it) into a :class:`SweepSpec`; errors name the key at fault."""
    if not isinstance(raw, dict):
        raise TsPruneError(f"a sweep spec must be a mapping of keys to values, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_KEYS) - {"studies"})
    if unknown:
        raise TsPruneError(f"unknown sweep spec key(s): {', '.join(map(str, unknown))} "
                           f"(known: {', '.join([*_KEYS, 'studies'])})")
    base_dir = base_dir or Path.cwd()
    studies = _studies(raw, base_dir, source)
    values: dict[str, Any] = {}
    for key, reader in _KEYS.items():
        try:
            values[key] = reader(raw[key], base_dir) if key in raw else reader(None, base_dir)
        except TsPruneError as exc:
            raise TsPruneError(f"{key}: {exc}") from None
    densities = values.pop("densities")
    for axis in ("methods", "recipes"):
        values[axis] = {name: list(own) if own is not None else list(densities) for name, own in values[axis].items()}
    spec = SweepSpec(**values, studies=studies, source=source)
    _check_combinations(spec)
    return spec


def _studies(raw: dict[str, Any], base_dir: Path, source: str) -> list[SweepSpec]:
    """Each entry of ``studies``: the main spec's keys with the entry's keys replacing them."""
    entries = raw.get("studies")
    if entries is None:
        return []
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise TsPruneError("studies: give a list of mappings, each the keys it changes from the main grid")
    shared = {key: value for key, value in raw.items() if key not in ("studies", "description")}
    out = []
    for number, entry in enumerate(entries, 1):
        if "studies" in entry:
            raise TsPruneError(f"studies: entry {number} has studies of its own; list every grid at the top")
        try:
            out.append(parse_spec({**shared, **entry}, base_dir, f"{source} study {number}"))
        except TsPruneError as exc:
            raise TsPruneError(f"studies: entry {number}: {exc}") from None
    return out


# --- one reader per key: (raw value or None when absent, spec directory) -> validated value ---------------------


def _as_list(value: Any, what: str) -> list[Any]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise TsPruneError(f"give at least one {what}")
    return items


def _unique(items: list[Any]) -> list[Any]:
    seen = [item for i, item in enumerate(items) if item in items[:i]]
    if seen:
        raise TsPruneError(f"{seen[0]!r} is listed twice")
    return items


def _ints(minimum: int, what: str, default: list[int]) -> Callable[[Any, Path], list[int]]:
    def read(value: Any, _: Path) -> list[int]:
        if value is None:
            return list(default)
        items = _as_list(value, what)
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
                raise TsPruneError(f"each {what} must be an integer >= {minimum}, got {item!r}")
        return _unique(items)

    return read


def _models(value: Any, _: Path) -> list[str]:
    from tsprune.models.registry import get_spec, study_models

    if value is None:  # the study's five: the small forecasters are asked for by name
        return study_models()
    return _unique([get_spec(str(name)).name for name in _as_list(value, "model")])


def _datasets(value: Any, base_dir: Path) -> list[DatasetEntry]:
    entries = [_dataset(item, base_dir) for item in _as_list(value if value is not None else ["ETTh1"], "dataset")]
    _unique([entry.label for entry in entries])
    return entries


def _dataset(item: Any, base_dir: Path) -> DatasetEntry:
    """``ETTh1``, ``data/my.csv``, or ``{name: ..., path: ..., pred_lens: [...], seq_len: ...}``."""
    from tsprune.data.registry import get_dataset, missing_file_message

    if isinstance(item, str):
        item = {"path": item} if item.lower().endswith(".csv") or "/" in item else {"name": item}
    if not isinstance(item, dict):
        raise TsPruneError(f"an entry must be a dataset name, a CSV path or a mapping, got {item!r}")
    extra = sorted(set(item) - {"name", "path", "pred_lens", *DATA_FIELDS})
    if extra:
        raise TsPruneError(f"unknown dataset entry key(s) {', '.join(extra)} (known: name, path, pred_lens, "
                           f"{', '.join(DATA_FIELDS)})")
    name, path = item.get("name"), item.get("path")
    overrides = {key: item[key] for key in DATA_FIELDS if key in item}
    replace_known(DataConfig(), overrides)
    pred_lens = tuple(_ints(1, "pred_len", [])(item["pred_lens"], base_dir)) if "pred_lens" in item else None
    if path is not None:
        resolved = (base_dir / str(path)).resolve()
        if not resolved.is_file():
            raise TsPruneError(f"data file {resolved} not found (relative paths are read from the spec's folder)")
        builtin = _builtin_name(name)
        return DatasetEntry(str(name or resolved.stem), builtin, str(resolved), overrides, pred_lens)
    if name is None:
        raise TsPruneError(f"a dataset entry needs a name or a path, got {item!r}")
    info = get_dataset(str(name))
    if not info.shipped:
        raise TsPruneError(missing_file_message(info).replace("its path as data_path", "a 'path:' entry"))
    return DatasetEntry(info.name, info.name, None, overrides, pred_lens)


def _builtin_name(name: Any) -> str | None:
    """A CSV entry named like a built-in dataset uses its split rule and frequency; any other name is a label."""
    from tsprune.data.registry import DATASETS

    matches = [key for key in DATASETS if name is not None and key.lower() == str(name).lower()]
    return matches[0] if matches else None


def _densities(value: Any, _: Path) -> list[float]:
    return _unique(parse_densities(value if value is not None else list(STUDY_SCHEDULE)))


def _named_densities(value: Any, what: str, known: Callable[[str], object]) -> dict[str, list[float] | None]:
    """A list of names (each at ``densities``: None) or a mapping name -> its own densities (null: ``densities``),
    each name checked by ``known`` (which raises for an unknown one)."""
    if isinstance(value, dict):
        named = {str(name): None if own is None else _unique(parse_densities(own)) for name, own in value.items()}
    else:
        named = {str(name): None for name in _unique(_as_list(value, what))}
    for name in named:
        known(name)
    return named


def _methods(value: Any, _: Path) -> dict[str, list[float] | None]:
    """A list of names (each uses ``densities``) or a mapping name -> its own densities (null: ``densities``); an
    empty one (``{}`` or ``[]``) plans the dense runs only."""
    return _named_densities([MAGNITUDE] if value is None else value, "method", get_method)


def _recipes(value: Any, _: Path) -> dict[str, list[float] | None]:
    """Like ``methods``: names (each at ``densities``) or name -> its own densities; none by default. Each recipe
    brings its method, fine-tuning schedule, distillation and budget (``tsprune.prune.recipes``)."""
    return {} if value is None else _named_densities(value, "recipe", get_recipe)


def _finetune_densities(value: Any, _: Path) -> list[float] | None:
    return None if value is None else parse_densities(value)


def _fractions(value: Any, _: Path) -> list[float]:
    items = _as_list(value if value is not None else [1.0], "train fraction")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not 0.0 < item <= 1.0:
            raise TsPruneError(f"each train fraction must be a number in (0, 1], got {item!r}")
    return _unique([float(item) for item in items])


def _model_sizes(value: Any, _: Path) -> dict[str, dict[str, Any]]:
    from tsprune.config import ModelConfig

    if value is None:
        return {"default": {}}
    if not isinstance(value, dict) or not value:
        raise TsPruneError(f"give a mapping of size name -> model hyper-parameters, got {value!r}")
    known = {f.name for f in dataclasses.fields(ModelConfig)} - {"name"}
    sizes = {}
    for name, overrides in value.items():
        overrides = overrides or {}
        if not isinstance(overrides, dict):
            raise TsPruneError(f"size {name!r} must map hyper-parameters to values, got {overrides!r}")
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TsPruneError(f"size {name!r}: unknown model hyper-parameter(s) {', '.join(unknown)}")
        sizes[str(name)] = dict(overrides)
    return sizes


def _overrides(cls: type, allowed: tuple[str, ...] | None, forbidden: tuple[str, ...] = ()) -> Callable:
    """Fixed overrides of a config dataclass, checked by building and validating it."""

    def read(value: Any, _: Path) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise TsPruneError(f"give a mapping of {cls.__name__} fields, got {value!r}")
        bad = sorted(key for key in value if key in forbidden or (allowed is not None and key not in allowed))
        if bad:
            raise TsPruneError(f"{', '.join(bad)} cannot be set here (it is an axis or set elsewhere)")
        config = replace_known(cls(), dict(value))
        config.validate()
        return dict(value)

    return read


def _measure(value: Any, _: Path) -> MeasureSpec:
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise TsPruneError(f"give a mapping with batch_sizes, repeats, threads, timed; got {value!r}")
    unknown = sorted(set(value) - {"batch_sizes", "repeats", "threads", "timed"})
    if unknown:
        raise TsPruneError(f"unknown key(s) {', '.join(unknown)} (known: batch_sizes, repeats, threads, timed)")
    sizes = tuple(_ints(1, "batch size", [1, 32])(value.get("batch_sizes"), _))
    repeats = _ints(1, "repeat count", [10])(value.get("repeats"), _)
    threads = value.get("threads")
    if threads is not None:
        threads = _ints(1, "thread count", [])(threads, _)[0]
    if len(repeats) != 1:
        raise TsPruneError("repeats must be one integer")
    timed = _flag(True)(value.get("timed"), _)
    return MeasureSpec(sizes, repeats[0], threads, timed)


def _flag(default: bool) -> Callable[[Any, Path], bool]:
    def read(value: Any, _: Path) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            raise TsPruneError(f"must be true or false, got {value!r}")
        return value

    return read


def _device(value: Any, _: Path) -> str:
    value = "auto" if value is None else value
    if not isinstance(value, str) or not (value in ("auto", "cpu") or value.startswith("cuda")):
        raise TsPruneError(f"must be auto, cpu, cuda or cuda:N, got {value!r}")
    return value


def _engines(value: Any, _: Path) -> list[str]:
    items = _unique([str(item) for item in _as_list(value if value is not None else ["dense"], "engine")])
    for item in items:
        if item not in ENGINES:
            raise TsPruneError(f"unknown engine {item!r}: use one of {', '.join(ENGINES)}")
    return items


def _text(value: Any, _: Path) -> str:
    return "" if value is None else str(value)


_KEYS: dict[str, Callable[[Any, Path], Any]] = {
    "models": _models,
    "datasets": _datasets,
    "pred_lens": _ints(1, "pred_len", [96]),
    "methods": _methods,
    "recipes": _recipes,
    "densities": _densities,
    "finetune_epochs": _ints(0, "finetune_epochs value", [0]),
    "finetune_densities": _finetune_densities,
    "seeds": _ints(0, "seed", [0]),
    "train_fractions": _fractions,
    "model_sizes": _model_sizes,
    "train": _overrides(TrainConfig, None, TRAIN_AXES),
    "data": _overrides(DataConfig, DATA_FIELDS),
    "prune": _overrides(PruneConfig, PRUNE_FIELDS),
    "measure": _measure,
    "prune_studies": _flag(False),
    "device": _device,
    "engines": _engines,
    "keep_pruned": _flag(False),
    "description": _text,
}


def _check_combinations(spec: SweepSpec) -> None:
    """Checks across keys: every size must build for every model, iterative pruning only for methods that allow
    it, and a sparse engine only with a method that leaves zeros."""
    from tsprune.models.registry import default_config

    for size, overrides in spec.model_sizes.items():
        for model in spec.models:
            try:
                default_config(model, **overrides)
            except TsPruneError as exc:
                raise TsPruneError(f"model_sizes: size {size!r} does not fit {model}: {exc}") from None
    gradual = [name for name in spec.recipes if get_recipe(name).schedule == GRADUAL]
    if spec.prune.get("iterative") and gradual:
        raise TsPruneError(f"prune: iterative pruning and the gradual schedule of {', '.join(gradual)} are two ways "
                           "to walk down to the target: drop one")
    one_shot = [name for name in spec.methods if not get_method(name).iterative]
    if spec.prune.get("iterative") and one_shot:
        raise TsPruneError(f"prune: iterative pruning is not for {', '.join(one_shot)} (one-shot): drop it or "
                           "iterative")
    finetuning = any(epochs > 0 for epochs in spec.finetune_epochs)
    if finetuning and spec.finetune_densities is not None and not any(
            spec.finetunes_at(d) for densities in spec.methods.values() for d in densities):
        raise TsPruneError("finetune_densities: none of them is among the methods' densities")
    used = [*spec.methods, *(get_recipe(name).method for name in spec.recipes)]
    if "sparse" in spec.engines and used and not any(get_method(m).sparse_engine for m in used):
        raise TsPruneError("engines: the sparse engine runs models with zeros (unstructured methods); add one or "
                           "drop 'sparse'")
    if "sparse" in spec.engines and not spec.measure.timed:
        raise TsPruneError("engines: a sparse-engine twin exists to be timed, and measure.timed is false: drop "
                           "'sparse' or time the runs")
