"""``tsprune sweep check DIR``: verify a sweep directory without changing it.

* every record parses and is a run of the spec's plan (the spec the directory's ``spec.json`` holds, or one given);
* every kept run directory's weights have the SHA-256 its record holds (records written before hashes were recorded
  are counted as having none, not as corrupt);
* no leftovers of interrupted writes (hidden temporary files and staging folders) remain;
* ``results.parquet`` holds what the records hold.

Each problem is one :class:`Finding` with what to do about it; planned runs not yet recorded and failed runs are
the sweep's state, not problems, and are reported as notes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tsprune.errors import TsPruneError
from tsprune.sweep.failures import DETERMINISTIC, ENVIRONMENTAL, ENVIRONMENTAL_ATTEMPTS, failure_of, retried_by_itself
from tsprune.sweep.plan import DenseRun, PruneRun, plan_sweep
from tsprune.sweep.spec import SweepSpec, spec_from_dict
from tsprune.sweep.store import WEIGHTS, SweepStore, file_digest, run_dir_complete
from tsprune.sweep.results import records_frame

RERUN = "will be rerun by `sweep run`"


@dataclass
class Finding:
    """One problem: where (relative to the sweep directory), what is wrong, and what to do."""

    where: str
    problem: str
    todo: str

    def line(self) -> str:
        return f"{self.where}: {self.problem}: {self.todo}"


@dataclass
class CheckReport:
    root: Path
    problems: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_store(sweep_dir: str | Path, spec: SweepSpec | None = None) -> CheckReport:
    """Check ``sweep_dir`` against ``spec`` (default: its ``spec.json``; without either, the plan is not checked)."""
    store = SweepStore(sweep_dir)
    if not store.records_dir.is_dir():
        raise TsPruneError(f"{sweep_dir} is not a sweep directory (no records/ folder): give the --dir of a "
                           "`tsprune sweep run`")
    if store.busy():
        raise TsPruneError(f"a sweep or a measuring pass is running in {sweep_dir}: check it once it has finished")
    report = CheckReport(store.root)
    records, unreadable = store.scan()
    planned = _planned(store, spec, report)
    for path, reason in unreadable.items():
        todo = RERUN if planned is None or path.stem in planned else "no run of the spec: delete it"
        report.problems.append(Finding(f"records/{path.name}", f"unreadable record, {reason}", todo))
    if planned is not None:
        _check_plan(records, planned, report)
    _check_weights(store, records, report)
    for leftover in store.leftovers():
        report.problems.append(Finding(str(leftover.relative_to(store.root)), "left by an interrupted write",
                                       "`sweep run` removes it (or delete it)"))
    _check_results(store, records, report)
    return report


def _planned(store: SweepStore, spec: SweepSpec | None, report: CheckReport) -> dict[str, DenseRun | PruneRun] | None:
    """The planned runs by id, from ``spec`` or the directory's spec.json; None (and a note) without either."""
    if spec is None:
        path = store.root / "spec.json"
        if not path.is_file():
            report.notes.append(f"plan not checked: {store.root} has no spec.json (a directory of copied records); "
                                "give the spec with --spec SPEC to check the records against its plan")
            return None
        try:
            spec = spec_from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError, TsPruneError) as exc:
            report.problems.append(Finding("spec.json", f"cannot be read ({' '.join(str(exc).split())[:200]})",
                                           "check the records against their spec with --spec SPEC"))
            return None
    return {run.run_id: run for run in plan_sweep(spec).runs()}


def _check_plan(records: dict[str, dict[str, Any]], planned: dict[str, DenseRun | PruneRun],
                report: CheckReport) -> None:
    """Each record a planned run with that run's kind, dense run and labels; notes on what is left to do."""
    for run_id, record in records.items():
        run = planned.get(run_id)
        where = f"records/{run_id}.json"
        if run is None:
            report.problems.append(Finding(where, "a run the spec does not plan", "check it against the spec that "
                                           "planned it (--spec SPEC), or delete it and runs/" + run_id))
            continue
        differs = _differences(record, run)
        if differs:
            report.problems.append(Finding(where, f"does not match its planned run ({', '.join(differs)})",
                                           f"delete it (and runs/{run_id}), then `sweep run` runs it again"))
    report.notes.append(f"plan checked: {len(records)} records against the {len(planned)} planned runs")
    missing = [run_id for run_id in planned if run_id not in records]
    if missing:
        report.notes.append(f"{len(missing)} of the {len(planned)} planned runs have no record yet: `sweep run` "
                            "runs them")
    failed = [record for run_id, record in records.items() if run_id in planned and record.get("status") != "done"]
    if failed:
        by_class = {name: sum(failure_of(record) == name for record in failed) for name in (DETERMINISTIC,
                                                                                             ENVIRONMENTAL)}
        automatic = sum(retried_by_itself(record) for record in failed)
        advice = [f"`sweep run` retries {automatic} environmental one(s) by itself (up to {ENVIRONMENTAL_ATTEMPTS} "
                  "attempts)"] if automatic else []
        if len(failed) > automatic:
            advice.append(f"`sweep run --retry-failed` reruns the other {len(failed) - automatic}")
        report.notes.append(f"{len(failed)} planned run(s) failed ({by_class[DETERMINISTIC]} deterministic, "
                            f"{by_class[ENVIRONMENTAL]} environmental): {'; '.join(advice)}")


