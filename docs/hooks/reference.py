"""Reference pages generated from the code, so they cannot drift from it: the CLI from the typer app, the sweep
spec's keys from the spec reader, the results table's columns from ``sweep.results``, and the records the rest of
the code derives from (models, pruning methods, recipes, presets).

Each generator returns markdown. Where the code has no words of its own for an entry (a column, a spec key), the
notes below give them, and a missing or stale note is an error: the strict docs build fails with its name.
"""

from __future__ import annotations

from typing import Any

from cli_reference import option_flags

SPEC_NOTES: dict[str, str] = {
    "models": "Model names (`tsprune models`); omitted: the study's five. The small forecasters are asked for by name.",
    "datasets": "Built-in names, CSV paths, or mappings `{name, path, pred_lens, seq_len, label_len, target, "
                "features, freq}` (per-dataset settings).",
    "pred_lens": "Forecast horizons (each dataset may give its own in `pred_lens`).",
    "methods": "Pruning methods: a list of names (each at `densities`) or a mapping name -> its own densities "
               "(`\"0.8^0..10\"`, a list, or null for `densities`); `{}` plans the dense runs only.",
    "recipes": "Recipes for high sparsity, as `methods`: names or name -> densities. Each brings its method, "
               "schedule, distillation and fine-tuning budget.",
    "densities": "The densities of methods and recipes that give none of their own.",
    "finetune_epochs": "Fine-tuning epochs after pruning, an axis (0: none).",
    "finetune_densities": "Fine-tune only at these densities (others run with 0 epochs only); omitted: at every "
                          "density.",
    "seeds": "Training seeds, an axis.",
    "train_fractions": "Fractions of the training split kept (the most recent rows), an axis: the dataset-size "
                       "study.",
    "model_sizes": "Named model sizes, each a mapping of model hyper-parameters: the model-size study. Prune runs "
                   "start from the first size only (unless `prune_studies`).",
    "train": "TrainConfig fields fixed for every run (`epochs`, `max_steps`, `lr`, ...); seed, threads and device "
             "are set by other keys.",
    "data": "DataConfig fields fixed for every dataset.",
    "prune": "PruneConfig fields fixed for every prune run (`importance`, `calibration_windows`, ...); the table's "
             "`variant` column names those away from their defaults.",
    "measure": "Latency measurement: `batch_sizes`, `repeats`, `threads` (also the prune runs' thread count), "
               "`timed` (false: no latency at all).",
    "prune_studies": "Also prune the models of every size and train fraction, not only the first size at the "
                     "largest fraction.",
    "device": "`auto`, `cpu`, `cuda` or `cuda:N`.",
    "engines": "`dense`, and `sparse` for a compiled twin of every unstructured run (timed on the sparse engine).",
    "keep_pruned": "Keep every pruned run's directory (weights) in the store, so a measuring pass can time it again.",
    "description": "Free text saying what the grid is for (the presets' are listed in Sweeps and reports); kept in "
                   "the sweep's `spec.json`.",
    "studies": "Further grids: a list of mappings, each the main spec with some keys replaced. A run two grids "
               "share is planned once.",
}

