"""Reports: one JSON-able dict per model (collect.py), rendered in the terminal (terminal.py) and as one
self-contained HTML file with embedded plots (html.py, plots.py)."""

from .collect import SCHEMA, build_report, report_from_compiled, report_from_graph, report_from_program, validate

__all__ = ["SCHEMA", "build_report", "report_from_compiled", "report_from_graph", "report_from_program", "validate"]
