"""The screen: which screened points go on to full timing.

A screen is one untimed call on the first prompt and one interleaved timing pair
(``Evaluator.screen``): a quality on one prompt and one speed ratio. One ratio is noisy (beside
a CPU-bound process on 2 cores, single demo-flux ratios ranged from 1.35 to 6.14 around 2.5),
so a screened point is dropped only when even an optimistic reading of it cannot reach the
front: its ratio stretched by the timing noise is still no faster than the baseline (where the
baseline is the best point on the objective, as on PSNR), or still slower than a point timed in
full that is at least as good on the objective.

A screen that may reach the front still waits its turn: as in asynchronous successive halving
(ASHA, Li et al. 2020; Optuna's SuccessiveHalvingPruner), it is timed in full only while its
ratio ranks in the top 1/``promotion`` of the screens so far (``rank``). Otherwise it is parked,
and timed in full later if enough new screens rank below it (``to_promote``): in a budget that
buys a handful of full timings they go to the best of several screens, not to whichever came
first. Points the warm start brought from a stored front skip the queue: a measured front is
better evidence than one ratio.

Optuna's pruning API (``Trial.report`` / ``should_prune``) refuses multi-objective studies
(NotImplementedError in Optuna 5), so the screen's figures are stored as the trial's ``screen``
attribute and the decisions are these functions; a dropped or parked point is told to Optuna as
PRUNED, as a pruner's would be.
"""

from __future__ import annotations

import math
import statistics

import optuna

from .pick import completed, is_feasible, is_neutral_point, speed_of

# Standard deviations of a single log ratio that stretch a screened ratio to its optimistic
# reading (about one point in 40 that could reach the front is dropped by chance).
SCREEN_Z = 2.0
# The log ratios' standard deviation assumed before the baseline trial measured it, and the
# least ever assumed (a quiet GPU's ratios can look identical over six rounds).
DEFAULT_LOG_SD = 0.15
MIN_LOG_SD = 0.05
# Objectives on which the baseline (the output against itself) is as good as any point can be: a
# point no faster than the baseline is dominated by it. Not so for the CLIP score (a point can
# score higher) or the weight bytes (a slower quantised point has fewer).
BASELINE_IS_BEST = ("psnr", "ssim", "ms_ssim", "lpips")
# Successive halving's reduction factor: a third of the screens go on to full timing, as in
# ASHA's default (Optuna's SuccessiveHalvingPruner uses 4; one full timing costs several screens
# here, and the front needs more than the very best point). 1 times every screen that may reach
# the front at once.
PROMOTION = 3
PARKED = "parked"  # trial user attribute: a screen waiting for its rank to rise
PROMOTED_FROM = "promoted_from"  # trial user attribute: the parked screen this full timing is of


def timing_noise(study: optuna.Study) -> float:
    """The standard deviation of one log ratio, from the unaccelerated trial's rounds (the
    baseline against itself: any spread there is the machine's)."""
    for t in completed(study):
        if is_neutral_point(t):
            samples = (t.user_attrs.get("latency") or {}).get("samples") or []
            base = (t.user_attrs.get("baseline_latency") or {}).get("samples") or []
            logs = [math.log(b / c) for b, c in zip(base, samples) if b > 0 and c > 0]
            if len(logs) >= 3:
                return max(MIN_LOG_SD, statistics.stdev(logs))
    return DEFAULT_LOG_SD