COLUMN_NOTES: dict[str, str] = {
    "run_id": "Hash of the run's configuration (fields at their defaults left out): the record's file name.",
    "parent_id": "A prune run's dense run.",
    "kind": "`dense` or `prune`.",
    "status": "`done` or `failed`.",
    "error": "A failed run's reason, one line.",
    "failure": "`deterministic` (the run itself) or `environmental` (the machine, retried).",
    "model": "Forecaster name.",
    "dataset": "Dataset label: a built-in name or the CSV's.",
    "pred_len": "Forecast horizon.",
    "seed": "Training seed.",
    "size": "Model size name from the spec's `model_sizes` (`default`: the model's own).",
    "train_fraction": "Fraction of the training split used.",
    "method": "Pruning method (`dense` for dense runs).",
    "target_density": "The density asked for (method's own meaning: prunable weights or parameters).",
    "finetune_epochs": "Fine-tuning epochs after pruning.",
    "engine": "`dense` (masked weights, dense kernels) or `sparse` (compiled for the sparse engine).",
    "variant": "The method options a grid sets away from their defaults, e.g. `importance=taylor`.",
    "recipe": "The recipe the run's prune settings amount to (derived, so older records have one).",
    "mse": "Test MSE on the normalised scale over every test window.",
    "mae": "Test MAE on the normalised scale.",
    "mse_raw": "Test MSE in original units.",
    "mae_raw": "Test MAE in original units.",
    "dense_mse": "The dense parent's test MSE.",
    "dense_mae": "The dense parent's test MAE.",
    "params": "Parameters of the model as it runs (a structured run's smaller model).",
    "nonzero_params": "Parameters that are not zero.",
    "params_dense": "The dense parent's parameters.",
    "density_prunable": "Fraction of the prunable weights kept.",
    "density_total": "Non-zero parameters over the dense model's parameters.",
    "flops": "FLOPs of one forward pass at batch 1 (see FLOP convention).",
    "flops_dense": "The dense parent's FLOPs.",
    "flops_ratio": "`flops / flops_dense`.",
    "flops_effective": "FLOPs with each Linear/Conv1d charged its weight density (what a sparse kernel would do).",
    "flops_effective_ratio": "`flops_effective / flops_dense`.",
    "latency_ms": "Median latency at the largest batch size measured, milliseconds.",
    "latency_dense_ms": "The dense parent's median latency, timed in alternation with this run.",
    "speedup": "`latency_dense_ms / latency_ms`, at the largest batch size (same process, same conditions).",
    "latency_measured": "Where the timing comes from: `pass` (the measuring pass), `pass-repruned` (the pass, on a "
                        "pruning made again), `sweep` (in the sweep, under its load), `deferred` (not yet).",
    "emptied_layers": "Prunable layers left with no weight (unstructured methods).",
    "method_seconds": "Seconds of the pruning method alone.",
    "train_seconds": "Seconds of training (dense) or fine-tuning (prune).",
    "prune_seconds": "Seconds of the whole prune run (method, fine-tuning, evaluation, timing).",
    "wall_seconds": "Wall-clock seconds of the run as the sweep saw it.",
    "epochs_run": "Training epochs run (early stopping may end sooner).",
    "attempt": "Which attempt wrote the record (environmental failures are retried).",
    "retries": "Attempts the Ray executor lost (a dead node or worker).",
    "node": "The Ray node that ran it.",
    "config_json": "The run's full configuration, JSON.",
    "torch": "torch version.",
    "threads": "Thread count the run used.",
    "device": "Device it ran on.",
    "host": "Machine name.",
    "git_rev": "Commit of the code that ran it.",
    "tsprune_version": "tsprune version.",
    "started_at": "Start time (UTC, ISO 8601).",
    "finished_at": "End time (UTC, ISO 8601).",
}


def _check_notes(notes: dict[str, str], names: list[str], what: str) -> None:
    missing, stale = [n for n in names if n not in notes], [n for n in notes if n not in names]
    if missing or stale:
        raise ValueError(f"docs/hooks/reference.py: {what} notes out of date: missing {missing}, stale {stale}")


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def results_columns() -> str:
    """The results table's columns (``sweep.results.COLUMNS``), in order, with their dtype and group."""
    from tsprune.sweep import results

    names = list(results.COLUMNS)
    _check_notes(COLUMN_NOTES, names, "results column")
    lines = ["| column | dtype | group | meaning |", "|---|---|---|---|"]
    for name in names:
        group = ("label" if name in results.LABELS else "metric" if name in results.METRICS
                 else "run" if name in results.RUN_FIELDS else "derived")
        lines.append(f"| `{name}` | {results.COLUMNS[name]} | {group} | {_cell(COLUMN_NOTES[name])} |")
    return "\n".join(lines) + "\n"


