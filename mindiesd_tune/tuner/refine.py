"""Front refinement: a line search along each method's aggressiveness knob.

In a short study a sampler spends most trials far from the quality floor, while the fastest
feasible setting of a method lies on the floor's boundary. After every trial the driver asks
``refinements`` for points to queue, each the trial's own parameters with one knob moved
(``Method.knob``: the parameter that trades quality for speed, and which way is bolder):

- a completed, feasible trial with the best feasible speed-up so far gets its *bolder*
  neighbour, along the knob of the method its parameters chose (the cache section's first,
  then the other sections in their order, the first that can move; a refinement point keeps
  to the knob it was moved along);
- a preset or refinement point that misses a quality floor (a floor's constraint above 0, or
  pruned for missing one; a memory or weight cap is not a floor) gets a *safer* neighbour:
  halfway back to the nearest feasible point on its line (the point it was refined from),
  else one notch safer.

A notch comes from the parameter's own distribution in the trial: one step of an int or of
numeric choices, a factor ``LOG_FACTOR`` on a log float, ``LINEAR_NOTCH`` of a linear float's
range. A bolder step that would pass a known floor miss on the same line stops halfway to it,
so the line bisects the boundary. A line ends when the move would be shorter than
``MIN_MOVE`` of the range (or than one step), would leave the distribution, or would reach a
point already tried or queued.

Sections are independent methods (caching, precision, step count, mesh), so speed-ups found in
different sections are combined: a feasible trial that sets one section only and whose interval
reaches ``MIN_WIN`` over the baseline (a *single-section win*, such as the bf16 denoiser alone) is
laid over the best feasible trial where that trial leaves the section off, whichever of the two
finished last; so is a screen that successive halving parked (``screen.rank``) when it sets one
section, met the floors on its look and its optimistic reading (its one ratio stretched by the
timing noise, as the screen itself judges) reaches ``MIN_WIN`` over the baseline. A
single-section *preset* (bf16, w8a16, compile) that met the floors is laid over the best point
whatever its own speed: precision and compile can gain on top of a cache and nothing alone
(on demo-flux bf16 alone screened 0.85x in one study; in another, schedule + compile + bf16
timed 3.05x [3.00-3.14] against 2.79x [2.55-2.97] without bf16), and there are at most three.
Refinement
points are trials like any other: they count against the budget.
Random search does without them: it is the baseline a search is compared with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any, Callable, Iterable

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from .pick import completed, is_feasible, is_neutral_point, is_preset, speed_of
from .screen import PARKED, PROMOTED_FROM, SCREEN_Z, timing_noise
from .trials import same_value as _same

# Samplers whose studies refine their front; ``random`` stays pure random search after the presets.
REFINING_SAMPLERS = ("tpe", "nsga2", "gp")
LOG_FACTOR = 1.3  # one notch of a log-scaled float
LINEAR_NOTCH = 0.08  # one notch of a linear float, as a share of its range
MIN_MOVE = 0.02  # a shorter move of a float, as a share of its range, ends the line
MIN_WIN = 0.03  # a single-section trial that may be this much faster than the baseline is combined with the best
_DIGITS = 4  # significant digits of a refined float: readable in the trial lines

TrialState = optuna.trial.TrialState


def refines(sampler: str) -> bool:
    """Whether a study with this sampler refines its front."""
    return sampler in REFINING_SAMPLERS


@dataclass(frozen=True)
class Refinement:
    """One point to queue: ``params`` is trial ``refined_from``'s with ``param`` moved."""

    params: dict[str, Any]
    refined_from: int
    method: str
    param: str
    old: Any
    new: Any
    why: str
    combined: bool = False  # two sections' wins laid together, not a move along a knob

    @property
    def user_attrs(self) -> dict[str, Any]:
        return {"refined_from": self.refined_from, **({"combined": True} if self.combined else {})}

    def note(self) -> str:
        return (f"refining trial {self.refined_from} ({self.method}): "
                f"{self.param} {_text(self.old)} -> {_text(self.new)} ({self.why})")


