"""Quality floors and the choice of the profile among finished trials."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import optuna

from ..errors import UserError
from ..metrics import HIGHER_IS_BETTER
from ..search_spaces import NEUTRAL_PARAMS

_FLOOR = re.compile(r"^\s*([a-z_]+)\s*(>=|<=)\s*([0-9.]+(?:e-?\d+)?)\s*(x?)\s*$")


@dataclass(frozen=True)
class QualityFloor:
    """``metric >= value`` (or ``<=``); with ``relative`` the value multiplies the baseline's."""

    metric: str
    op: str
    value: float
    relative: bool = False

    def bound(self, baseline_value: float | None) -> float:
        if not self.relative:
            return self.value
        if baseline_value is None or not math.isfinite(baseline_value):
            raise UserError(f"floor {self}: the baseline has no finite {self.metric} to scale")
        return self.value * baseline_value

    def holds(self, value: float | None, baseline_value: float | None = None) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        b = self.bound(baseline_value)
        return value >= b if self.op == ">=" else value <= b

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}{'x' if self.relative else ''}"


def parse_floor(text: str) -> QualityFloor:
    m = _FLOOR.match(text)
    if not m:
        raise UserError(f"bad quality floor {text!r}: write it as METRIC>=VALUE, e.g. psnr>=30 or ssim>=0.9")
    metric, op, value, rel = m.groups()
    if metric not in HIGHER_IS_BETTER:
        raise UserError(f"bad quality floor {text!r}: unknown metric {metric!r} (known: {', '.join(HIGHER_IS_BETTER)})")
    return QualityFloor(metric, op, float(value), bool(rel))


def baseline_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if t.params == NEUTRAL_PARAMS:
            return t
    return None


def metric_of(trial: optuna.trial.FrozenTrial, name: str) -> float | None:
    return (trial.user_attrs.get("metrics") or {}).get(name)


def is_feasible(trial: optuna.trial.FrozenTrial, floors: list[QualityFloor], baseline: optuna.trial.FrozenTrial | None) -> bool:
    return all(f.holds(metric_of(trial, f.metric), metric_of(baseline, f.metric) if baseline else None) for f in floors)


def pick_fastest(study: optuna.Study, floors: list[QualityFloor]) -> tuple[optuna.trial.FrozenTrial | None, str]:
    """The fastest complete trial that meets every floor; the baseline when none does."""
    base = baseline_trial(study)
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    feasible = [t for t in done if is_feasible(t, floors, base)]
    if feasible:
        best = min(feasible, key=lambda t: t.user_attrs.get("latency_s", math.inf))
        return best, "fastest trial meeting " + (", ".join(map(str, floors)) or "no floor")
    if base is not None:
        return base, "no trial met " + ", ".join(map(str, floors)) + "; the profile is the baseline"
    return None, "no trial finished"


def trial_summary(trial: optuna.trial.FrozenTrial, baseline: optuna.trial.FrozenTrial | None) -> dict[str, Any]:
    latency = trial.user_attrs.get("latency_s")
    base_s = baseline.user_attrs.get("latency_s") if baseline is not None else None
    speedup = base_s / latency if latency and base_s else None
    return {"latency_s": latency, "baseline_s": base_s, "speedup": speedup}
