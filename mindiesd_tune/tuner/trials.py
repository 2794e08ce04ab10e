"""What a finished trial is: completed with a latency, feasible by its stored constraints, the
unaccelerated point. The bottom of the tuner: the pick, the refinements and the cliffs all read
these, and this module imports none of them."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import optuna

from ..accel.config import ConfigError
from ..search_spaces import config_from_params

COMPLETE = optuna.trial.TrialState.COMPLETE


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(COMPLETE,)) if "latency_s" in t.user_attrs]


def is_neutral_point(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether the trial's parameters are the unaccelerated pipeline (whatever sections the study searched)."""
    try:
        return config_from_params(trial.params).is_neutral
    except ConfigError:  # a point of a method no longer registered (a plugin left out)
        return False


def baseline_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    return next((t for t in completed(study) if is_neutral_point(t)), None)


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Feasible by the constraints stored with the trial (Optuna's rule: every value <= 0)."""
    return all(v <= 0 for v in trial.constraints.values())


def same_value(a: Any, b: Any) -> bool:
    """Two parameter values alike: numbers within float rounding, anything else equal."""
    if isinstance(a, Real) and isinstance(b, Real) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b
