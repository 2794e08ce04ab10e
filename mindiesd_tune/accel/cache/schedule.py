"""Calibrated step schedule: which denoising steps to compute for a compute budget.

From a baseline call's block stack residuals, choose the steps to compute so that, reusing the
residual of the last computed step on the others, the error made while reusing is smallest:
measured exactly for every pair of steps (``StepStatistics.residual_distance``), or bounded
by the change accumulated step after step (``StepStatistics.step_change()``). This is the
idea behind MagCache's accumulated error and cache-dit's ``steps_computation_mask``, fixed
ahead of the call instead of decided during it: the schedule costs nothing at run time and a
profile that stores it reproduces the same steps on every call.
"""

from __future__ import annotations

import math
from typing import Sequence


def rescale(compute_steps: Sequence[int], n_steps: int) -> list[int]:
    """A mask made for ``compute_steps[-1] + 1`` steps, mapped onto a call of ``n_steps``
    (the steps section changed the count): each computed step to its nearest relative position."""
    steps = sorted(compute_steps)
    if not steps or n_steps <= 0:
        return steps
    made_for = steps[-1] + 1
    if made_for == n_steps or made_for == 1:
        return steps
    scale = (n_steps - 1) / (made_for - 1)
    return sorted({int(math.floor(s * scale + 0.5)) for s in steps})


def apply_schedule_cache(model, cfg, counters, n_steps: int | None = None):
    """Skip the whole block stack on the steps ``cfg.compute_steps`` leaves out; returns the undo.

    ``n_steps``: the call's step count when a steps section changes it (the mask is rescaled).
    """
    from .residual import MaskPolicy, install_residual_cache

    steps = rescale(cfg.compute_steps, n_steps) if n_steps else list(cfg.compute_steps)
    return install_residual_cache(model, MaskPolicy(steps, cfg.taylor_order), counters, block_start=0)


def budget_steps(n_steps: int, budget: float, warmup_steps: int = 1) -> int:
    """How many of ``n_steps`` a budget (fraction of steps) computes: at least the warm-up and the last step."""
    forced = min(n_steps, max(1, warmup_steps) + (1 if warmup_steps < n_steps else 0))
    return min(n_steps, max(forced, int(math.floor(budget * n_steps + 0.5))))


def select_steps(change: Sequence[float], budget: float, warmup_steps: int = 1,
                 distance: Sequence[Sequence[float]] | None = None) -> list[int]:
    """The steps to compute, in order, for ``budget`` (a fraction of the steps, in (0, 1]).

    ``change[i]`` is how much the residual moved from step i-1 to step i (``change[0]`` is
    ignored). The first ``warmup_steps`` (at least one: it fills the cache) and the last step
    are always computed; the warm-up shapes the layout and the last step the fine detail, and
    both change the most. The others are chosen by dynamic programming to minimise the sum,
    over the skipped steps, of the error of the residual they reuse: ``distance[k][s]``, how
    far step s's residual is from step k's (``StepStatistics.residual_distance``), where
    measured; else the change accumulated since the last computed step, its upper bound.
    The measured distance is absolute, not relative to step s's residual: the error a skipped
    step adds to the output is the difference itself, and dividing by a residual that shrinks
    over the steps would overweight the late steps.
    """
    n = len(change)
    if n == 0:
        return []
    if distance is not None and (len(distance) != n or any(len(row) != n for row in distance)):
        raise ValueError(f"distance must be {n} x {n}, one row and column per step of change")
    k = budget_steps(n, budget, warmup_steps)
    if k >= n:
        return list(range(n))
    c = [0.0] + [max(0.0, float(x)) for x in change[1:]]
    cum = [0.0] * n
    for i in range(1, n):
        cum[i] = cum[i - 1] + c[i]
    forced = set(range(min(n, max(1, warmup_steps)))) | {n - 1}

    def gap_cost(j: int, i: int) -> float:
        # steps j+1 .. i-1 reuse step j's residual
        if distance is not None:
            return sum(float(distance[j][s]) for s in range(j + 1, i))
        return sum(cum[s] - cum[j] for s in range(j + 1, i))

    inf = math.inf
    # best[m][i]: least cost with m computed steps, the last one i, every forced step < i computed
    best = [[inf] * n for _ in range(k + 1)]
    back = [[-1] * n for _ in range(k + 1)]
    best[1][0] = 0.0
    for m in range(2, k + 1):
        for i in range(1, n):
            for j in range(i - 1, -1, -1):
                if best[m - 1][j] < inf:
                    cost = best[m - 1][j] + gap_cost(j, i)
                    if cost < best[m][i]:
                        best[m][i], back[m][i] = cost, j
                if j in forced:  # a forced step cannot be skipped: nothing before it can precede i
                    break
    steps, i = [], n - 1
    for m in range(k, 0, -1):
        steps.append(i)
        i = back[m][i]
    return sorted(steps)


__all__ = ["apply_schedule_cache", "budget_steps", "rescale", "select_steps"]
