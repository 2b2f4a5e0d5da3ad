"""`make demo`: the main job in miniature on built-in data — the `paper-mini` sweep, then its report."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from tsprune.report import build_report
from tsprune.sweep import load_spec, run_sweep
from tsprune.sweep.store import load_results


def run_demo(out: Path, workers: int = 2, threads: int | None = None, progress: bool = True,
             console: Console | None = None) -> Path:
    """Run (or resume) ``tsprune sweep run paper-mini --dir OUT/sweep`` and write ``OUT/report/report.md``.

    Two workers by default: on a small machine one process per core beats one process with two threads (the
    runs are small, and intra-op threads mostly wait on each other).
    """
    console = console or Console()
    sweep_dir = Path(out) / "sweep"
    outcome = run_sweep(load_spec("paper-mini"), sweep_dir, executor="local", workers=workers, threads=threads,
                        progress=progress, console=console)
    console.print(f"sweep: {outcome.done} run(s) done, {outcome.failed} failed, {outcome.skipped} already recorded, "
                  f"in {outcome.seconds:.0f}s", highlight=False)
    return build_report(load_results(sweep_dir), Path(out) / "report", title="tsprune demo: the paper-mini sweep")
