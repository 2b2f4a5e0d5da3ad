"""Commands on many runs: the demo, sweeps, their results and reports."""


from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from tsprune.errors import TsPruneError
from tsprune.sweep.failures import ENVIRONMENTAL_ATTEMPTS
from tsprune.sweep.presets import PRESETS

from tsprune.cli.app import app, console, err_console, user_errors


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option(help="Directory for the sweep, the timings and the report.")] = Path("demo"),
    workers: Annotated[int, typer.Option(help="Concurrent runs of the accuracy part (one thread each).")] = 2,
    retrain: Annotated[bool, typer.Option(help="Train the five dense models from scratch instead of using the "
                                               "shipped checkpoints.")] = False,
    save_checkpoints: Annotated[Optional[Path], typer.Option(help="Write the dense runs to this folder in the "
                                                                  "shipped layout (with --retrain: the command "
                                                                  "that makes the shipped checkpoints).")] = None,
    speed: Annotated[bool, typer.Option(help="Run the speed part (full-size models timed).")] = True,
    progress: Annotated[bool, typer.Option(help="Live progress bar.")] = True,
) -> None:
    """The study in miniature: the paper-mini sweep on trained small models, full-size timings, and the report."""
    from tsprune.demo import run_demo

    if workers < 1:
        raise TsPruneError(f"--workers must be at least 1, got {workers}")
    report = run_demo(Path(out), workers=workers, retrain=retrain, save_to=save_checkpoints, speed=speed,
                      progress=progress, console=err_console)
    console.print(f"[green]report written:[/green] {report} (and {report.with_suffix('.html')})")


@app.command()
@user_errors
def report(
    sweep_dirs: Annotated[list[Path], typer.Argument(
        help="Sweep directories written by `tsprune sweep run`, or results tables (.parquet/.csv) exported from "
             "them; several are read together (a study and its extra seeds, the small models), each run once.")],
    out: Annotated[Path, typer.Option(help="Report directory (report.md, report.html, figures/).")] = Path("report"),
    title: Annotated[str, typer.Option()] = "tsprune sweep report",
    readme: Annotated[Optional[Path], typer.Option(help="Also write the findings into this markdown file's findings "
                                                        "block (the study's: docs/results/study-etth1.md).")] = None,
    costs: Annotated[Optional[Path], typer.Option(help="The frontier's costs table (CSV) written by "
                                                       "benchmarks/study/frontier_pass.py: latency of every point.")]
        = None,
) -> None:
    """Write the study's figures and tables for a sweep: markdown, self-contained HTML, PNG and SVG."""
    import pandas as pd

    from tsprune.report import build_report
    from tsprune.report.render import readme_block, update_readme
    from tsprune.sweep.results import read_results

    frames = [read_results(sweep_dir, warn=note) for sweep_dir in sweep_dirs]
    frame = pd.concat([f for f in frames if not f.empty], ignore_index=True) if any(not f.empty for f in frames) \
        else frames[0]
    if frame.empty:
        raise TsPruneError(f"{' '.join(map(str, sweep_dirs))} hold(s) no runs yet: run `tsprune sweep run SPEC "
                           "--dir DIR` first")
    frame = frame.drop_duplicates("run_id", keep="first")  # a run two tables share counts once
    cost_table = None
    if costs is not None:
        if not costs.is_file():
            raise TsPruneError(f"{costs} not found: give the CSV benchmarks/study/frontier_pass.py wrote",
                               options=("costs",))
        cost_table = pd.read_csv(costs)
    if readme is not None:
        readme_block(readme)  # before the figures: a wrong file fails at once
    path = build_report(frame, out, title=title, costs=cost_table)
    console.print(f"[green]report written:[/green] {path} (and {path.with_suffix('.html')})")
    if readme is not None:
        update_readme(readme, out)
        console.print(f"findings written into {readme}", highlight=False)


sweep_app = typer.Typer(no_args_is_help=True, help="Plan and run sweeps (models x datasets x horizons x methods x "
                        "densities x fine-tuning x seeds, dataset-size and model-size studies).")
app.add_typer(sweep_app, name="sweep")
SPEC_HELP = f"A sweep spec: a YAML file, or a preset ({', '.join(PRESETS)})."
SWEEP_INCOMPLETE = 3  # `sweep run`: some run of the spec is failed (or unrecorded) at the end
CHECK_PROBLEMS = 1  # `sweep check`: the store has problems


def note(line: str) -> None:
    """A one-line note on stderr (records a reader skipped)."""
    err_console.print(f"[yellow]note:[/yellow] {line}", highlight=False, soft_wrap=True)


