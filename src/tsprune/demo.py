"""`make demo`: the study in miniature, with true numbers, in two parts.

* **Accuracy**: the ``paper-mini`` sweep. Its five dense models (d_model 64 / d_ff 256, trained with the study's
  protocol until early stopping) ship with the package as checkpoints that tsprune trained
  (``tsprune/data/demo/<model>/``); the demo copies them into its sweep directory, where the sweep finds them
  finished, and then prunes, fine-tunes and evaluates them. ``retrain=True`` trains them from scratch instead, and
  ``save_checkpoints`` writes the dense runs out in the shipped layout: ``tsprune demo --retrain
  --save-checkpoints src/tsprune/data/demo`` is the command that produced the shipped files, bit for bit on the
  same machine (one thread per run, seeded).
* **Speed**: :func:`tsprune.speed.speed_comparison` at full default size, where kernels do real work.

The report opens with what it is: demo scale, what each part shows, and where the full-scale study's report is.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
from rich.console import Console

from tsprune.config import RunConfig, read_json
from tsprune.errors import TsPruneError
from tsprune.models.registry import study_models
from tsprune.report import build_report
from tsprune.report.findings import SEED_SPREAD
from tsprune.sweep import load_spec, plan_sweep, run_sweep
from tsprune.sweep.plan import DenseRun
from tsprune.sweep.store import RUN_FILES, SweepStore, run_dir_complete
from tsprune.sweep.results import load_results, read_results, write_table

SPEC = "paper-mini"
SHIPPED = Path(__file__).resolve().parent / "data" / "demo"
STUDY_REPORT = Path("benchmarks") / "results" / "study-etth1" / "report" / "report.md"
SPEED_TABLE = "speed.csv"
SPEED_REPEATS = 5  # timed passes per model and batch size (in alternation); full-size passes take up to a second


def _same_experiment(planned: RunConfig, saved: RunConfig) -> bool:
    """Whether a saved (data-bound) run config is the planned one: all but the fields the data fills in."""
    from tsprune.config import DATA_BOUND_FIELDS

    bound = {name: getattr(saved.model, name) for name in DATA_BOUND_FIELDS}
    import dataclasses

    return (planned.data == saved.data and planned.train == saved.train
            and dataclasses.replace(planned.model, **bound) == saved.model)


def seed_checkpoints(runs: list[DenseRun], store: SweepStore, source: Path = SHIPPED) -> int:
    """Copy the shipped dense runs into ``store`` under the ids the plan gives them; returns how many were copied.

    A shipped run whose configuration is not the planned one is an error (the package and the preset disagree).
    """
    copied = 0
    for run in runs:
        folder = source / run.labels.model
        if not run_dir_complete(folder):
            raise TsPruneError(f"no shipped checkpoint for {run.labels.model} in {source}: reinstall tsprune, or "
                               "run `tsprune demo --retrain` to train the demo's models")
        saved = RunConfig.from_dict({k: v for k, v in read_json(folder / "config.json").items()
                                     if k in ("data", "model", "train")})
        if not _same_experiment(run.config, saved):
            raise TsPruneError(f"the shipped {run.labels.model} checkpoint was trained with another configuration "
                               "than the demo plans: run `tsprune demo --retrain`")
        target = store.run_dir(run.run_id)
        if run_dir_complete(target):
            continue
        target.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            shutil.copyfile(folder / name, target / name)
        copied += 1
    return copied


def save_checkpoints(runs: list[DenseRun], store: SweepStore, target: Path) -> None:
    """Write the sweep's dense runs as ``target/<model>/`` (the shipped layout)."""
    for run in runs:
        folder = store.run_dir(run.run_id)
        if not run_dir_complete(folder):
            raise TsPruneError(f"{run.labels.model}'s dense run did not finish; nothing saved for it")
        out = target / run.labels.model
        out.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            shutil.copyfile(folder / name, out / name)


def preface(retrained: bool, study_report: Path | None) -> str:
    source = ("trained now by this demo (`--retrain`)" if retrained else
              "checkpoints tsprune trained and ships with the package; `tsprune demo --retrain` trains them again")
    study = (f"The full study (default sizes, magnitude down to 1.2%, fine-tuning, model size x data) is in "
             f"`{study_report}`." if study_report is not None else
             "The full-scale study is the `study-etth1` sweep (`tsprune sweep plan study-etth1`); its committed "
             "report lives in the repository under `benchmarks/results/study-etth1/`.")
    return f"""**What this is: the study in miniature, ETTh1 with horizon 96, in two parts.**

**Accuracy** (every MSE below): the five forecasters at d_model 64 / d_ff 256 (the study's are 512 / 2048;
Crossformer 256 / 512), trained with the study's protocol until early stopping or their 10-epoch limit ({source}),
then global magnitude pruning at 0.8^0..10 (the study's schedule), DepGraph at 0.8, 0.512 and 0.328, and one
epoch of fine-tuning with masks kept for magnitude 0.328. One seed (2021), so no model's seed spread is measured
here: MSE differences below {SEED_SPREAD} (a stand-in, from two seeds of one model) mean nothing. The study's
committed results measure each model's spread over three seeds.

**Speed** (the speed figure, the speed table and the time claims): the five models at full default size with
untrained weights (timing does not depend on the values), masked magnitude 0.107, the same model on tsprune's
sparse engine, and DepGraph at 0.25, timed against dense at batch 1 and 32 with 2 threads, in alternation.

{study}"""


def run_demo(out: Path, workers: int = 2, retrain: bool = False, save_to: Path | None = None, speed: bool = True,
             progress: bool = True, console: Console | None = None) -> Path:
    """Run (or resume) the demo into ``out`` and write ``out/report/report.md``; see the module doc."""
    console = console or Console()
    out = Path(out)
    spec = load_spec(SPEC)
    dense_runs = plan_sweep(spec).dense
    store = SweepStore(out / "sweep")
    store.prepare()
    if not retrain:
        copied = seed_checkpoints(dense_runs, store)
        console.print(f"accuracy part: {copied} shipped dense checkpoint(s) placed in {store.root}", highlight=False)
    outcome = run_sweep(spec, store.root, executor="local", workers=workers, threads=1, progress=progress,
                        console=console)
    console.print(f"accuracy part: {outcome.done} run(s) done, {outcome.failed} failed, {outcome.skipped} already "
                  f"recorded, in {outcome.seconds:.0f}s", highlight=False)
    if save_to is not None:
        save_checkpoints(dense_runs, store, Path(save_to))
        console.print(f"dense checkpoints written to {save_to}", highlight=False)
    timing = None
    if speed:
        timing = _speed_part(out / SPEED_TABLE, console)
    study = STUDY_REPORT if STUDY_REPORT.is_file() else None
    return build_report(load_results(store.root), out / "report", title="tsprune demo: the study in miniature",
                        preface=preface(retrain, study), speed=timing)


def _speed_part(path: Path, console: Console) -> pd.DataFrame:
    """The full-size timings, taken once: a rerun of the demo reuses ``path``."""
    from tsprune.speed import speed_comparison

    if path.is_file():
        console.print(f"speed part: reusing {path} (delete it to time again)", highlight=False)
        return read_results(path)
    console.print("speed part: full-size models, timed in alternation (2 threads)", highlight=False)
    frame = speed_comparison(study_models(), threads=2, repeats=SPEED_REPEATS,
                             say=lambda line: console.print(line, highlight=False))
    write_table(frame, path)
    return frame