def _differences(record: dict[str, Any], run: DenseRun | PruneRun) -> list[str]:
    """What of ``record`` contradicts the planned ``run``: its kind, its dense run, or a label it records."""
    found = [name for name, planned in (("kind", run.kind), ("parent_id", run.parent_id))
             if record.get(name) != planned]
    labels = dataclasses.asdict(run.labels)
    recorded = record.get("labels") or {}
    found += [f"labels.{key}" for key in sorted(set(labels) & set(recorded)) if not _same(recorded[key], labels[key])]
    return found


def _check_weights(store: SweepStore, records: dict[str, dict[str, Any]], report: CheckReport) -> None:
    """Each finished run's directory, where this store has it: complete, and its weights those its record hashed."""
    matched = unhashed = absent = 0
    for run_id, record in records.items():
        folder = store.run_dir(run_id)
        if record.get("status") != "done":
            continue
        if not folder.is_dir():
            absent += record.get("kind") == "dense" or bool(record.get("weights_sha256"))
            continue
        todo = f"delete runs/{run_id} and records/{run_id}.json, then `sweep run` runs it again"
        if not run_dir_complete(folder):
            report.problems.append(Finding(f"runs/{run_id}", "incomplete run directory (files missing, or a training "
                                           "state left)", todo))
            continue
        recorded = record.get("weights_sha256")
        if not recorded:
            unhashed += 1
        elif file_digest(folder / WEIGHTS) != recorded:
            report.problems.append(Finding(f"runs/{run_id}/{WEIGHTS}", "weights differ from the hash its record "
                                           "holds (changed after the record was written)", todo))
        else:
            matched += 1
    if matched:
        report.notes.append(f"{matched} kept run directories match the weights hash in their record")
    if unhashed:
        report.notes.append(f"{unhashed} kept run directories have no hash recorded (records written before tsprune "
                            "recorded hashes): not checked")
    if absent:
        report.notes.append(f"{absent} finished runs have no run directory here (records moved without weights; "
                            "`sweep run --rebuild` makes those a measuring pass needs)")


def _check_results(store: SweepStore, records: dict[str, dict[str, Any]], report: CheckReport) -> None:
    """``results.parquet`` against the table the records make."""
    path = store.root / "results.parquet"
    todo = f"rewrite it: `tsprune results {store.root} --export {path}`"
    if not path.is_file():
        if records:
            report.problems.append(Finding(path.name, "missing", todo))
        return
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same problem
        report.problems.append(Finding(path.name, f"unreadable ({type(exc).__name__})", todo))
        return
    differences = table_differences(records_frame(list(records.values())), table)
    if differences:
        report.problems.append(Finding(path.name, f"differs from the records ({'; '.join(differences)})", todo))


def table_differences(expected: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """How ``table`` (a results table read back) differs from ``expected`` (the records' table): runs missing,
    extra or repeated, columns missing, values that differ. A column the table lacks counts only where the
    records have values in it (a table written before that column existed)."""
    if "run_id" not in table.columns:
        return ["no run_id column"]
    found = []
    ours, theirs = expected.set_index("run_id"), table.set_index("run_id")
    repeated = int(theirs.index.duplicated().sum())
    theirs = theirs[~theirs.index.duplicated()]
    missing, extra = ours.index.difference(theirs.index), theirs.index.difference(ours.index)
    for count, what, ids in ((len(missing), "missing", missing), (len(extra), "not recorded", extra)):
        if count:
            found.append(f"{count} run(s) {what}: {', '.join(map(str, list(ids)[:3]))}{' ...' if count > 3 else ''}")
    if repeated:
        found.append(f"{repeated} run(s) repeated")
    common = ours.index.intersection(theirs.index)
    absent = [column for column in ours.columns if column not in theirs.columns and ours[column].notna().any()]
    if absent:
        found.append(f"column(s) missing: {', '.join(absent)}")
    differing: dict[str, int] = {}
    for column in (column for column in ours.columns if column in theirs.columns):
        left, right = ours.loc[common, column].tolist(), theirs.loc[common, column].tolist()
        count = sum(not _same(a, b) for a, b in zip(left, right))
        if count:
            differing[column] = count
    if differing:
        found.append("values differ in " + ", ".join(f"{column} ({n} runs)" for column, n in differing.items()))
    return found


def _same(a: Any, b: Any) -> bool:
    """Equal as table cells: both missing, equal numbers, or equal text."""
    a_missing, b_missing = _missing(a), _missing(b)
    if a_missing or b_missing:
        return a_missing and b_missing
    if _number(a) and _number(b):
        return float(a) == float(b)
    return str(a) == str(b)


def _missing(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or array: a value
        return False


def _number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, str)
