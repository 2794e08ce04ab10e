"""Quality cliffs along the front's knobs, and the robust pick that keeps a margin from them.

A cache threshold moved one notch can take LPIPS from 0.013 to 0.120: the failure a deployment
fears most is a pick that sits next to such a cliff, where a new prompt or a library upgrade
tips it over. Along each knob of a front point's methods (``Method.knob``, the parameter that
trades quality for speed), the trials that differ from it in that knob alone form a line
(``tuner.refine`` walks the same lines). Between two adjacent tried values on a line there is a
*cliff* where quality falls by CLIFF_DB or more on PSNR (CLIFF_SHARE of the value on any other
metric), or where a floor is crossed.

The ``robust`` pick takes the fastest feasible point whose bolder neighbour on every line that
has one still meets the floors: a point with a tried margin to the edge.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import optuna

from ..quality import higher_is_better
from .trials import is_feasible, is_neutral_point
from .trials import same_value as _same

CLIFF_DB = 3.0
CLIFF_SHARE = 0.1


@dataclass(frozen=True)
class Cliff:
    """A sharp fall of quality (or a floor crossed) between two adjacent tried values of a knob."""

    method: str
    param: str
    safe: float  # the value on the good side
    bold: float  # the value past the edge
    safe_trial: int
    bold_trial: int
    quality_safe: float | None
    quality_bold: float | None
    why: str

    def as_dict(self) -> dict:
        return asdict(self)


def _quality(t: optuna.trial.FrozenTrial, metric: str) -> float | None:
    v = (t.user_attrs.get("metrics") or {}).get(metric)
    return None if v is None else float(v)


def _falls(a: float | None, b: float | None, metric: str) -> bool:
    """Whether quality falls sharply from ``a`` to ``b``."""
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return False
    if not higher_is_better(metric):
        a, b = -a, -b
    if math.isinf(a):
        return a > 0 and not math.isinf(b)  # identical output to one that differs: a cliff only on PSNR's scale
    drop = a - b
    return drop >= CLIFF_DB if metric == "psnr" else drop >= CLIFF_SHARE * max(abs(a), 1e-12)


def _knobs(trial: optuna.trial.FrozenTrial) -> list[tuple[str, object]]:
    """(method name, Knob) of every method the trial's parameters chose that has a numeric knob."""
    from ..accel import methods as reg

    found = []
    for sec in reg.sections():
        name = trial.params.get(f"{sec.name}.{sec.key}") if sec.key is not None else sec.default
        if name is None or (sec.key is not None and name == sec.default):
            continue
        try:
            method = reg.get_method(sec.name, name)
        except KeyError:  # a plugin's method no longer registered
            continue
        knob = method.knob
        value = trial.params.get(knob.param) if knob is not None else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value != knob.off:
            found.append((method.name, knob))
    return found


def _finished(t: optuna.trial.FrozenTrial) -> bool | None:
    """True: feasible; False: missed a floor (or pruned for it); None: nothing known."""
    if t.state == optuna.trial.TrialState.PRUNED:
        # pruned on its first prompt's quality is a miss; dropped by its screen (speed) says nothing
        reason = t.user_attrs.get("prune_reason") or ""
        return False if reason and not reason.startswith("screened") else None
    if t.state != optuna.trial.TrialState.COMPLETE or "latency_s" not in t.user_attrs:
        return None
    return is_feasible(t)


def lines(study: optuna.Study, trial: optuna.trial.FrozenTrial):
    """(method, knob, points) per knob of ``trial``: the tried values on its line (the trials that
    differ from it in that knob alone), the trial's own included, ordered from safe to bold;
    each point (value, trial number, feasible)."""
    others = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    out = []
    for method, knob in _knobs(trial):
        rest = {k: v for k, v in trial.params.items() if k != knob.param}
        pts = {trial.params[knob.param]: (trial.number, is_feasible(trial))}
        for t in others:
            if t.number == trial.number or t.params.keys() != trial.params.keys():
                continue
            if all(_same(t.params[k], v) for k, v in rest.items()):
                ok = _finished(t)
                if ok is not None:
                    pts.setdefault(t.params[knob.param], (t.number, ok))
        ordered = sorted(pts.items(), key=lambda kv: kv[0] * knob.bolder)
        out.append((method, knob, [(v, n, ok) for v, (n, ok) in ordered]))
    return out


def cliffs_near(study: optuna.Study, trial: optuna.trial.FrozenTrial, metric: str) -> list[Cliff]:
    """The cliffs on ``trial``'s lines."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    found = []
    for method, knob, pts in lines(study, trial):
        for (va, na, oka), (vb, nb, okb) in zip(pts, pts[1:]):
            qa, qb = _quality(trials[na], metric), _quality(trials[nb], metric)
            why = None
            if oka and not okb:
                why = "a floor is crossed"
            elif _falls(qa, qb, metric):
                why = f"{metric} falls from {_fmt(qa)} to {_fmt(qb)}"
            if why:
                found.append(Cliff(method, knob.param, va, vb, na, nb, qa, qb, why))
    return found


def distance_to_cliff(study: optuna.Study, trial: optuna.trial.FrozenTrial, metric: str) -> dict | None:
    """The nearest cliff on the bold side of ``trial`` along any of its knobs: how many tried
    values lie between (0: the next bolder value tried is past the edge) and the knob's distance."""
    best = None
    for method, knob, pts in lines(study, trial):
        mine = next(i for i, p in enumerate(pts) if p[1] == trial.number)
        for c in cliffs_near(study, trial, metric):
            if c.param != knob.param:
                continue
            j = next(i for i, p in enumerate(pts) if p[1] == c.safe_trial)
            if j < mine:
                continue
            steps = j - mine
            if best is None or steps < best["steps"]:
                best = {"param": knob.param, "method": method, "steps": steps, "value": trial.params[knob.param],
                        "edge": c.bold, "why": c.why}
    return best


def is_robust(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool | None:
    """True: every line with a tried bolder neighbour has it feasible; False: one does not; None:
    no bolder neighbour was tried on any line (nothing known)."""
    known = False
    for _, _, pts in lines(study, trial):
        mine = next(i for i, p in enumerate(pts) if p[1] == trial.number)
        if mine + 1 < len(pts):
            known = True
            if not pts[mine + 1][2]:
                return False
    return True if known else None


def front_cliffs(study: optuna.Study, front: list[optuna.trial.FrozenTrial], metric: str) -> dict:
    """For the report: every cliff on the front points' lines (once each), and each front point's
    distance to its nearest one."""
    seen, cliffs = set(), []
    for t in front:
        if is_neutral_point(t):
            continue
        for c in cliffs_near(study, t, metric):
            key = (c.param, c.safe_trial, c.bold_trial)
            if key not in seen:
                seen.add(key)
                cliffs.append(c.as_dict())
    return {"cliffs": cliffs, "distance": {t.number: distance_to_cliff(study, t, metric) for t in front
                                           if not is_neutral_point(t)}}


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


__all__ = ["CLIFF_DB", "CLIFF_SHARE", "Cliff", "cliffs_near", "distance_to_cliff", "front_cliffs", "is_robust", "lines"]
