"""Choosing the profile among finished trials: fastest feasible, the knee of the front, or a trial."""

from __future__ import annotations

import math
import re

import optuna

from ..errors import UserError
from ..accel.config import ConfigError
from ..search_spaces import config_from_params

COMPLETE = optuna.trial.TrialState.COMPLETE


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(COMPLETE,)) if "latency_s" in t.user_attrs]


def baseline_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    for t in completed(study):
        try:
            if config_from_params(t.params).is_neutral:
                return t
        except ConfigError:  # a point of a method no longer registered (a plugin left out)
            continue
    return None


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Feasible by the constraints stored with the trial (Optuna's rule: every value <= 0)."""
    return all(v <= 0 for v in trial.constraints.values())


def quality_key(study: optuna.Study):
    """trial -> the quality objective signed so that larger is better (LPIPS is minimised)."""
    sign = -1.0 if study.directions[1] == optuna.study.StudyDirection.MINIMIZE else 1.0

    def key(trial: optuna.trial.FrozenTrial) -> float:
        return sign * trial.values[1] if trial.values and len(trial.values) > 1 else -math.inf

    return key


def speedup_of(trial: optuna.trial.FrozenTrial, base: optuna.trial.FrozenTrial | None) -> tuple[float | None, float | None]:
    """(baseline seconds, speed-up): from the baseline timed interleaved with the trial when there is
    one, else against the baseline trial's own timing."""
    latency = trial.user_attrs.get("latency_s")
    if trial.user_attrs.get("speedup") is not None:
        return (trial.user_attrs.get("baseline_latency") or {}).get("median_s"), trial.user_attrs["speedup"]
    base_s = base.user_attrs.get("latency_s") if base is not None else None
    return base_s, (base_s / latency if latency and base_s else None)


def pick(study: optuna.Study, how: str = "fastest") -> tuple[optuna.trial.FrozenTrial | None, str]:
    """``fastest`` (default), ``knee`` or ``trial:N`` -> (trial, why). The baseline when nothing is feasible."""
    done = completed(study)
    feasible = [t for t in done if is_feasible(t)]
    floors = ", ".join(study.user_attrs.get("floors", [])) or "no floor"
    m = re.fullmatch(r"trial:(\d+)", how)
    if m:
        n = int(m.group(1))
        match = [t for t in done if t.number == n]
        if not match:
            raise UserError(f"--pick {how}: trial {n} did not complete (completed: {', '.join(str(t.number) for t in done) or 'none'})")
        note = "" if is_feasible(match[0]) else f" (it does not meet {floors})"
        return match[0], f"trial {n} as asked{note}"
    if how not in ("fastest", "knee"):
        raise UserError(f"--pick {how!r}: use fastest, knee or trial:N")
    if not feasible:
        base = baseline_trial(study)
        if base is not None:
            return base, f"no trial met {floors}; the profile is the baseline"
        return None, "no trial finished"
    quality = quality_key(study)
    if how == "fastest":
        best = min(feasible, key=lambda t: (t.user_attrs["latency_s"], -quality(t)))
        return best, f"fastest trial meeting {floors}"
    return knee(feasible, quality), f"knee of the latency/quality front among trials meeting {floors}"


def knee(trials: list[optuna.trial.FrozenTrial], quality) -> optuna.trial.FrozenTrial:
    """The front point farthest from the line joining its two ends (normalised axes)."""
    front = _front(trials, quality)
    if len(front) <= 2:
        return min(front, key=lambda t: t.user_attrs["latency_s"])
    lat = [t.user_attrs["latency_s"] for t in front]
    q = [quality(t) for t in front]
    lo_l, hi_l, lo_q, hi_q = min(lat), max(lat), min(q), max(q)
    span_l, span_q = (hi_l - lo_l) or 1.0, (hi_q - lo_q) or 1.0
    pts = [((a - lo_l) / span_l, (b - lo_q) / span_q) for a, b in zip(lat, q)]
    (x1, y1), (x2, y2) = pts[0], pts[-1]
    norm = math.hypot(x2 - x1, y2 - y1) or 1.0
    dist = [abs((y2 - y1) * x - (x2 - x1) * y + x2 * y1 - y2 * x1) / norm for x, y in pts]
    return front[max(range(len(front)), key=dist.__getitem__)]


def _front(trials, quality):
    """Non-dominated trials (min latency, max quality), sorted by latency."""
    pts = sorted(trials, key=lambda t: (t.user_attrs["latency_s"], -quality(t)))
    front, best_q = [], -math.inf
    for t in pts:
        if quality(t) > best_q:
            front.append(t)
            best_q = quality(t)
    return front
