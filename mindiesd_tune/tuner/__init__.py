"""Study set-up, objectives and constraints, workers, budget and the choice of the profile.

Exports resolve on first use: the command line parses budgets, floors and options through
``tuner.budget``, ``tuner.objectives`` and ``tuner.options`` without importing torch, Optuna
or the evaluator, so a mistake on the command line is answered at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# Imported now, not lazily: the function shares its name with the submodule, and importing the
# submodule later (the study does) would otherwise leave ``tuner.pick`` the module.
from .pick import pick

_EXPORTS = {
    "Budget": ".budget",
    "parse_budget": ".budget",
    "Evaluator": ".evaluator",
    "TrialPrunedEarly": ".evaluator",
    "TrialResult": ".evaluator",
    "Workload": ".evaluator",
    "Constraints": ".objectives",
    "QualityFloor": ".objectives",
    "parse_floor": ".objectives",
    "parse_memory": ".objectives",
    "TuneOptions": ".options",
    "load_run": ".storage",
    "SAMPLERS": ".options",
    "StudyOutcome": ".outputs",
    "export": ".outputs",
    "write_outputs": ".outputs",
    "plan_study": ".study",
    "run_study": ".study",
    "InProcessWorker": ".worker",
    "ProcessWorker": ".worker",
    "WorkerSpec": ".worker",
}

if TYPE_CHECKING:
    from .budget import Budget, parse_budget
    from .evaluator import Evaluator, TrialPrunedEarly, TrialResult, Workload
    from .objectives import Constraints, QualityFloor, parse_floor, parse_memory
    from .options import SAMPLERS, TuneOptions
    from .outputs import StudyOutcome, export, write_outputs
    from .storage import load_run
    from .study import plan_study, run_study
    from .worker import InProcessWorker, ProcessWorker, WorkerSpec

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

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
