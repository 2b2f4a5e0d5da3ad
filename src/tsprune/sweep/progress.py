"""Sweep progress: a live bar with done/failed/running counts and an ETA, plus the runs in flight; or, without a
terminal (``--no-progress``), one log line per finished run."""

from __future__ import annotations

import time
from typing import Any, Self

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from tsprune.sweep.plan import DenseRun, PruneRun

SHOWN_RUNNING = 6  # runs listed under the bar


class SweepProgress:
    """Call :meth:`started` when a run is handed to a worker and :meth:`finished` with its record."""

    def __init__(self, total: int, skipped: int, enabled: bool, console: Console | None = None,
                 in_flight: str = "running") -> None:
        self.total, self.skipped, self.enabled = total, skipped, enabled
        self.console = console or Console(stderr=True)
        self.done = self.failed = 0
        self.in_flight = in_flight  # "running", or "submitted" where the executor cannot tell
        self.running: dict[str, str] = {}
        self.started_at = time.perf_counter()
        self._bar = Progress(
            TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[green]{task.fields[done]} done[/] [red]{task.fields[failed]} failed[/] "
                       f"[yellow]{{task.fields[running]}} {in_flight}[/]"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=self.console)
        self._task = self._bar.add_task("sweep", total=total, done=0, failed=0, running=0)
        self._live = Live(self, console=self.console, refresh_per_second=4, transient=False) if enabled else None

    def __enter__(self) -> Self:
        if self._live is not None:
            self._live.start()
        elif self.skipped:
            self.console.print(f"{self.skipped} run(s) already recorded: skipped", highlight=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def __rich__(self) -> RenderableType:
        lines = [f"  [dim]{self.in_flight}[/] {label}" for label in list(self.running.values())[:SHOWN_RUNNING]]
        if len(self.running) > SHOWN_RUNNING:
            lines.append(f"  [dim]... and {len(self.running) - SHOWN_RUNNING} more[/]")
        return Group(self._bar, *(Text.from_markup(line) for line in lines))

    def started(self, run: DenseRun | PruneRun) -> None:
        self.running[run.run_id] = f"{run.labels.describe()} [dim]({run.run_id})[/]"
        self._update()

    def finished(self, record: dict[str, Any], label: str) -> None:
        self.running.pop(record["run_id"], None)
        ok = record["status"] == "done"
        self.done += ok
        self.failed += not ok
        self._bar.advance(self._task)
        self._update()
        if self._live is None:
            count = self.done + self.failed
            status = "done  " if ok else "FAILED"
            detail = f"{record['wall_seconds']:.1f}s" if ok else record.get("error") or ""
            self.console.print(f"[{count:>{len(str(self.total))}}/{self.total}] {status} {label} ({record['run_id']}) "
                               f"{detail}", highlight=False, markup=False, soft_wrap=True)
        elif not ok:
            self.console.print(f"[red]failed[/] {label}: {record.get('error')}", highlight=False)

    def _update(self) -> None:
        self._bar.update(self._task, done=self.done, failed=self.failed, running=len(self.running))
