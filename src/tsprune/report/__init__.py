"""Sweep reports: figures (PNG + SVG), markdown and a self-contained HTML page from a sweep results table.

Usage::

    from tsprune.report import build_report
    build_report(results_frame, Path("out/report"))  # -> out/report/report.md

The report code itself uses only pandas and matplotlib; it never loads a model or a checkpoint.
"""

from tsprune.report.render import build_report, figure_names

__all__ = ["build_report", "figure_names"]
