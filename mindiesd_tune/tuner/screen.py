"""The screen: which screened points go on to full timing.

A screen is one untimed call on the first prompt and one interleaved timing pair
(``Evaluator.screen``): a quality on one prompt and one speed ratio. One ratio is noisy (beside
a CPU-bound process on 2 cores, single demo-flux ratios ranged from 1.35 to 6.14 around 2.5),
so a screened point is dropped only when even an optimistic reading of it cannot reach the
front: its ratio stretched by the timing noise is still no faster than the baseline (where the
baseline is the best point on the objective, as on PSNR), or still slower than a point timed in
full that is at least as good on the objective.

Optuna's pruning API (``Trial.report`` / ``should_prune``) refuses multi-objective studies
(NotImplementedError in Optuna 5), so the screen's figures are stored as the trial's ``screen``
attribute and the decision is this function; a dropped point is told to Optuna as PRUNED, as a
pruner's would be.
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


def _fmt(v: float) -> str:
    return "inf" if isinstance(v, float) and math.isinf(v) else f"{v:.4g}"
