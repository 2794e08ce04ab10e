"""The HTML Pareto report and the table of trials, rendered from a trials DataFrame."""

from .html import pareto_figure, write_report, write_trials_csv

__all__ = ["pareto_figure", "write_report", "write_trials_csv"]
