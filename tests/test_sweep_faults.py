"""Faults a long sweep meets, at tiny size: a full disk while writing weights or a record, a truncated record, a
run directory changed after its record, a kill while results.parquet is written; failure classes, the automatic
retry of environmental failures and its limit, the exit status of `sweep run`, and `sweep check`."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_small_csv
from test_sweep import tiny_spec, write_spec
from typer.testing import CliRunner

from tsprune.cli import app
from tsprune.errors import TsPruneError
from tsprune.sweep import load_spec, parse_spec, plan_sweep
from tsprune.sweep.failures import (
    DETERMINISTIC, ENVIRONMENTAL, ENVIRONMENTAL_ATTEMPTS, classify, classify_error, failure_of)
from tsprune.sweep.spec import spec_from_dict
from tsprune.sweep.store import file_digest

runner = CliRunner()
NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"


@pytest.fixture(scope="module")
def csv(tmp_path_factory) -> Path:
    return write_small_csv(tmp_path_factory.mktemp("data"))


def kept_spec(csv: Path, **overrides) -> dict:
    """3 runs that all finish: the dense run and magnitude 0.5 and 0.25, pruned runs kept (their weights hashed)."""
    return tiny_spec(csv, methods={"magnitude": [0.5, 0.25]}, finetune_epochs=[0], finetune_densities=None,
                     keep_pruned=True, **overrides)


def sweep_run(spec_path: Path, sweep: Path, *extra: str):
    return runner.invoke(app, ["sweep", "run", str(spec_path), "--dir", str(sweep), "--threads", "1", "--no-progress",
                               *extra])


def sweep_check(sweep: Path, *extra: str):
    return runner.invoke(app, ["sweep", "check", str(sweep), *extra])


def records(sweep: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted((sweep / "records").glob("*.json"))}


def problems(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("problem: ")]


@pytest.fixture(scope="module")
def healthy(csv, tmp_path_factory) -> tuple[Path, Path]:
    """A finished 3-run sweep (the spec file and the directory); tests copy it before breaking it."""
    root = tmp_path_factory.mktemp("healthy")
    spec_path = write_spec(root, kept_spec(csv))
    result = sweep_run(spec_path, root / "sweep")
    assert result.exit_code == 0 and "3 run(s) done, 0 failed, 0 already recorded" in result.output, result.output
    assert "not complete" not in result.output
    return spec_path, root / "sweep"


def copy_of(healthy: tuple[Path, Path], tmp_path: Path) -> Path:
    shutil.copytree(healthy[1], tmp_path / "sweep", ignore=shutil.ignore_patterns(".lock"))
    return tmp_path / "sweep"


# --- failure classes ----------------------------------------------------------------------------------------------


def test_failures_are_classified_by_what_raised_them():
    from concurrent.futures.process import BrokenProcessPool

    from safetensors import SafetensorError

    environmental = [OSError(errno.ENOSPC, NO_SPACE), OSError(errno.EIO, "Input/output error"),
                     OSError(errno.EDQUOT, "Disk quota exceeded"), MemoryError(),
                     SafetensorError(f"Error while serializing: IoError(Os {{ code: 28, message: \"{NO_SPACE}\" }})"),
                     RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                     RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
                     BrokenProcessPool("A process in the process pool was terminated abruptly")]
    for exc in environmental:
        assert classify(exc) == ENVIRONMENTAL, exc
    try:  # a library's own error raised while handling a full disk
        try:
            raise OSError(errno.ENOSPC, NO_SPACE)
        except OSError as cause:
            raise ValueError("could not save") from cause
    except ValueError as chained:
        assert classify(chained) == ENVIRONMENTAL
    deterministic = [TsPruneError("density 0.001 is out of reach for depgraph"), ValueError("bad shape"),
                     FileNotFoundError(errno.ENOENT, "No such file or directory"), RuntimeError("diverged: nan loss"),
                     TsPruneError(f"an error that merely mentions '{NO_SPACE}'")]
    for exc in deterministic:
        assert classify(exc) == DETERMINISTIC, exc
    # records written before classes existed: classified by their error text
    assert classify_error(f"SafetensorError: Error while serializing: {NO_SPACE}") == ENVIRONMENTAL
    assert classify_error("WorkerCrashed: the worker process died (killed, or out of memory)") == ENVIRONMENTAL
    assert classify_error("lost 3 times (worker or node died), last: NodeDiedError: ...") == ENVIRONMENTAL
    assert classify_error("TsPruneError: depgraph cannot reach density 0.001") == DETERMINISTIC
    assert failure_of({"status": "failed", "error": f"OSError: [Errno 28] {NO_SPACE}"}) == ENVIRONMENTAL
    assert failure_of({"status": "failed", "failure": DETERMINISTIC, "error": NO_SPACE}) == DETERMINISTIC
    assert failure_of({"status": "done"}) is None


def test_spec_json_plans_the_same_runs_as_its_spec(csv, tmp_path):
    """`sweep check` plans from the spec.json a sweep wrote: the same run ids as the spec itself."""
    for spec in (parse_spec(tiny_spec(csv, engines=["dense", "sparse"], keep_pruned=True)), load_spec("paper-mini"),
                 load_spec("study-etth1")):
        again = spec_from_dict(json.loads(json.dumps(spec.to_dict())))
        assert [run.run_id for run in plan_sweep(again).runs()] == [run.run_id for run in plan_sweep(spec).runs()]


# --- exit status --------------------------------------------------------------------------------------------------


def test_exit_status_all_done(healthy, tmp_path):
    """Every run of the spec done (the fixture's first run said so too): exit 0, and so again with nothing to do."""
    again = sweep_run(healthy[0], copy_of(healthy, tmp_path))
    assert again.exit_code == 0 and "0 run(s) done, 0 failed, 3 already recorded" in again.output, again.output
    assert "not complete" not in again.output


def test_exit_status_deterministic_failures(csv, tmp_path):
    """A run out of reach (depgraph at 0.001) is a deterministic failure: exit 3 with its class, and the same
    command again does not retry it; --retry-failed does."""
    spec_path, sweep = write_spec(tmp_path, tiny_spec(csv)), tmp_path / "sweep"
    first = sweep_run(spec_path, sweep)
    assert first.exit_code == 3, first.output
    assert "4 run(s) done, 1 failed (deterministic), 0 already recorded" in first.output
    assert "not complete: of the spec's 5 runs, 1 failed (deterministic): --retry-failed" in first.output
    failed = [record for record in records(sweep).values() if record["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["failure"] == DETERMINISTIC and "max_attempts" not in failed[0]
    again = sweep_run(spec_path, sweep)
    assert again.exit_code == 3 and "0 run(s) done, 0 failed, 5 already recorded" in again.output, again.output
    assert "1 failed (deterministic)" in again.output  # the summary says why the status is not 0
    assert records(sweep)[failed[0]["run_id"]]["attempt"] == 1  # not retried by itself
    retried = sweep_run(spec_path, sweep, "--retry-failed")
    assert retried.exit_code == 3 and "0 run(s) done, 1 failed (deterministic), 4 already recorded" in retried.output
    assert records(sweep)[failed[0]["run_id"]]["attempt"] == 2
    assert "Traceback" not in first.output + again.output + retried.output


def test_exit_status_environmental_failures_are_retried_up_to_the_limit(csv, tmp_path, monkeypatch):
    """A run that fails for the machine (out of memory here) exits 3 with its class; the same command again retries
    it by itself, up to the stated number of attempts; then only --retry-failed does."""
    from tsprune.prune import pipeline

    spec = kept_spec(csv)
    spec_path, sweep = write_spec(tmp_path, spec), tmp_path / "sweep"
    real = pipeline.prune_run

    def short_of_memory(dense, config, *args, **kwargs):
        if config.density == 0.25:
            raise MemoryError()
        return real(dense, config, *args, **kwargs)

    monkeypatch.setattr(pipeline, "prune_run", short_of_memory)
    first = sweep_run(spec_path, sweep)
    assert first.exit_code == 3 and "2 run(s) done, 1 failed (environmental), 0 already recorded" in first.output
    assert "1 environmental failure(s) are retried by running the same command again" in first.output
    failed = next(record for record in records(sweep).values() if record["status"] == "failed")
    assert (failed["failure"], failed["max_attempts"], failed["attempt"]) == (ENVIRONMENTAL, ENVIRONMENTAL_ATTEMPTS, 1)
    for attempt in range(2, ENVIRONMENTAL_ATTEMPTS + 1):  # still short of memory: retried, up to the limit
        again = sweep_run(spec_path, sweep)
        assert again.exit_code == 3 and "0 run(s) done, 1 failed (environmental), 2 already" in again.output
        assert records(sweep)[failed["run_id"]]["attempt"] == attempt
    assert f"reached the limit of {ENVIRONMENTAL_ATTEMPTS} attempts" in again.output
    stays = sweep_run(spec_path, sweep)
    assert stays.exit_code == 3 and "0 run(s) done, 0 failed, 3 already recorded" in stays.output, stays.output
    monkeypatch.setattr(pipeline, "prune_run", real)  # memory again
    done = sweep_run(spec_path, sweep, "--retry-failed")
    assert done.exit_code == 0 and "1 run(s) done, 0 failed, 2 already recorded" in done.output, done.output
    assert "not complete" not in done.output
    # and once fixed before the limit, the plain command completes it
    (tmp_path / "second").mkdir()
    spec_path, sweep = write_spec(tmp_path / "second", spec), tmp_path / "second" / "sweep"
    monkeypatch.setattr(pipeline, "prune_run", short_of_memory)
    assert sweep_run(spec_path, sweep).exit_code == 3
    monkeypatch.setattr(pipeline, "prune_run", real)
    fixed = sweep_run(spec_path, sweep)
    assert fixed.exit_code == 0 and "1 run(s) done, 0 failed, 2 already recorded" in fixed.output, fixed.output


# --- a full disk --------------------------------------------------------------------------------------------------


def test_no_space_while_writing_weights_then_a_rerun_completes(csv, tmp_path, monkeypatch):
    """The issue's scenario: every run's weights hit ENOSPC (safetensors says so in its own error). The sweep ends
    non-zero with its runs failed (environmental); with space again the same command completes them."""
    from safetensors import SafetensorError

    from tsprune import run as run_module

    def full_disk(*args, **kwargs):
        raise SafetensorError(f"Error while serializing: IoError(Os {{ code: 28, kind: StorageFull, message: "
                              f"\"{NO_SPACE}\" }})")

    spec_path, sweep = write_spec(tmp_path, kept_spec(csv)), tmp_path / "sweep"
    monkeypatch.setattr(run_module, "save_file", full_disk)
    first = sweep_run(spec_path, sweep)
    assert first.exit_code == 3, first.output
    assert "0 run(s) done, 3 failed (environmental), 0 already recorded" in first.output
    assert all(record["failure"] == ENVIRONMENTAL for record in records(sweep).values())
    assert not list(sweep.rglob("model.safetensors"))
    monkeypatch.undo()  # space freed
    second = sweep_run(spec_path, sweep)
    assert second.exit_code == 0, second.output
    assert "3 run(s) done, 0 failed, 0 already recorded" in second.output
    assert all(record["status"] == "done" and record["attempt"] == 2 and record["weights_sha256"]
               for record in records(sweep).values())
    checked = sweep_check(sweep)
    assert checked.exit_code == 0 and "no problems found" in checked.output, checked.output
    assert "3 kept run directories match the weights hash in their record" in checked.output


def test_no_space_while_writing_a_record_stops_the_sweep_then_a_rerun_completes(csv, tmp_path, monkeypatch):
    """ENOSPC half-way through the second record: the sweep stops at once with one line, exit 3, nothing
    half-written; the same command with space again completes (without --retry-failed)."""
    from tsprune.runtime import atomic_path
    from tsprune.sweep import store as store_module

    spec_path, sweep = write_spec(tmp_path, kept_spec(csv)), tmp_path / "sweep"
    real, calls = store_module.atomic_write, []

    def full_disk(path, payload):
        calls.append(path)
        if len(calls) < 2:
            return real(path, payload)
        with atomic_path(path) as tmp:
            tmp.write_text(payload[:20])
            raise OSError(errno.ENOSPC, NO_SPACE, str(tmp))

    monkeypatch.setattr(store_module, "atomic_write", full_disk)
    first = sweep_run(spec_path, sweep)
    assert first.exit_code == 3 and "Traceback" not in first.output, first.output
    assert f"error: cannot write the sweep directory {sweep} ({NO_SPACE} writing" in first.output
    assert "run the same command again" in first.output and "2 not recorded" in first.output
    assert len(records(sweep)) == 1 and not [path for path in sweep.rglob(".*") if path.name != ".lock"]
    checked = sweep_check(sweep)  # a consistent store that lacks two runs
    assert checked.exit_code == 0 and "2 of the 3 planned runs have no record yet" in checked.output, checked.output
    monkeypatch.undo()
    second = sweep_run(spec_path, sweep)
    assert second.exit_code == 0 and "2 run(s) done, 0 failed, 1 already recorded" in second.output, second.output
    assert {record["attempt"] for record in records(sweep).values()} == {1}


# --- sweep check --------------------------------------------------------------------------------------------------


def test_a_truncated_record_is_found_warned_about_and_rerun(healthy, tmp_path):
    sweep = copy_of(healthy, tmp_path)
    assert sweep_check(sweep).exit_code == 0
    victim = next(path for path in sorted((sweep / "records").glob("*.json"))
                  if json.loads(path.read_text())["kind"] == "prune")
    victim.write_bytes(victim.read_bytes()[:40])
    checked = sweep_check(sweep)
    assert checked.exit_code == 1, checked.output
    assert (f"problem: records/{victim.name}: unreadable record, not valid JSON (40 bytes: truncated or corrupt): "
            "will be rerun by `sweep run`") in checked.output
    assert any("results.parquet: differs from the records (1 run(s) not recorded" in line
               for line in problems(checked.output))
    shown = runner.invoke(app, ["results", str(sweep)])
    assert shown.exit_code == 0, shown.output
    assert f"note: skipped 1 unreadable record(s) in {sweep / 'records'} ({victim.name}: not valid JSON" in shown.output
    reported = runner.invoke(app, ["report", str(sweep), "--out", str(tmp_path / "report")])
    assert reported.exit_code == 0 and "note: skipped 1 unreadable record(s)" in reported.output, reported.output
    rerun = sweep_run(healthy[0], sweep)
    assert rerun.exit_code == 0 and "1 run(s) done, 0 failed, 2 already recorded" in rerun.output, rerun.output
    assert json.loads(victim.read_text())["run_id"] == victim.stem
    assert sweep_check(sweep).exit_code == 0


def test_a_changed_run_directory_leftovers_and_old_records_in_check(healthy, tmp_path):
    sweep = copy_of(healthy, tmp_path)
    stored = records(sweep)
    victim = next(run_id for run_id, record in stored.items() if record["kind"] == "prune")
    weights = sweep / "runs" / victim / "model.safetensors"
    assert file_digest(weights) == stored[victim]["weights_sha256"]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one bit of one weight
    weights.write_bytes(bytes(data))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    (sweep / f".results.parquet.{dead}.tmp").write_bytes(b"PAR1")  # a writer killed before its rename
    (sweep / "runs" / f".{victim}.x1y2z3").mkdir()  # a staging folder
    checked = sweep_check(sweep)
    assert checked.exit_code == 1 and "3 problem(s)" in checked.output, checked.output
    assert (f"problem: runs/{victim}/model.safetensors: weights differ from the hash its record holds (changed after "
            f"the record was written): delete runs/{victim} and records/{victim}.json, then `sweep run` runs it "
            "again") in checked.output
    assert (f"problem: .results.parquet.{dead}.tmp: left by an interrupted write: `sweep run` removes it"
            in checked.output)
    assert f"problem: runs/.{victim}.x1y2z3: left by an interrupted write" in checked.output
    # doing what it says: the run is made again, the leftovers go
    shutil.rmtree(sweep / "runs" / victim)
    (sweep / "records" / f"{victim}.json").unlink()
    rerun = sweep_run(healthy[0], sweep)
    assert rerun.exit_code == 0 and "1 run(s) done, 0 failed, 2 already recorded" in rerun.output, rerun.output
    assert sweep_check(sweep).exit_code == 0
    # a record written before hashes were recorded is no corruption
    path = sweep / "records" / f"{victim}.json"
    old = json.loads(path.read_text())
    del old["weights_sha256"]
    path.write_text(json.dumps(old))
    checked = sweep_check(sweep)
    assert checked.exit_code == 0 and "1 kept run directories have no hash recorded" in checked.output


def test_check_against_the_plan_and_the_committed_study(healthy, csv, tmp_path):
    sweep = copy_of(healthy, tmp_path)
    other = write_spec(tmp_path, kept_spec(csv, seeds=[1]))  # another spec: none of these runs is planned
    checked = sweep_check(sweep, "--spec", str(other))
    assert checked.exit_code == 1 and len(problems(checked.output)) == 3, checked.output
    assert "a run the spec does not plan" in checked.output
    assert "plan checked: 3 records against the 3 planned runs" in sweep_check(sweep).output
    missing = runner.invoke(app, ["sweep", "check", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "not a sweep directory" in missing.output and "Traceback" not in missing.output
    # the committed study: records and results.parquet, no spec.json (records only, or against the preset)
    study = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "study-etth1"
    copied = tmp_path / "study"
    shutil.copytree(study / "records", copied / "records")
    shutil.copyfile(study / "results.parquet", copied / "results.parquet")
    alone = sweep_check(copied)
    assert alone.exit_code == 0 and "plan not checked" in alone.output, alone.output
    planned = sweep_check(copied, "--spec", "study-etth1")
    assert planned.exit_code == 0 and "no problems found" in planned.output, planned.output


def test_a_kill_while_results_parquet_is_written_leaves_the_old_file(healthy, tmp_path):
    """SIGKILL between DuckDB writing the table and its rename over results.parquet: the old file stays whole, the
    temporary file is a leftover that `sweep check` names and `sweep run` removes."""
    import duckdb

    sweep = copy_of(healthy, tmp_path)
    before = (sweep / "results.parquet").read_bytes()
    victim = next(path for path in (sweep / "records").glob("*.json")
                  if json.loads(path.read_text())["kind"] == "prune")
    victim.unlink()  # the table written now would have 2 rows
    script = ("import os, signal, sys\n"
              "from tsprune.sweep.results import write_results\n"
              "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # the kill, before the rename\n"
              "write_results(sys.argv[1])\n")
    killed = subprocess.run([sys.executable, "-c", script, str(sweep)], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (sweep / "results.parquet").read_bytes() == before
    assert duckdb.sql(f"select count(*) from '{sweep / 'results.parquet'}'").fetchall()[0][0] == 3
    leftovers = list(sweep.glob(".results.parquet.*.tmp"))
    assert len(leftovers) == 1
    checked = sweep_check(sweep)
    assert checked.exit_code == 1 and f"problem: {leftovers[0].name}: left by an interrupted write" in checked.output
    rerun = sweep_run(healthy[0], sweep)
    assert rerun.exit_code == 0 and "1 run(s) done" in rerun.output, rerun.output
    assert not leftovers[0].exists() and sweep_check(sweep).exit_code == 0
