"""Study set-up, objectives and constraints, workers, budget and the choice of the profile."""

from .budget import Budget, parse_budget
from .evaluator import Evaluator, TrialPrunedEarly, TrialResult, Workload
from .objectives import Constraints, QualityFloor, parse_floor, parse_memory
from .options import SAMPLERS, TuneOptions
from .outputs import StudyOutcome, export, write_outputs
from .pick import pick
from .storage import load_run
from .study import plan_study, run_study
from .worker import InProcessWorker, ProcessWorker, WorkerSpec

__all__ = [
    "SAMPLERS",
    "Budget",
    "Constraints",
    "Evaluator",
    "InProcessWorker",
    "ProcessWorker",
    "QualityFloor",
    "StudyOutcome",
    "TrialPrunedEarly",
    "TrialResult",
    "TuneOptions",
    "Workload",
    "WorkerSpec",
    "export",
    "load_run",
    "parse_budget",
    "parse_floor",
    "parse_memory",
    "pick",
    "plan_study",
    "run_study",
    "write_outputs",
]
