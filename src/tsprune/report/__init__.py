"""Sweep reports: figures (PNG + SVG), markdown and a self-contained HTML page from a sweep results table.

Usage::

    from tsprune.report import build_report
    build_report(results_frame, Path("out/report"))  # -> out/report/report.md

The report code itself uses only pandas and matplotlib; it never loads a model or a checkpoint.
"""

from tsprune._lazy import lazy_attributes

_WHERE = {"build_report": "tsprune.report.render", "figure_names": "tsprune.report.render"}
__getattr__ = lazy_attributes(__name__, _WHERE)
__all__ = sorted(_WHERE)
