"""Reproduce the published dense results: full default trainings compared with the published test MSE/MAE.

    python benchmarks/reproduce.py [--models Autoformer,FEDformer] [--dataset ETTh1] [--pred-len 96]
        [--seeds 2021,2022] [--variant prob_layout=paper] [--runs runs/reproduce] [--threads 2] [--no-train]
        [--json out.json] [--record results.json]

Each model is trained with its defaults and the study's protocol (Adam, batch 32, lr 1e-4 halved per epoch, up to
10 epochs, early stopping with patience 3) into ``RUNS/<model>``, exactly as ``tsprune train`` would; seeds other
than the default (2021) go to ``RUNS/<model>_seed<S>``. ``--variant KEY=VALUE[,KEY=VALUE]`` trains a model with
those options away from its defaults (Informer's ``prob_layout=paper``) into ``RUNS/<model>[<variant>]...``; its
records say ``variant`` and are kept and averaged apart from the defaults'. A run directory that is complete is
only read; an interrupted one resumes after its last finished epoch, so the script can be stopped and restarted at
will (a full run takes tens of minutes to hours on a 2-core CPU). ``--no-train`` only reports: unfinished runs
show their epochs so far.

The table gives test MSE/MAE over all test windows, the published values (``published_mse.csv``), the ratio, and
whether it lies within the tolerance (15%; 20% for Informer, whose published value varies a lot between runs, and
for Crossformer, published with a larger configuration). With several seeds, each model also gets a row with the
mean and standard deviation over its finished seeds, and the mean is what is compared. Measures only; asserts
nothing. ``--record FILE`` merges the finished protocol runs into a results file kept in the repository
(``benchmarks/results/``), one entry per model and seed, each with the code commit and machine it ran on, plus the
seed means of everything recorded (per model and variant).
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from rich.console import Console

from tsprune import api
from tsprune import checkpoint
from tsprune.checkpoint import COUNTERS
from tsprune.config import DATA_BOUND_FIELDS, TrainConfig, read_json
from tsprune.errors import TsPruneError
from tsprune.runtime import cpu_name
from tsprune.models.registry import model_names
from tsprune.report.render import markdown_table
from tsprune.run import CONFIG, METRICS

PUBLISHED = Path(__file__).with_name("published_mse.csv")
TOLERANCE = {"Informer": 0.20, "Crossformer": 0.20}
DEFAULT_TOLERANCE = 0.15
DEFAULT_SEED = TrainConfig().seed  # its runs keep the plain RUNS/<model> directory
COLUMNS = ("model", "variant", "seed", "status", "mse", "mae", "mse_std", "published_mse", "published_mae", "mse_ratio",
           "tolerance", "within", "epochs_run", "best_epoch", "best_val_mse", "train_minutes")

cli = typer.Typer(add_completion=False)
console = Console(stderr=True)


def published(dataset: str, pred_len: int, path: Path = PUBLISHED) -> dict[str, dict[str, float]]:
    """Published ``{model: {"mse", "mae"}}`` for one dataset and horizon."""
    with path.open() as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return {row["model"]: {"mse": float(row["mse"]), "mae": float(row["mae"])} for row in rows
                if row["dataset"] == dataset and int(row["pred_len"]) == pred_len}


def unfinished_status(run_dir: Path) -> dict[str, Any]:
    """What an interrupted run's saved training state says (nothing when it never finished an epoch)."""
    counters_path = run_dir / checkpoint.TRAINING_STATE / COUNTERS
    if not counters_path.is_file():
        return {"status": "not run"}
    counters = read_json(counters_path)
    return {"status": f"unfinished, after epoch {counters['epoch']}", "epochs_run": counters["epoch"],
            "best_epoch": counters["best_epoch"], "best_val_mse": counters["best_val"],
            "train_minutes": counters["seconds"] / 60, "history": counters["history"]}


