"""The HTML Pareto report and the table of trials, rendered from a trials DataFrame and study metadata.

Nothing here imports the tuner: the tuner passes a DataFrame (one row per trial), the
study's attributes and, when it has them, parameter importances.
"""

from .figures import history_figure, importance_figure, non_dominated, pareto_figure
from .html import write_report
from .tables import tidy_trials, write_trials_csv, write_trials_table

__all__ = [
    "history_figure",
    "importance_figure",
    "non_dominated",
    "pareto_figure",
    "tidy_trials",
    "write_report",
    "write_trials_csv",
    "write_trials_table",
]