def verdict(study: optuna.Study, screen: dict, objective: str, maximize: bool, meets_floors: bool = True) -> str | None:
    """Why a screened point cannot reach the front (its reason as a PRUNED trial), or None to time
    it in full. ``screen``: ``{"speedup": ratio, "metrics": {...}}`` of the first prompt."""
    ratio = screen.get("speedup")
    if not ratio:
        return None
    optimistic = ratio * math.exp(SCREEN_Z * timing_noise(study))
    if optimistic <= 1.0 and objective in BASELINE_IS_BEST:
        return f"screened at {ratio:.2f}x: no faster than the baseline within timing noise"
    quality = (screen.get("metrics") or {}).get(objective)
    if quality is None or not meets_floors:
        return None
    for t in completed(study):
        if not is_feasible(t) or is_neutral_point(t) or "latency_s" not in t.user_attrs:
            continue
        other = (t.user_attrs.get("metrics") or {}).get(objective)
        speed = speed_of(t).speedup
        if other is None or speed is None:
            continue
        as_good = other >= quality if maximize else other <= quality
        if as_good and speed > optimistic:
            return (f"screened at {ratio:.2f}x: trial {t.number} is faster ({speed:.2f}x) at {objective} "
                    f"{_fmt(other)} against {_fmt(quality)}")
    return None


def _rung(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The screens with a ratio (a point pruned on its look's quality has none), best first: those
    that met the floors on their look and fit the weight cap before those that did not, then by
    ratio; a full timing of a parked screen and an answer from storage are not screens of their own."""
    screens = [t for t in study.get_trials(deepcopy=False)
               if (t.user_attrs.get("screen") or {}).get("speedup") is not None
               and PROMOTED_FROM not in t.user_attrs and "repeat_of" not in t.user_attrs]

    def order(t):
        s = t.user_attrs["screen"]
        return (not (s.get("meets", True) and s.get("within_caps", True)), -s["speedup"], t.number)
    return sorted(screens, key=order)


def ranks(objective: str, promotion: int) -> bool:
    """Whether screens wait their rank: on a fidelity objective, where the question is how fast at
    the floor and the speed ranks them. On the CLIP score or the weight bytes a slower point can
    be on the front, so every screen that may reach it is timed at once."""
    return promotion > 1 and objective in BASELINE_IS_BEST


def rank(study: optuna.Study, number: int, promotion: int = PROMOTION, objective: str = "psnr") -> str | None:
    """Why trial ``number``'s screen (stored as its ``screen`` attribute) is parked for now, or None
    when it ranks in the top 1/``promotion`` of the screens so far, itself included."""
    if not ranks(objective, promotion):
        return None
    screens = _rung(study)
    top = len(screens) // promotion
    place = next((i for i, t in enumerate(screens) if t.number == number), None)
    if place is None or place < top:
        return None
    ratio = screens[place].user_attrs["screen"]["speedup"]
    return (f"screened at {ratio:.2f}x: ranked {place + 1} of {len(screens)} screens, and the best 1/{promotion} "
            f"go on to full timing; parked until enough new screens rank below it")


def _waiting(study: optuna.Study, screens: list) -> list[optuna.trial.FrozenTrial]:
    """Those of ``screens`` that are parked and have no full timing yet."""
    done = {t.user_attrs.get(PROMOTED_FROM) for t in study.get_trials(deepcopy=False)}
    return [t for t in screens
            if t.user_attrs.get(PARKED) and t.state == optuna.trial.TrialState.PRUNED and t.number not in done]


def to_promote(study: optuna.Study, promotion: int = PROMOTION, objective: str = "psnr") -> list[optuna.trial.FrozenTrial]:
    """Parked screens that now rank in the top 1/``promotion`` and have no full timing yet."""
    if not ranks(objective, promotion):
        return []
    screens = _rung(study)
    return _waiting(study, screens[:len(screens) // promotion])


def best_parked(study: optuna.Study, promotion: int = PROMOTION, objective: str = "psnr") -> list[optuna.trial.FrozenTrial]:
    """The best screen so far when it is parked and has no full timing: what the search times in
    full at its last chance when nothing has been timed in full yet (too few screens fit the
    budget for any to rank among the best third)."""
    if not ranks(objective, promotion):
        return []
    return _waiting(study, _rung(study)[:1])


def _fmt(v: float) -> str:
    return "inf" if isinstance(v, float) and math.isinf(v) else f"{v:.4g}"