@sweep_app.command("plan")
@user_errors
def sweep_plan(
    spec: Annotated[str, typer.Argument(help=SPEC_HELP)],
    executor: Annotated[str, typer.Option(help="local, or ray: also show the cluster and estimate its wall time.")]
    = "local",
    address: Annotated[Optional[str], typer.Option(help="Ray: the cluster to connect to and show (auto or "
                                                        "HOST:PORT; default: this machine as a local runtime).")]
    = None,
    workers: Annotated[Optional[int], typer.Option(help="Ray: concurrent runs, as for `sweep run`.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="Ray: threads (CPUs) per run, as for `sweep run`.")] = None,
    gpus_per_run: Annotated[float, typer.Option(help="Ray: GPUs each CUDA run asks for, as for `sweep run`.")]
    = 0.0,
) -> None:
    """Count the dense trainings and pruning runs of a sweep and estimate its cost (with --executor ray: on the
    cluster)."""
    from tsprune.sweep import load_spec, plan_sweep
    from tsprune.sweep.cost import estimate
    from tsprune.sweep.tables import plan_lines, plan_table

    if executor not in ("local", "ray"):
        raise TsPruneError(f"unknown executor {executor!r}: use one of local, ray")
    if executor == "local" and (address is not None or gpus_per_run):
        raise TsPruneError("--address and --gpus-per-run need --executor ray")
    if executor == "ray" and address is not None:
        from tsprune.sweep.ray_cluster import check_reachable

        check_reachable(address)  # before planning: a large grid takes seconds to plan
    loaded = load_spec(spec)
    planned = plan_sweep(loaded)
    for line in plan_lines(planned, estimate(planned), spec):
        console.print(line, highlight=False, soft_wrap=True)
    if executor == "ray":
        from tsprune.sweep.ray_cluster import cluster_plan_lines

        for line in cluster_plan_lines(planned, address, workers=workers, threads=threads, gpus_per_run=gpus_per_run):
            console.print(line, highlight=False, soft_wrap=True)
    console.print(plan_table(planned))


@sweep_app.command("run")
@user_errors
def sweep_run(
    spec: Annotated[str, typer.Argument(help=SPEC_HELP)],
    sweep_dir: Annotated[Path, typer.Option("--dir", help="Sweep directory (records, runs, results.parquet).")],
    executor: Annotated[str, typer.Option(help="local or ray.")] = "local",
    workers: Annotated[Optional[int], typer.Option(help="Concurrent runs (local default 1; ray default: one per "
                                                        "CPU); each gets cores // workers threads unless --threads.")]
    = None,
    address: Annotated[Optional[str], typer.Option(help="Ray: auto or ray://HOST:PORT (default: a local Ray "
                                                        "runtime).")] = None,
    retry_failed: Annotated[bool, typer.Option(help="Run every failed run again, deterministic ones included "
                                                    "(environmental failures are retried without it, up to "
                                                    f"{ENVIRONMENTAL_ATTEMPTS} attempts).")] = False,
    gpus_per_run: Annotated[float, typer.Option(help="Ray: GPUs each CUDA run asks for (1 when unset with device "
                                                     "cuda; a fraction shares one GPU among runs).")] = 0.0,
    threads: Annotated[Optional[int], typer.Option(help="Torch threads per run (default: cores // workers).")]
    = None,
    progress: Annotated[bool, typer.Option(help="Live progress bar (off: one log line per run).")] = True,
    reuse_dense: Annotated[Optional[Path], typer.Option(help="Another sweep directory: its finished dense runs of "
                                                              "the same configuration are used, not retrained.")]
    = None,
    rebuild: Annotated[bool, typer.Option(help="Run again the finished runs whose weights the sweep keeps but --dir "
                                               "lacks (records moved to a new machine) and no measuring pass has "
                                               "timed yet, for that pass.")]
    = False,
    rebuild_dense: Annotated[bool, typer.Option(help="Like --rebuild, but only the dense runs those need: "
                                                     "`sweep measure --reprune` prunes them again for timing.")]
    = False,
    defer_timing: Annotated[bool, typer.Option(help="Take no latency timings in the prune runs; `sweep measure` "
                                                    "times the kept models later (a sweep beside other work).")]
    = False,
) -> None:
    """Run a sweep, or resume it: runs already recorded in --dir are skipped.

    A failed run is recorded with its class: deterministic (the run itself: divergence, a structured target out of
    reach, an invalid configuration), kept until --retry-failed; or environmental (the machine: out of disk or
    memory, an I/O error, a killed worker, a lost Ray node), retried by running the same command again, up to
    3 attempts in all (then --retry-failed). Exit status: 0 when every run of the spec is done; 3 when some run is
    failed (or could not be recorded: a full disk stops the sweep) at the end, with how many of each class; 2 for
    bad input.
    """
    if rebuild and rebuild_dense:
        raise TsPruneError("--rebuild and --rebuild-dense exclude each other: --rebuild-dense rebuilds only the "
                           "dense runs", options=("rebuild",))
    from tsprune.runtime import available_cores
    from tsprune.sweep import load_spec, run_sweep
    from tsprune.sweep.store import StoreWriteError

    loaded = load_spec(spec)
    note = loaded.measure.overrides_budget(threads, workers, available_cores()) if executor == "local" else None
    if note:
        err_console.print(note, highlight=False, markup=False)
    try:
        outcome = run_sweep(loaded, sweep_dir, executor=executor, workers=workers, address=address,
                            retry_failed=retry_failed, gpus_per_run=gpus_per_run, threads=threads, progress=progress,
                            console=err_console, reuse_dense=reuse_dense, defer_timing=defer_timing,
                            rebuild="dense" if rebuild_dense else rebuild)
    except StoreWriteError as exc:  # before any run: the directory cannot be written at all
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(SWEEP_INCOMPLETE) from None
    for line in outcome.summary_lines():
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    if outcome.stopped:
        err_console.print(f"[red]error:[/red] {outcome.stopped}", highlight=False, soft_wrap=True)
    if not outcome.complete:
        raise typer.Exit(SWEEP_INCOMPLETE)


@sweep_app.command("check")
@user_errors
def sweep_check(
    sweep_dir: Annotated[Path, typer.Argument(help="A sweep directory written by `tsprune sweep run`.")],
    spec: Annotated[Optional[str], typer.Option(help="Check the records against this spec's plan (a YAML file or a "
                                                     "preset) instead of the directory's spec.json.")] = None,
) -> None:
    """Verify a sweep directory without changing it: every record parses and is a run of the spec's plan, kept run
    directories hold the weights their record hashed, no leftovers of interrupted writes remain, and
    results.parquet equals the records. One line per problem, with what to do; exit status 1 if there are any."""
    from tsprune.sweep import load_spec
    from tsprune.sweep.check import check_store

    report = check_store(sweep_dir, load_spec(spec) if spec is not None else None)
    for finding in report.problems:
        console.print(f"problem: {finding.line()}", highlight=False, soft_wrap=True, markup=False)
    for line in report.notes:
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    if report.ok:
        console.print(f"{sweep_dir}: no problems found", highlight=False, soft_wrap=True)
        return
    console.print(f"{sweep_dir}: {len(report.problems)} problem(s)", highlight=False, soft_wrap=True)
    raise typer.Exit(CHECK_PROBLEMS)


@sweep_app.command("measure")
@user_errors
def sweep_measure(
    sweep_dir: Annotated[Path, typer.Option("--dir", help="Sweep directory written by `tsprune sweep run`.")],
    threads: Annotated[Optional[int], typer.Option(help="Threads (default: each run's own).")] = None,
    repeats: Annotated[Optional[int], typer.Option(help="Timed passes (default: each run's own).")] = None,
    models: Annotated[Optional[str], typer.Option(help="Only these models (comma-separated).")] = None,
    redo: Annotated[bool, typer.Option(help="Time again runs an earlier pass timed with these settings.")] = False,
    recompile: Annotated[bool, typer.Option(help="Compile sparse-engine runs again (kernels chosen by timing here, "
                                                 "with this tsprune) before timing them.")] = False,
    reprune: Annotated[bool, typer.Option(help="Time runs whose weights are gone on their pruning made again from "
                                               "the dense run (fine-tuned runs: before fine-tuning, same mask).")]
    = False,
) -> None:
    """The measuring pass: time the kept prune runs again, in alternation with their dense run, on a quiet machine."""
    from tsprune.sweep.remeasure import remeasure

    chosen = [name.strip() for name in models.split(",") if name.strip()] if models else None
    outcome = remeasure(sweep_dir, threads=threads, repeats=repeats, redo=redo, models=chosen,
                        say=lambda line: err_console.print(line, highlight=False, markup=False), recompile=recompile,
                        reprune=reprune)
    repruned = f" ({len(outcome.repruned)} on their pruning made again)" if outcome.repruned else ""
    mismatched = (f", {len(outcome.mismatched)} not timed: pruned again, they differ from their record"
                  if outcome.mismatched else "")
    console.print(f"{len(outcome.measured)} run(s) timed{repruned}, {len(outcome.current)} already timed by a pass, "
                  f"{len(outcome.no_weights)} without weights here (keep their in-sweep timing){mismatched}; "
                  f"results: {outcome.results}", highlight=False, soft_wrap=True)
    if outcome.mismatched:
        raise typer.Exit(1)


@app.command()
@user_errors
def results(
    sweep_dir: Annotated[Path, typer.Argument(help="A sweep directory written by `tsprune sweep run`.")],
    sql: Annotated[Optional[str], typer.Option(help="DuckDB SQL over a view named `runs`.")] = None,
    export: Annotated[Optional[Path], typer.Option(help="Write the table to a .parquet or .csv file.")] = None,
) -> None:
    """Summarise a sweep's results, query them with SQL, or export them."""
    from tsprune.sweep.results import export as export_results
    from tsprune.sweep.results import load_results, query
    from tsprune.sweep.tables import frame_text, summary_table

    if export is not None:
        console.print(f"wrote {export_results(sweep_dir, export, warn=note)}", highlight=False, soft_wrap=True)
    if sql is not None:
        warn = note if export is None else None  # said once
        console.print(frame_text(query(sweep_dir, sql, warn=warn)), highlight=False, soft_wrap=True, markup=False)
    elif export is None:
        frame = load_results(sweep_dir, warn=note)
        if frame.empty:
            raise TsPruneError(f"{sweep_dir} has no records yet: run `tsprune sweep run SPEC --dir {sweep_dir}`")
        wide = console if console.is_terminal else Console(width=160)  # logs and pipes get the whole table
        wide.print(summary_table(frame, title=f"{sweep_dir}: {len(frame)} runs"))