def protocol_differences(stored: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """The ``section.key`` settings in which a run's ``config.json`` departs from the expected configuration.

    A setting the file lacks was written before the setting existed and reads as its default, as when the run is
    loaded."""
    skip = {"model": DATA_BOUND_FIELDS, "train": checkpoint.EXECUTION_SETTINGS, "data": ()}
    defaults = api.make_config(expected["model"]["name"]).to_dict()
    return [f"{section}.{key}" for section, ignored in skip.items() for key, value in expected[section].items()
            if key not in ignored and stored.get(section, {}).get(key, defaults[section][key]) != value]


def parse_variant(text: str) -> dict[str, Any]:
    """``prob_layout=paper,factor=5`` as model options (values read as YAML scalars: ints, floats, words); the
    empty string is the defaults."""
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise typer.BadParameter(f"--variant takes KEY=VALUE[,KEY=VALUE], got {item!r}")
        options[key.strip()] = yaml.safe_load(value.strip())
    return options


def variant_name(options: dict[str, Any]) -> str:
    """The variant's name in records and directories, ``key=value`` sorted by key (``""`` for the defaults)."""
    return ",".join(f"{key}={value}" for key, value in sorted(options.items()))


def row(model: str, run_dir: Path, reference: dict[str, float] | None,
        expected: dict[str, Any] | None = None, variant: str = "") -> dict[str, Any]:
    """One table row: the finished run's metrics against the published values, or an unfinished run's state.

    A finished run whose configuration is not ``expected`` (another protocol, a quick run) is flagged, not compared.
    ``variant``: the model options ``expected`` sets away from the defaults (recorded with the row).
    """
    shown = {"published_mse": reference["mse"], "published_mae": reference["mae"]} if reference else {}
    head: dict[str, Any] = {"model": model, **({"variant": variant} if variant else {})}
    if expected is not None:
        head["seed"] = expected["train"]["seed"]
    if not (run_dir / METRICS).is_file():
        return {**head, **unfinished_status(run_dir), **shown}
    metrics = read_json(run_dir / METRICS)
    stored = read_json(run_dir / CONFIG)
    head["seed"] = stored["train"]["seed"]
    differences = protocol_differences(stored, expected) if expected is not None else []
    if differences:
        return {**head, "status": f"not the protocol: {', '.join(differences)}", "mse": metrics["mse"],
                "mae": metrics["mae"], "epochs_run": metrics["epochs_run"], **shown}
    record: dict[str, Any] = {
        **head, "status": "stopped early" if metrics["stopped_early"] else "all epochs",
        "mse": metrics["mse"], "mae": metrics["mae"], "epochs_run": metrics["epochs_run"],
        "best_epoch": metrics["best_epoch"], "best_val_mse": metrics["best_val_mse"],
        "train_minutes": metrics["train_seconds"] / 60, "params": metrics["params"],
        "history": metrics["history"], "environment": metrics["environment"]}
    return {**record, **comparison(model, metrics["mse"], reference)}


def comparison(model: str, mse: float, reference: dict[str, float] | None) -> dict[str, Any]:
    """The published values, the MSE ratio and whether it lies within the model's tolerance (nothing without a
    published value)."""
    if reference is None:
        return {}
    tolerance = TOLERANCE.get(model, DEFAULT_TOLERANCE)
    ratio = mse / reference["mse"]
    return {"published_mse": reference["mse"], "published_mae": reference["mae"], "mse_ratio": ratio,
            "tolerance": tolerance, "within": "yes" if abs(ratio - 1) <= tolerance else "no"}


FINISHED = ("stopped early", "all epochs")


def seed_of(record: dict[str, Any]) -> int:
    """A record's seed; entries recorded before seeds were stored ran the default seed."""
    return record.get("seed", DEFAULT_SEED)


def key_of(record: dict[str, Any]) -> tuple[str, str, int]:
    """What one entry of a results file stands for: model, variant (``""``: the defaults) and seed."""
    return record["model"], record.get("variant", ""), seed_of(record)


def seed_means(records: list[dict[str, Any]], references: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per model and variant with at least two finished protocol runs (distinct seeds): mean test MSE/MAE,
    the sample standard deviation of the MSE and the mean's comparison with the published value."""
    by_model: dict[tuple[str, str], dict[Any, dict[str, Any]]] = {}
    for record in records:
        if record.get("status") in FINISHED:
            model, variant, seed = key_of(record)
            by_model.setdefault((model, variant), {})[seed] = record
    means = []
    for (model, variant), runs in by_model.items():
        if len(runs) < 2:
            continue
        mse = [run["mse"] for run in runs.values()]
        mean_mse = statistics.fmean(mse)
        means.append({"model": model, **({"variant": variant} if variant else {}),
                      "seed": ",".join(str(seed) for seed in runs),
                      "status": f"mean of {len(runs)} seeds", "mse": mean_mse,
                      "mae": statistics.fmean(run["mae"] for run in runs.values()), "mse_std": statistics.stdev(mse),
                      "epochs_run": statistics.fmean(run["epochs_run"] for run in runs.values()),
                      **comparison(model, mean_mse, references.get(model))})
    return means


def run_directory(runs: Path, model: str, seed: int, default_seed: int, variant: str = "") -> Path:
    """``RUNS/<model>`` for the protocol's default seed, ``RUNS/<model>_seed<S>`` for any other; a variant adds
    ``[<variant>]`` after the model (``RUNS/Informer[prob_layout=paper]_seed2022``)."""
    name = f"{model}[{variant}]" if variant else model
    return runs / (name if seed == default_seed else f"{name}_seed{seed}")


def machine_description() -> str:
    """The CPU model and core count, e.g. ``AMD EPYC 7B13, 2 cores``."""
    return f"{cpu_name()}, {os.cpu_count()} cores"


def current_commit() -> str | None:
    """The git commit of the checkout this script lives in, if it is one."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def record_runs(path: Path, records: list[dict[str, Any]], dataset: str, pred_len: int, code_commit: str | None,
                machine: str, references: dict[str, dict[str, float]] | None = None) -> list[str]:
    """Merge the finished protocol runs of ``records`` into the results file ``path`` (a newer run of a model and
    seed replaces the older one; other entries stay) and recompute the seed means of all entries; returns the
    ``model`` (default seed) or ``model/seed`` names written (``model[variant]`` for a variant)."""
    stored = read_json(path) if path.is_file() else {}
    runs = {key_of(run): {"model": run["model"], "seed": seed_of(run), **run} for run in stored.get("runs", [])}
    finished = [record for record in records if record["status"] in FINISHED]
    for record in finished:
        runs[key_of(record)] = {**record, "code_commit": code_commit, "machine": machine,
                                                  "recorded": date.today().isoformat()}
    ordered = [runs[k] for k in sorted(runs)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "what": f"full default runs on {dataset}/{pred_len} with the study's protocol, one per model and seed "
                "(tsprune train --model M --dataset ... --pred-len ... --seed S), recorded by "
                "benchmarks/reproduce.py --record",
        "dataset": dataset, "pred_len": pred_len, "runs": ordered,
        "seed_means": seed_means(ordered, references or {})}, indent=2) + "\n")
    names = [f"{model}[{variant}]" if variant else model for model, variant, _ in map(key_of, finished)]
    return [name if seed_of(record) == DEFAULT_SEED else f"{name}/{seed_of(record)}"
            for name, record in zip(names, finished)]


@cli.command()
def main(
    models: Annotated[str, typer.Option(help="Comma-separated model names.")] = ",".join(model_names()),
    dataset: Annotated[str, typer.Option(help="Built-in dataset.")] = "ETTh1",
    pred_len: Annotated[int, typer.Option()] = 96,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds; several give a mean row per model.")] = str(
        DEFAULT_SEED),
    variant: Annotated[str, typer.Option(help="Model options away from the defaults, KEY=VALUE[,KEY=VALUE] "
                                              "(e.g. prob_layout=paper); recorded apart from the defaults.")] = "",
    runs: Annotated[Path, typer.Option(help="Folder of the run directories (one per model).")] = Path(
        "runs/reproduce"),
    train: Annotated[bool, typer.Option(help="Train (or resume) unfinished runs; off: only report.")] = True,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch.")] = None,
    device: Annotated[str, typer.Option()] = "auto",
    epochs: Annotated[Optional[int], typer.Option(help="Override the protocol's 10 (quick checks only).")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Cap steps per epoch (quick checks only).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json")] = None,
    record: Annotated[Optional[Path], typer.Option(help="Merge the finished protocol runs into this results file.")
                      ] = None,
    code_commit: Annotated[Optional[str], typer.Option(
        help="Commit of the code that trained the runs, for --record (default: this checkout's HEAD).")] = None,
    machine: Annotated[Optional[str], typer.Option(
        help="Where the runs trained, for --record (default: this machine's CPU and cores).")] = None,
) -> None:
    names = [m.strip() for m in models.split(",") if m.strip()]
    unknown = sorted(set(names) - set(model_names()))
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(model_names())}")
    try:
        seed_list = list(dict.fromkeys(int(seed) for seed in seeds.split(",") if seed.strip()))
    except ValueError:
        seed_list = []
    if not seed_list:
        raise typer.BadParameter(f"--seeds takes comma-separated integers, got {seeds!r}")
    options = parse_variant(variant)
    label = variant_name(options)
    references = published(dataset, pred_len)
    records = []
    for name in names:
        for seed in seed_list:
            run_dir = run_directory(runs, name, seed, DEFAULT_SEED, label)
            try:
                config = api.make_config(name, data={"dataset": dataset, "pred_len": pred_len},
                                         train={"seed": seed, "threads": threads, "device": device, "epochs": epochs,
                                                "max_steps": max_steps}, **options)
            except TsPruneError as exc:
                raise typer.BadParameter(f"--variant {variant}: {exc}") from None
            if train and not (run_dir / METRICS).is_file():
                console.print(f"[bold]{name}[/bold] seed {seed} on {dataset}/{pred_len} -> {run_dir}",
                              highlight=False)
                api.train(config, out=run_dir, progress=False,
                          log=lambda line, name=name: console.print(f"{name} {line}", highlight=False))
            records.append(row(name, run_dir, references.get(name), config.to_dict(), label))
    table = records + seed_means(records, references)
    print(markdown_table(table, COLUMNS, digits=3))
    if json_out is not None:
        json_out.write_text(json.dumps(table, indent=2))
    if record is not None:
        written = record_runs(record, records, dataset, pred_len, code_commit or current_commit(),
                              machine or machine_description(), references)
        console.print(f"recorded {', '.join(written) or 'no finished protocol run'} in {record}", highlight=False)


if __name__ == "__main__":
    cli()
