"""Sweeps at study scale: a YAML spec expands into dense trainings and prune runs that run (and resume) locally or
on Ray, with one record per run and a DuckDB-queryable results table."""

from tsprune._lazy import lazy_attributes

_WHERE = {"Plan": "tsprune.sweep.plan", "plan_sweep": "tsprune.sweep.plan", "SweepOutcome": "tsprune.sweep.runner",
          "run_sweep": "tsprune.sweep.runner", "SweepSpec": "tsprune.sweep.spec",
          "load_spec": "tsprune.sweep.spec_reader", "parse_spec": "tsprune.sweep.spec_reader",
          "load_results": "tsprune.sweep.results", "query": "tsprune.sweep.results"}
__getattr__ = lazy_attributes(__name__, _WHERE)
__all__ = sorted(_WHERE)