def refinements(study: optuna.Study, trial: optuna.trial.FrozenTrial, floors: Iterable[str]) -> list[Refinement]:
    """The points to queue after ``trial`` finished (``floors``: the names of the study's
    quality-floor constraints); [] when it calls for none."""
    if "repeat_of" in trial.user_attrs:  # answered from storage: its earlier trial was refined
        return []
    floors = set(floors)
    if trial.state == TrialState.COMPLETE and "latency_s" in trial.user_attrs and is_feasible(trial):
        if is_neutral_point(trial):
            return []
        if not _best_so_far(study, trial):
            # a single-section win goes onto the best trial, which may have finished before it
            best = _best_feasible(study)
            wins = [t for t in _single_section_wins(study) if t.number == trial.number]
            return _combinations(study, best, wins) if best is not None and wins else []
        bolder = _first_neighbour(study, trial, +1, "bolder")
        return [p for p in (bolder, *_combinations(study, trial, _single_section_wins(study))) if p is not None]
    elif trial.state == TrialState.PRUNED and _is_screen_win(trial, _screen_stretch(study)):
        # a parked single-section screen (the compile or bf16 preset: beside caches at 2x it never
        # ranks in the best third, so it is never timed in full) still goes onto the best point
        best = _best_feasible(study)
        return _combinations(study, best, [trial]) if best is not None else []
    elif _misses_floor(trial, floors) and "fixed_params" in trial.system_attrs:  # a preset or refinement point
        if trial.user_attrs.get("combined"):
            return []  # the two wins do not add up; walking either back leads to the trials they came from
        safer = _first_neighbour(study, trial, -1, "safer")
        return [safer] if safer is not None else []
    return []


def _first_neighbour(study, trial, direction: int, why: str) -> Refinement | None:
    """The neighbour along the first knob that can move: a point at the edge of one line may
    still move along another."""
    for method, knob, line in _knobs(study, trial):
        point = _neighbour(study, trial, method, knob, line, direction, why)
        if point is not None:
            return point
    return None


def _active_sections(trial: optuna.trial.FrozenTrial) -> dict[str, str] | None:
    """The sections the trial's configuration sets (not at their neutral value), each with its
    one-line text; None when its configuration cannot be read (a plugin's method no longer
    registered)."""
    from ..accel.config import AccelConfig
    from ..search_spaces import config_from_params

    try:
        stored = trial.user_attrs.get("config")  # with derived fields: a schedule's mask
        config = AccelConfig.from_dict(stored) if stored else config_from_params(trial.params)
        return {name: text for name, text in config.summary() if text != "off"}
    except Exception:  # noqa: BLE001  (an unreadable point takes no part in combinations)
        return None