def _default(reader: Any) -> str:
    from pathlib import Path

    value = reader(None, Path("."))
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        value = dataclasses.asdict(value)
    if isinstance(value, list) and value and hasattr(value[0], "label"):
        value = [item.label for item in value]
    if isinstance(value, list) and value and all(isinstance(item, float) for item in value):
        return "[" + ", ".join(f"{item:.3g}" for item in value) + "]"
    return f"`{value!r}`" if value not in ("", {}, None) else "—"


def spec_keys() -> str:
    """Every key the spec reader accepts (``sweep.spec_reader._KEYS`` and ``studies``), its default and, for the
    mapping keys, the fields it may set."""
    import dataclasses

    from tsprune.config import TrainConfig
    from tsprune.sweep import spec_reader

    readers = spec_reader._KEYS
    names = [*readers, "studies"]
    _check_notes(SPEC_NOTES, names, "spec key")
    settable = {
        "train": [f.name for f in dataclasses.fields(TrainConfig) if f.name not in spec_reader.TRAIN_AXES],
        "data": list(spec_reader.DATA_FIELDS),
        "prune": list(spec_reader.PRUNE_FIELDS),
    }
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for name in names:
        default = "—" if name == "studies" else _default(readers[name])
        note = SPEC_NOTES[name]
        if name in settable:
            note += " Fields: " + ", ".join(f"`{field}`" for field in settable[name]) + "."
        lines.append(f"| `{name}` | {_cell(default)} | {_cell(note)} |")
    return "\n".join(lines) + "\n"


def models() -> str:
    """The model registry (``models.registry.SPECS``)."""
    from tsprune.models.registry import SPECS

    lines = ["| model | group | what it is | hyper-parameters it reads | structured pruning |", "|---|---|---|---|---|"]
    for spec in SPECS:
        uses = ", ".join(f"`{name}`" for name in spec.uses)
        lines.append(f"| {spec.name} | {spec.group} | {_cell(spec.summary)} | {uses} | "
                     f"{'yes' if spec.channels else 'refused (no channels)'} |")
    return "\n".join(lines) + "\n"


def methods() -> str:
    """The pruning method records (``prune.methods.METHODS``)."""
    from tsprune.prune.methods import METHODS

    flags = option_flags("prune")
    lines = ["| method | kind | `--density` is the kept fraction of | what it does | its own options |",
             "|---|---|---|---|---|"]
    for method in METHODS:
        kind = "structured" if method.structured else "unstructured (masks)"
        options = ", ".join(f"`{flags.get(name, name)}`" for name in method.options) or "—"
        lines.append(f"| `{method.name}` | {kind} | {method.density_of} | {_cell(method.summary)} | {options} |")
    return "\n".join(lines) + "\n"


def recipes() -> str:
    """The recipe records (``prune.recipes.RECIPES``)."""
    from tsprune.prune.recipes import RECIPES

    lines = ["| recipe | method | schedule | distillation weight | fine-tuning epochs | what it does |",
             "|---|---|---|---|---|---|"]
    for recipe in RECIPES:
        lines.append(f"| `{recipe.name}` | `{recipe.method}` | {recipe.schedule} | {recipe.distill:g} | "
                     f"{recipe.epochs} | {_cell(recipe.summary)} |")
    return "\n".join(lines) + "\n"


def presets() -> str:
    """The built-in sweep specs (``sweep.presets.PRESETS``) with their descriptions."""
    from tsprune.sweep.presets import PRESETS

    lines = ["| preset | what it runs |", "|---|---|"]
    for name, raw in PRESETS.items():
        lines.append(f"| `{name}` | {_cell(raw.get('description', ''))} |")
    return "\n".join(lines) + "\n"


def api() -> str:
    """One mkdocstrings directive per public name of ``tsprune`` (``tsprune._WHERE``), grouped by module."""
    import tsprune

    where: dict[str, str] = tsprune._WHERE
    lines: list[str] = []
    for module in dict.fromkeys(where.values()):
        names = [name for name, home in where.items() if home == module]
        lines += [f"## `{module}`", "", *[f"::: {module}.{name}\n" for name in names]]
    return "\n".join(lines) + "\n"
