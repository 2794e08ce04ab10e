"""Study set-up, objective, budget and selection of the profile."""

from .budget import Budget, parse_budget
from .evaluator import Evaluator, TrialResult, Workload
from .select import QualityFloor, parse_floor, pick_fastest
from .study import StudyOutcome, load_run, run_study, write_outputs

__all__ = [
    "Budget",
    "Evaluator",
    "QualityFloor",
    "StudyOutcome",
    "TrialResult",
    "Workload",
    "load_run",
    "parse_budget",
    "parse_floor",
    "pick_fastest",
    "run_study",
    "write_outputs",
]
