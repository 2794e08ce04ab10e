"""The confirmation phase: the points near the front re-measured in full before the pick.

Every candidate gets one pass of interleaved rounds on every prompt, the point the pick then
falls on is topped up to the precision, and that point is timed head to head against the best
preset alone. All of it within the time the study's plan gives the phase (``tuner.plan``).
"""

from __future__ import annotations

import time
from typing import Callable

import optuna

from ..metrics import Comparison
from ..quality import worst
from ..search_spaces import config_from_params
from .objectives import Constraints
from .options import TuneOptions
from .outcome import INTERRUPTED
from .pick import (
    HELDOUT,
    VERSUS_PRESET,
    best_preset,
    completed,
    confirmations,
    failed_heldout,
    is_feasible,
    is_neutral_point,
    pick,
    speed_of,
)
from .protocol import Worker

# At most this many points on or near the front are re-measured before the pick, those whose
# speed-up reaches within this share of the best one's, or whose interval reaches it.
CONFIRM_MAX = 3
CONFIRM_MARGIN = 0.1
CONFIRM_PRECISION = TuneOptions.confirm_precision
# how many times the held-out check draws the next candidates when every one drawn missed
GATE_DRAWS = 5


def confirmation_candidates(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Feasible points faster than the baseline on or near the front: the best speed-up and those
    within CONFIRM_MARGIN of it or whose interval reaches the best speed-up, one per point, at most
    CONFIRM_MAX, fastest first; and the fastest preset (``best_preset``) second, wherever it reads."""
    conf = confirmations(study)
    aside = failed_heldout(study)
    feasible = [t for t in completed(study) if is_feasible(t) and not is_neutral_point(t)
                and "repeat_of" not in t.user_attrs and str(t.number) not in conf and t.number not in aside]
    speeds = {t.number: speed_of(t) for t in feasible}
    faster = sorted((t for t in feasible if (speeds[t.number].speedup or 0) > 1.0),
                    key=lambda t: -speeds[t.number].speedup)
    if not faster:
        return []
    best = speeds[faster[0].number]
    # a point whose interval does not reach the best one's speed-up is not a contender: its
    # rounds go to the best point instead (beside a CPU-bound process a 1.44x [1.18-2.36] point
    # took a fifth of the time while the best one, 2.52x [1.88-3.32], stopped at ±12%)
    near = [t for t in faster if speeds[t.number].speedup >= (1 - CONFIRM_MARGIN) * best.speedup
            or (speeds[t.number].high or 0) >= best.speedup]
    unique: dict = {}
    for t in near:
        unique.setdefault(t.user_attrs.get("config_id") or tuple(sorted(t.params.items())), t)
    todo = list(unique.values())[:CONFIRM_MAX]
    # the best preset alone is what the search has to beat: it is confirmed beside the best point,
    # right after it (the time left for the others may run out), so the two are compared alike
    preset = best_preset(study)
    if preset is None or str(preset.number) in conf or todo[0].number == preset.number:
        return todo
    others = [t for t in todo[1:] if t.number != preset.number]
    return [todo[0], preset, *others][:max(CONFIRM_MAX, 2)]


def _config_of(t: optuna.trial.FrozenTrial) -> dict:
    return t.user_attrs.get("config") or config_from_params(t.params).to_dict()


def _confirmed_entry(cmp: Comparison) -> dict:
    """What the study stores of a confirmation: the pooled figures and the per-round ratios (a
    later top-up pools with them)."""
    b, c = cmp.baseline, cmp.candidate
    return {
        "speedup": cmp.speedup, "speedup_low": cmp.speedup_low, "speedup_high": cmp.speedup_high,
        "latency_s": c.median_s, "latency_iqr_s": c.iqr_s, "cpu_s": c.cpu_s,
        "baseline_s": b.median_s, "baseline_iqr_s": b.iqr_s, "baseline_cpu_s": b.cpu_s,
        "rounds": len(c.samples), "ratios": list(cmp.ratios) if cmp.ratios else None,
        "samples": {"baseline": list(b.samples), "candidate": list(c.samples)},
    }


def _pooled_entry(before: dict, payload: dict) -> dict:
    """A stored confirmation and a top-up of the same point as one measurement."""
    return _confirmed_entry(Comparison.pooled([Comparison.from_dict(_as_payload(before)), Comparison.from_dict(payload)]))


def confirm_front(study: optuna.Study, worker: Worker, repeats: int, log: Callable[[str], None] = print,
                  time_limit_s: float | None = None, precision: float | None = CONFIRM_PRECISION,
                  how: str = "fastest", round_s: float | None = None) -> dict:
    """Re-measure the confirmation candidates in the worker (it holds the loaded pipeline), in
    three steps, within ``time_limit_s`` (no step started once it is spent):

    1. every candidate: ``repeats`` interleaved rounds against the baseline on every prompt, the
       best first (always measured), the best preset second, and no other started once the time is
       spent (those left stay unconfirmed);
    2. the point the pick now falls on (``pick(study, how)``): topped up with more rounds, pooled
       with its first ones, until its interval is within ``precision`` of its speed-up, with the
       time left but for what step 3 needs. The precision goes where the profile's figures come
       from, whichever candidate that turns out to be;
    3. that point timed head to head against the best preset alone (``Evaluator.versus``), until
       the ratio's interval leaves out 1.0 or is within ``precision``; stored as ``VERSUS_PRESET``.

    ``time_limit_s`` is a cap: each measurement is given the time left (a first pass stops
    between prompts when the next would end after it), and the phase ends with the rounds it
    got, which the last line says. ``round_s``, one round's expected time, lets a short cap ask
    for fewer rounds per prompt rather than overrun.

    Stored in the study's ``confirmed`` attribute by trial number, after each measurement."""
    found = confirmations(study)
    todo = confirmation_candidates(study)
    if not todo:
        return found
    aim = f"; then the pick's until within ±{precision:.0%}" if precision else ""
    log(f"confirming {len(todo)} point(s) near the front: {repeats} interleaved rounds on every prompt{aim} ...")
    run = _Confirmation(study, worker, repeats, log, time_limit_s, precision, how, round_s, found)
    todo = _gate_candidates(study, worker, todo, log, run.left, run.held * (round_s or 0.0))
    if not run.first_passes(todo):
        return found
    check_heldout(study, worker, how, log, run.left, cost_s=run.held * (round_s or 0.0))
    # the held-out check may have moved the pick to a point with no first pass (every candidate
    # drawn missed, and the next pick held): it gets one while time is left, not an unconfirmed pick
    leader, _ = pick(study, how)
    if (leader is not None and not is_neutral_point(leader) and str(leader.number) not in found
            and not run.first_passes([leader])):
        return found
    if not run.top_up():
        return found
    run.head_to_head()
    spent = time.monotonic() - run.started
    cap = f" of its {time_limit_s:.0f} s" if time_limit_s is not None else ""
    log(f"confirmation: {run.rounds} interleaved rounds in {spent:.0f} s{cap}")
    study.set_user_attr("confirmation", {"rounds": run.rounds, "seconds": round(spent, 3), "cap_seconds": time_limit_s})
    return found


class _Confirmation:
    """``confirm_front``'s three steps and the time they share; ``found`` is filled as they go."""

    def __init__(self, study, worker: Worker, repeats: int, log, time_limit_s, precision, how, round_s, found: dict):
        self.study, self.worker, self.repeats, self.log = study, worker, repeats, log
        self.time_limit_s, self.precision, self.how, self.round_s = time_limit_s, precision, how, round_s
        self.found, self.rounds, self.first_pass_s = found, 0, {}
        # a first pass's seconds per prompt it measured (its warm-up included): what starting one
        # more measurement of the point costs, since a measurement finishes the prompt it started
        self.per_prompt_s: dict[int, float] = {}
        self.started = time.monotonic()
        # the pick's check on the held-out prompts: one call per held-out prompt for the baseline
        # (once) and one for the point, about a round each, and room for one fallback point's
        # calls should the first miss a floor there; kept back from the first passes
        self.held = len((study.user_attrs.get("holdout") or {}).get("prompts") or [])
        self.heldout_s = 1.5 * self.held * (round_s or 0.0)

    def left(self, keep: float = 0.0) -> float | None:
        return None if self.time_limit_s is None else self.time_limit_s - (time.monotonic() - self.started) - keep

    def fitting(self, rounds: int, keep: float = 0.0) -> int:
        """Rounds per prompt that fit the time left (at least two, even), at most ``rounds``."""
        if self.left() is None or not self.round_s:
            return rounds
        prompts = len(self.study.user_attrs.get("workload", {}).get("prompts") or [None])
        fit = int(self.left(keep) // (self.round_s * prompts))
        return max(2, min(rounds, fit - fit % 2))

    def first_passes(self, todo: list) -> bool:
        """Step 1 -> False when interrupted."""
        found, log = self.found, self.log
        for i, t in enumerate(todo):
            # the best point's first pass starts whenever time is left; the others only while the
            # held-out check's share stays untouched
            if self.left() is not None and (self.left() <= 0 or (i and self.left(self.heldout_s) <= 0)):
                log(f"confirmation used its {self.time_limit_s:.0f} s; trial(s) {', '.join(str(u.number) for u in todo[i:])} "
                    "stay unconfirmed")
                break
            t0 = time.monotonic()
            asked = self.fitting(self.repeats, self.heldout_s)
            outcome = self.worker.confirm(_config_of(t), asked, **_cap(self.left(self.heldout_s)))
            self.first_pass_s[t.number] = time.monotonic() - t0
            if outcome.kind == INTERRUPTED:
                return False
            if not outcome.ok:
                log(f"trial {t.number} could not be re-measured ({outcome.reason}); it stays unconfirmed")
                continue
            found[str(t.number)] = _confirmed_entry(Comparison.from_dict(outcome.result))
            self.rounds += found[str(t.number)]["rounds"]
            self.per_prompt_s[t.number] = self.first_pass_s[t.number] / max(1, found[str(t.number)]["rounds"] // max(1, asked))
            log(f"confirmed trial {t.number}: {speed_of(t, found).text()} over {found[str(t.number)]['rounds']} rounds "
                f"(first measured {speed_of(t).text()})")
            self.study.set_user_attr("confirmed", found)
        return True

    def top_up(self) -> bool:
        """Step 2 -> False when interrupted."""
        found, study = self.found, self.study
        leader, _ = pick(study, self.how)
        mine = found.get(str(leader.number)) if leader is not None else None
        if not self.precision or mine is None or Comparison.from_dict(_as_payload(mine)).relative_spread <= self.precision:
            return True
        # kept for step 3: about one pass of the leader's own (two settings cost no more than the
        # baseline and one)
        reserve = self.first_pass_s.get(leader.number, 0.0) if _head_to_head(study, self.how, found) else 0.0
        budget = None if self.left() is None else self.left() - reserve
        if budget is not None and budget < max(self.per_prompt_s.get(leader.number, 0.0), 1e-9):
            return True
        outcome = self.worker.confirm(_config_of(leader), self.fitting(self.repeats), precision=self.precision,
                                      max_s=budget, prior_ratios=mine["ratios"])
        if outcome.kind == INTERRUPTED:
            return False
        if outcome.ok:
            self.rounds += len(Comparison.from_dict(outcome.result).ratios or [])
            found[str(leader.number)] = _pooled_entry(mine, outcome.result)
            study.set_user_attr("confirmed", found)
            self.log(f"topped up trial {leader.number}: {speed_of(leader, found).text()} over "
                     f"{found[str(leader.number)]['rounds']} rounds")
        else:
            self.log(f"trial {leader.number} could not be topped up ({outcome.reason})")
        return True

    def head_to_head(self) -> None:
        """Step 3."""
        pair = _head_to_head(self.study, self.how, self.found)  # the pooled figures may have moved the pick
        if pair is None or (self.left() is not None and self.left() < max(self.per_prompt_s.get(pair[0].number, 0.0), 1e-9)):
            return
        leader, preset = pair
        outcome = self.worker.versus(_config_of(preset), _config_of(leader), self.fitting(self.repeats),
                                     precision=self.precision, max_s=None if self.left() is None else max(0.0, self.left()))
        if outcome.ok:
            r = Comparison.from_dict(outcome.result)
            self.rounds += len(r.candidate.samples)
            self.study.set_user_attr(VERSUS_PRESET, {
                "pick": leader.number, "preset": preset.number, "speedup": r.speedup, "speedup_low": r.speedup_low,
                "speedup_high": r.speedup_high, "rounds": len(r.candidate.samples)})
            self.log(f"head to head, trial {leader.number} runs {r.speedup:.2f}x [{r.speedup_low:.2f}-{r.speedup_high:.2f}] "
                     f"as fast as the best preset, trial {preset.number}")
        elif outcome.kind != INTERRUPTED:
            self.log(f"trial {leader.number} could not be timed against the best preset ({outcome.reason})")


def _gate_candidates(study, worker, todo, log, left, cost_s: float) -> list:
    """The candidates measured on the held-out prompts before any is timed (a check costs a call
    per held-out prompt; a first pass costs rounds on every prompt): those that miss a floor
    there are not confirmed, and the next ones take their places (``confirmation_candidates``
    draws again without them), up to GATE_DRAWS draws, until every candidate on the slate has
    held. A floor judged on the tuning prompts' mean lets many points through on its edge; the
    held-out prompts set them aside, and the points with a margin lie a draw or two down (a
    10-minute demo-flux study: a bolder MagCache and a 6-of-20-step schedule missed, the
    7-of-20 preset held, and three compiled bf16 schedules just below them were never checked
    while the slate stopped at the first point that held). A candidate there was no time to
    check stays on the slate, unchecked."""
    if _heldout_gate(study) is None or not hasattr(worker, "heldout"):
        return todo
    for _ in range(GATE_DRAWS):
        for t in todo:
            done = (study.user_attrs.get(HELDOUT) or {}).get(str(t.number))
            if done is None and (left() is None or left() >= _check_cost(study, cost_s)):
                measure_heldout(study, worker, t, log)
        todo = confirmation_candidates(study)  # without the points set aside just now
        checked = study.user_attrs.get(HELDOUT) or {}
        if all(str(t.number) in checked for t in todo) or (left() is not None and left() < _check_cost(study, cost_s)):
            break
    return todo


def _check_cost(study: optuna.Study, cost_s: float) -> float:
    """One held-out check's time: the baseline's calls on the held-out prompts come once (the
    first check), the point's with every check."""
    return 0.5 * cost_s if study.user_attrs.get(HELDOUT) else cost_s


def _heldout_gate(study: optuna.Study):
    """(the floors, the baseline's metrics) the held-out check judges by; None without held-out prompts.

    There a floor is judged on its own aggregate (the mean, the worst prompt, ...), never on the
    mean's confidence bound, whatever ``--judge`` says: the bound corrects the tuning prompts'
    winner's curse (the point was chosen because it did well on them), and the held-out prompts
    played no part in choosing it. Over two prompts the bound's t factor (3.08 at one degree of
    freedom) would also fail a point whose every held-out prompt is above the floor."""
    if not study.user_attrs.get("holdout"):
        return None
    floors = Constraints.from_spec({"floors": study.user_attrs.get("floors") or [], "judge": "mean"})
    return floors, study.user_attrs.get("baseline_metrics") or {}


def measure_heldout(study: optuna.Study, worker: Worker, trial: optuna.trial.FrozenTrial,
                    log: Callable[[str], None] = print) -> bool | None:
    """``trial``'s quality on the held-out prompts, judged by the study's floors and stored in its
    ``HELDOUT`` attribute -> whether it meets them (None: not measured)."""
    gate = _heldout_gate(study)
    if gate is None or not hasattr(worker, "heldout"):
        return None
    floors, baseline = gate
    outcome = worker.heldout(_config_of(trial))
    if not outcome.ok:
        if outcome.kind != INTERRUPTED:
            log(f"trial {trial.number} could not be measured on the held-out prompts ({outcome.reason})")
        return None
    m = outcome.result["metrics"]
    meets = floors.meets(m, baseline)
    results = dict(study.user_attrs.get(HELDOUT) or {})
    results[str(trial.number)] = {"metrics": m, "per_prompt": outcome.result["per_prompt"],
                                  "prompts": len(outcome.result["prompts"]), "meets": meets}
    study.set_user_attr(HELDOUT, results)
    figures = ", ".join(f"{f.metric} {_fmt(m.get(f.metric))} (worst {_fmt(worst(m, f.metric))})"
                        for f in floors.floors) or "no floor"
    n = len(outcome.result["prompts"])
    log(f"held out: trial {trial.number} {'meets' if meets else 'misses'} the floors on {n} prompts the search "
        f"never saw: {figures}")
    return meets


def check_heldout(study: optuna.Study, worker: Worker, how: str, log: Callable[[str], None] = print,
                  left: Callable[[], float | None] = lambda: None, cost_s: float = 0.0) -> dict:
    """Measure the pick's quality on the held-out prompts (``Evaluator.heldout``) and judge the
    floors there; a pick that misses one there is set aside (``pick`` passes over it) and the
    next pick is checked, while a check (about ``cost_s``) fits in the time left. Stored as the
    study's ``HELDOUT`` attribute by trial number; returns it."""
    for _ in range(CONFIRM_MAX + 2):
        results = study.user_attrs.get(HELDOUT) or {}
        leader, _ = pick(study, how)
        if leader is None or is_neutral_point(leader) or str(leader.number) in results:
            return dict(results)
        if left() is not None and left() < _check_cost(study, cost_s):
            log(f"no time left to measure trial {leader.number} on the held-out prompts; its held-out quality "
                "is not known")
            return dict(results)
        if measure_heldout(study, worker, leader, log) is None:
            return dict(study.user_attrs.get(HELDOUT) or {})
    return dict(study.user_attrs.get(HELDOUT) or {})


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def _cap(left: float | None) -> dict:
    """A first pass's time cap, where there is one (an evaluator may not take it otherwise)."""
    return {} if left is None else {"max_s": max(0.0, left)}


def _head_to_head(study: optuna.Study, how: str, found: dict):
    """(the point the pick falls on, the best preset alone) when both are confirmed and are two
    different settings; None otherwise."""
    leader, _ = pick(study, how)
    preset = best_preset(study, found)
    if leader is None or preset is None or leader.number == preset.number:
        return None
    if str(leader.number) not in found or str(preset.number) not in found or _config_of(leader) == _config_of(preset):
        return None
    return leader, preset


def _as_payload(entry: dict) -> dict:
    """A stored confirmation in ``Comparison.as_dict``'s shape."""
    samples = entry.get("samples") or {}
    return {"baseline": {"median_s": entry["baseline_s"], "samples": samples.get("baseline"), "cpu_s": entry.get("baseline_cpu_s")},
            "candidate": {"median_s": entry["latency_s"], "samples": samples.get("candidate"), "cpu_s": entry.get("cpu_s")},
            "speedup": entry["speedup"], "speedup_low": entry.get("speedup_low"), "speedup_high": entry.get("speedup_high"),
            "ratios": entry.get("ratios")}
