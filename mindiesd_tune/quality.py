"""Quality over a set of prompts: each prompt's scores, and the aggregates floors are judged on.

A trial keeps every prompt's value of every metric; its ``metrics`` hold, per metric, the mean
(under the bare name, ``psnr``), the worst and best prompt (``psnr.min``, ``psnr.max``), the
10th and 90th percentiles when there are 8 or more prompts (``psnr.p10``, ``psnr.p90``), and
the confidence bound of the mean on the worse side (``psnr.bound``).

Why a bound: the pick rule takes the fastest point that meets the floors, so it lands on the
floors' edge, judged on a few prompts. A mean of 30.3 dB over 2 prompts said little about the
next prompt (28.3 dB on four others). A floor on the mean can be judged on the one-sided 90%
Student-t bound of the mean over the prompts (the lower bound for a metric where higher is
better): a mean that sits on the floor with a wide spread fails it. A study judges so when no
held-out prompts check its pick; with them it judges the tuning prompts' mean and lets the
held-out prompts, which played no part in the choice, do the correcting
(``tuner.options.judge_for``).

An output identical to the baseline's has infinite PSNR. Such prompts say nothing about how
far the others differ: the aggregates take the finite values when there are any, as the mean
always did, and are infinite only when every prompt is identical.
"""

from __future__ import annotations

import math
import statistics

# metrics where a lower value is better (a distance); every other metric is better higher
LOWER_IS_BETTER = frozenset({"lpips", "kid_clip", "kvd_clip", "fvd", "kvd_i3d"})
# aggregates a floor may name: METRIC.AGG
AGGREGATES = ("mean", "min", "max", "p10", "p90")
# percentiles need this many prompts to mean something
PERCENTILE_MIN_PROMPTS = 8
# the confidence of the one-sided bound floors on the mean are judged on
BOUND_CONFIDENCE = 0.90
# how a floor on the mean is judged: on its confidence bound, or on the point value
JUDGES = ("bound", "mean")


def higher_is_better(metric: str) -> bool:
    return metric.split(".")[0] not in LOWER_IS_BETTER


def key(metric: str, aggregate: str = "mean") -> str:
    """The metrics key of an aggregate: ``psnr`` for the mean, ``psnr.min`` for the worst prompt."""
    return metric if aggregate == "mean" else f"{metric}.{aggregate}"


def _values(values: list[float]) -> list[float]:
    finite = [v for v in values if not math.isinf(v)]
    return finite or list(values)


def _t(n: int) -> float:
    """The one-sided BOUND_CONFIDENCE quantile of Student's t with n-1 degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(BOUND_CONFIDENCE, n - 1))


def bound(values: list[float], higher_better: bool = True) -> float:
    """The one-sided confidence bound of the mean on the worse side; the value itself for one prompt."""
    v = _values(values)
    mean = statistics.fmean(v)
    if len(v) < 2 or math.isinf(mean):
        return mean
    half = _t(len(v)) * statistics.stdev(v) / math.sqrt(len(v))
    return mean - half if higher_better else mean + half


def percentile(values: list[float], q: int) -> float:
    """The ``q``-th percentile (a multiple of 10), interpolated between the values."""
    return statistics.quantiles(_values(values), n=10, method="inclusive")[q // 10 - 1]


def aggregate(per_prompt: list[dict[str, float]]) -> dict[str, float]:
    """Each metric's mean (bare name) and its aggregates, from the per-prompt scores."""
    out: dict[str, float] = {}
    for metric in per_prompt[0]:
        values = [float(s[metric]) for s in per_prompt if metric in s]
        v = _values(values)
        out[metric] = statistics.fmean(v)
        out[f"{metric}.min"] = min(v)
        out[f"{metric}.max"] = max(v)
        if len(values) >= PERCENTILE_MIN_PROMPTS:
            out[f"{metric}.p10"] = percentile(values, 10)
            out[f"{metric}.p90"] = percentile(values, 90)
        out[f"{metric}.bound"] = bound(values, higher_is_better(metric))
    return out


def worst(metrics: dict[str, float], metric: str) -> float | None:
    """The worst prompt's value of ``metric``: its min where higher is better, else its max."""
    return metrics.get(key(metric, "min" if higher_is_better(metric) else "max"))


def judged_on(judge: str, prompts: int) -> str:
    """What a floor on the mean is judged on, in words (the profile and report say it)."""
    if judge == "mean":
        return f"the mean over {prompts} prompt(s)"
    if prompts < 2:
        return "the one prompt's value (a bound needs two prompts)"
    return f"the one-sided {BOUND_CONFIDENCE:.0%} confidence bound of the mean over {prompts} prompts"
