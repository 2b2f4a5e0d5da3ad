"""Sweeps at study scale: a YAML spec expands into dense trainings and prune runs that run (and resume) locally or
on Ray, with one record per run and a DuckDB-queryable results table."""

from tsprune.sweep.plan import Plan, plan_sweep
from tsprune.sweep.runner import SweepOutcome, run_sweep
from tsprune.sweep.spec import SweepSpec, load_spec, parse_spec
from tsprune.sweep.store import load_results, query

__all__ = ["Plan", "SweepOutcome", "SweepSpec", "load_results", "load_spec", "parse_spec", "plan_sweep", "query",
           "run_sweep"]