def _single_section_wins(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that set one section only and may pay laid over the best point: completed feasible
    ones whose speed-up's interval reaches ``MIN_WIN`` over the baseline (a gain the first look
    does not rule out), parked screens whose stretched ratio does (``_is_screen_win``), and
    single-section presets that met the floors whatever their speed. Not "beyond the interval":
    a trial's first look is a few rounds, whose interval on a busy machine spans a 10% gain
    either way (beside a CPU-bound process the compile preset, 1.16x on a quiet machine, once
    read 0.97x [0.81-1.18] and was left out), and a combination that does not pay costs one trial
    and is never picked."""
    stretch = _screen_stretch(study)
    out = []
    for t in completed(study):
        if "repeat_of" in t.user_attrs or not is_feasible(t):
            continue
        active = _active_sections(t)
        if active is not None and len(active) == 1 and (_shows_gain(t, stretch) or is_preset(t)):
            out.append(t)
    timed = {t.user_attrs.get(PROMOTED_FROM) for t in out}
    return out + [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
                  if _is_screen_win(t, stretch) and t.number not in timed]


def _screen_stretch(study: optuna.Study) -> float:
    """The factor that takes one screening ratio to its optimistic reading (``screen.SCREEN_Z``
    standard deviations of the study's timing noise)."""
    return math.exp(SCREEN_Z * timing_noise(study))


def _shows_gain(trial: optuna.trial.FrozenTrial, stretch: float) -> bool:
    """Whether the trial's own speed-up may be ``MIN_WIN`` over the baseline: a completed trial's
    interval reaches it, or a parked screen's ratio stretched by ``stretch`` does. Stretched, as a
    timed trial's interval is: compile over a schedule on demo-flux gains about 10% (2.33x to
    2.57x, both confirmed) while compile alone timed in full reads 1.00x, and its one-pair screens
    read 1.05x in one study and 0.86x in another; a bare cut at 1.03x combined it in the first and
    not in the second."""
    if trial.state == TrialState.COMPLETE:
        speed = speed_of(trial)
        reach = speed.high if speed.high is not None else speed.speedup
        return (reach or 0.0) > 1.0 + MIN_WIN
    screen = trial.user_attrs.get("screen") or {}
    return bool(trial.user_attrs.get(PARKED)) and (screen.get("speedup") or 0.0) * stretch > 1.0 + MIN_WIN


def _is_screen_win(trial: optuna.trial.FrozenTrial, stretch: float) -> bool:
    """A screen that sets one section, met the floors on its look and either shows a gain
    (``_shows_gain``: parked by its rank, successive halving keeps it from a full timing while
    faster points rank above it, but as a part of a combination it is as good a lead as a timed
    one: the combination is screened and timed on its own) or is a preset, parked or dropped by
    its screen (see the module's docstring)."""
    screen = trial.user_attrs.get("screen") or {}
    if not screen.get("meets") or not (is_preset(trial) or _shows_gain(trial, stretch)):
        return False
    active = _active_sections(trial)
    return active is not None and len(active) == 1


def _alone(trial: optuna.trial.FrozenTrial) -> float:
    """A win's speed-up alone: timed in full, or its screen's."""
    return speed_of(trial).speedup or (trial.user_attrs.get("screen") or {}).get("speedup") or 0.0


def _best_feasible(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    feasible = [t for t in completed(study) if is_feasible(t) and not is_neutral_point(t) and "repeat_of" not in t.user_attrs]
    return max(feasible, key=lambda t: speed_of(t).speedup or 0.0, default=None)


def _combinations(study: optuna.Study, best: optuna.trial.FrozenTrial, wins: list) -> list[Refinement]:
    """``best``'s point with a section of ``wins`` that ``best`` leaves off laid over it (that
    win's parameters of the section in place of ``best``'s): the fastest win with a gain of its
    own, and each preset without one not yet laid over ``best``'s set of sections; [] when there
    is none new to try."""
    mine = _active_sections(best)
    if mine is None:
        return []
    stretch = _screen_stretch(study)
    out, gain_taken = [], False
    for win in sorted(wins, key=lambda t: -_alone(t)):
        theirs = _active_sections(win)
        if win.number == best.number or not theirs or set(theirs) & set(mine):
            continue
        gain = _shows_gain(win, stretch)
        if gain and gain_taken:
            continue
        ((section, text),) = theirs.items()
        own = {k: v for k, v in win.params.items() if k.partition(".")[0] == section}
        # a preset with no gain of its own is tried once over each set of sections (bf16 over a
        # cache, again over a cache with compile: precision and compile interact), not over each
        # new best along a knob's line; both bf16 and w8a16 are, though they share a section (on
        # demo-flux w8a16's 0.98x screen ranked it above bf16's 0.93x, and only w8a16 was tried
        # over schedule + compile, where an earlier study found bf16 paying)
        if not gain and _laid_before(study, own, set(mine)):
            continue
        params = {k: v for k, v in best.params.items() if k.partition(".")[0] != section}
        params.update(own)
        if _known(study, params) or _conflicting(params) or any(r.params == params for r in out):
            continue
        out.append(Refinement(params, best.number, section, section, "off", text,
                              f"combined with trial {win.number}, {_alone(win):.2f}x alone", combined=True))
        gain_taken = gain_taken or gain
    return out


def _laid_before(study: optuna.Study, section: dict[str, Any], over: set[str]) -> bool:
    """Whether a combination (queued, running or finished) already laid ``section``'s parameters
    over a point that sets the sections ``over``."""
    from ..search_spaces import config_from_params

    name = next(iter(section)).partition(".")[0]
    for t in study.get_trials(deepcopy=False):
        if not t.user_attrs.get("combined"):
            continue
        queued = t.state in (TrialState.WAITING, TrialState.RUNNING)
        theirs = t.system_attrs.get("fixed_params", t.params) if queued else t.params
        if not all(k in theirs and _same(theirs[k], v) for k, v in section.items()):
            continue
        try:
            sections = {n for n, text in config_from_params(theirs).summary() if text != "off"}
        except Exception:  # noqa: BLE001  (an unreadable point: as if not laid)
            continue
        if sections - {name} == over:
            return True
    return False


def _conflicting(params: dict) -> bool:
    """Whether the point's methods declare a conflict (compile beside a method hooking the
    attention inside the blocks): the trial would fail before it ran."""
    from ..accel.config import ConflictError
    from ..search_spaces import config_from_params

    try:
        config_from_params(params)
    except ConflictError:
        return True
    except Exception:  # noqa: BLE001  (anything else is the trial's to report)
        pass
    return False


def _neighbour(study, trial, method: str, knob, line: _Line, direction: int, why: str) -> Refinement | None:
    """``trial``'s point one move bolder (``direction`` +1) or safer (-1) along ``knob``."""
    value = trial.params[knob.param]
    u = line.to_u(value)
    toward = knob.bolder * direction
    others = _on_line(study, trial, knob.param, line)
    if direction > 0:  # not past a known miss: halfway to the nearest one within a notch
        misses = [(v, n) for v, n, ok in others if (v - u) * toward > 0 and ok is False]
        bound = min(misses, key=lambda m: abs(m[0] - u), default=None)
        # a point placed one notch safer of a miss has that miss a notch away give or take the
        # rounding of stored values (4 significant digits): still a bisection, not a step onto it
        if bound is not None and abs(bound[0] - u) > line.notch * 1.01:
            bound = None
    else:  # halfway back to the nearest feasible point, normally the one it was refined from
        good = [(v, n) for v, n, ok in others if (v - u) * toward > 0 and ok is True]
        bound = min(good, key=lambda m: abs(m[0] - u), default=None)
        if bound is not None:
            why = f"safer, halfway to trial {bound[1]}"
    new = _step(line, u, toward, None if bound is None else bound[0])
    if new is None:
        return None
    params = {**trial.params, knob.param: new}
    if _known(study, params):
        return None
    return Refinement(params, trial.number, method, knob.param, value, new, why)


@dataclass(frozen=True)
class _Line:
    """A knob's distribution as a coordinate ``u`` running over [0, top]."""

    to_u: Callable[[Any], float]
    at: Callable[[float], Any]  # the distribution's value at (nearest to) u
    top: float
    notch: float
    min_move: float


def line_of(dist, off: Any = None) -> _Line | None:
    """The coordinate a knob moves along in ``dist``; None for a distribution without an order
    (non-numeric choices)."""
    if isinstance(dist, IntDistribution):
        lo, step = dist.low, dist.step
        return _Line(lambda v: (v - lo) / step, lambda u: int(lo + step * round(u)), (dist.high - lo) // step, 1.0, 1.0)
    if isinstance(dist, CategoricalDistribution):
        values = sorted(c for c in dist.choices if isinstance(c, Real) and not isinstance(c, bool) and c != off)
        if len(values) < 2 or len(values) != len([c for c in dist.choices if c != off]):
            return None
        return _Line(lambda v: float(min(range(len(values)), key=lambda i: abs(values[i] - v))),
                     lambda u: values[int(round(u))], len(values) - 1, 1.0, 1.0)
    if isinstance(dist, FloatDistribution):
        lo, hi = dist.low, dist.high
        if hi <= lo:
            return None
        if dist.log:
            span = math.log(hi / lo)
            return _Line(lambda v: math.log(v / lo) / span, lambda u: _clip(_round(lo * math.exp(u * span)), lo, hi),
                         1.0, math.log(LOG_FACTOR) / span, MIN_MOVE)
        if dist.step:
            s = dist.step
            return _Line(lambda v: (v - lo) / (hi - lo),
                         lambda u: _clip(_round(lo + s * round(u * (hi - lo) / s)), lo, hi), 1.0,
                         max(LINEAR_NOTCH, s / (hi - lo)), max(MIN_MOVE, s / (hi - lo)))
        return _Line(lambda v: (v - lo) / (hi - lo), lambda u: _clip(_round(lo + u * (hi - lo)), lo, hi), 1.0,
                     LINEAR_NOTCH, MIN_MOVE)
    return None


def _step(line: _Line, u: float, toward: int, bound: float | None) -> Any:
    """The value one notch from ``u`` toward ``toward`` (halfway to ``bound`` when given);
    None when that is no move, leaves the distribution or does not stop short of ``bound``."""
    target = (u + bound) / 2 if bound is not None else u + toward * line.notch
    target = min(max(target, 0.0), line.top)
    value = line.at(target)
    moved = (line.to_u(value) - u) * toward
    if moved < line.min_move - 1e-9:
        return None
    if bound is not None and (bound - line.to_u(value)) * toward <= 1e-9:
        return None
    return value


def _knobs(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> list[tuple[str, Any, _Line]]:
    """(method name, Knob, line) of every method the trial's parameters chose, with a knob to
    move: the cache section's first, then the others in section order; for a refinement point,
    the knob it was moved along before all."""
    from ..accel import methods as reg

    found = []
    for sec in sorted(reg.sections(), key=lambda s: (s.name != "cache", s.order)):
        if sec.key is not None:
            name = trial.params.get(f"{sec.name}.{sec.key}")
            if name is None or name == sec.default:
                continue
        else:
            name = sec.default
        try:
            method = reg.get_method(sec.name, name)
        except KeyError:  # a plugin's method no longer registered
            continue
        knob = method.knob
        if knob is None or knob.param not in trial.params or knob.param not in trial.distributions:
            continue
        if knob.off is not None and trial.params[knob.param] == knob.off:
            continue
        line = line_of(trial.distributions[knob.param], knob.off)
        if line is not None:
            found.append((method.name, knob, line))
    origin = trial.user_attrs.get("refined_from")
    trials = study.get_trials(deepcopy=False)
    if isinstance(origin, int) and 0 <= origin < len(trials):  # a study's trial numbers index its trials
        before = trials[origin].params
        found.sort(key=lambda f: _same(before.get(f[1].param), trial.params[f[1].param]))
    return found


def _best_so_far(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Whether no other completed feasible trial is at least as fast as ``trial``."""
    mine = speed_of(trial).speedup
    if not mine:
        return False
    others = [speed_of(t).speedup or 0.0 for t in completed(study)
              if t.number != trial.number and is_feasible(t) and t.user_attrs.get("repeat_of") != trial.number]
    return all(mine > s for s in others)


def _misses_floor(trial: optuna.trial.FrozenTrial, floors: set[str]) -> bool:
    if trial.state == TrialState.PRUNED:  # pruned only for missing a floor on the first prompt
        return "prune_reason" in trial.user_attrs
    return trial.state == TrialState.COMPLETE and any(trial.constraints.get(f, 0.0) > 0 for f in floors)


def _outcome(trial: optuna.trial.FrozenTrial) -> bool | None:
    """True: feasible; False: missed a floor; None: nothing known (failed, waiting, running)."""
    if trial.state == TrialState.PRUNED:
        return False if "prune_reason" in trial.user_attrs else None
    if trial.state != TrialState.COMPLETE or "latency_s" not in trial.user_attrs:
        return None
    if is_feasible(trial):
        return True
    # an infeasible trial is a miss on the line whichever constraint it broke: bolder breaks it too
    return False


def _on_line(study: optuna.Study, trial: optuna.trial.FrozenTrial, param: str, line: _Line):
    """(u, number, outcome) of the other finished trials whose parameters differ from
    ``trial``'s in ``param`` only."""
    rest = {k: v for k, v in trial.params.items() if k != param}
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if t.number == trial.number or param not in t.params or t.params.keys() != trial.params.keys():
            continue
        if all(_same(t.params[k], v) for k, v in rest.items()):
            ok = _outcome(t)
            if ok is not None:
                out.append((line.to_u(t.params[param]), t.number, ok))
    return out


def _known(study: optuna.Study, params: dict[str, Any]) -> bool:
    """Whether a trial of the study (queued, running or finished) is at ``params``."""
    for t in study.get_trials(deepcopy=False):
        # a queued or running trial's point is its fixed parameters (a running one is still asking)
        queued = t.state in (TrialState.WAITING, TrialState.RUNNING)
        theirs = t.system_attrs.get("fixed_params", t.params) if queued else t.params
        if theirs.keys() == params.keys() and all(_same(theirs[k], v) for k, v in params.items()):
            return True
    return False


def _round(v: float) -> float:
    return float(f"{v:.{_DIGITS}g}")


def _clip(v: float, lo: float, hi: float) -> float:
    return min(max(v, lo), hi)


def _text(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


__all__ = ["LINEAR_NOTCH", "LOG_FACTOR", "MIN_MOVE", "REFINING_SAMPLERS", "Refinement", "line_of", "refinements",
           "refines"]
