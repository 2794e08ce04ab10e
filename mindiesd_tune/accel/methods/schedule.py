"""cache: schedule, our calibrated step schedule (mask in ``accel.cache.schedule``, hooks in ``accel.cache.residual``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..config import check
from ..registry import Knob, Method, register_method
from ._common import cache_entry_applies

BUDGETS = (0.25, 0.7)
WARMUP_STEPS = (1, 4)
TAYLOR_ORDERS = (0, 1)
PRESET_BUDGET = 0.35
PRESET_WARMUP = 2


@dataclass
class ScheduleCacheConfig:
    """Calibrated schedule: compute a fixed set of steps, chosen on the model's own per-step change.

    A baseline call measures how far apart the block stack's residuals of every two steps are
    (``StepStatistics.residual_distance``). For a compute budget (the fraction of steps
    computed), the steps to compute are chosen so that the error of the residuals reused is
    smallest (``accel.cache.schedule.select_steps``): where the model changes fast
    (the first steps, the last ones) steps are computed close together, where it drifts
    slowly far apart. On the other steps the whole block stack is skipped and the residual
    of the last computed step is added to its input (or its Taylor extrapolation). The mask
    is stored, so a profile computes the same steps on every call. Smaller budgets are faster
    and less faithful.

    Attributes:
        compute_steps: the steps computed (0-based); the others reuse the cache. Empty: every
            step is computed (the baseline output, bit for bit). Steps after the last one
            listed are computed. The mask is made for ``compute_steps[-1] + 1`` steps; with a
            ``steps`` section that changes the count it is rescaled to the new count.
        budget: the fraction of steps the mask was chosen for (a record; the mask decides).
        warmup_steps: the leading steps the mask was chosen to always compute (a record).
        taylor_order: 0 reuses the last computed residual; 1 or 2 extrapolate it from the
            last computed steps (TaylorSeer-like); with uneven gaps extrapolation can
            overshoot, so the search decides.
    """

    method: ClassVar[str] = "schedule"
    # what the mask was chosen with: two budgets that choose one mask are one configuration
    records: ClassVar[tuple[str, ...]] = ("budget", "warmup_steps")
    compute_steps: list = field(default_factory=list)
    budget: float = 1.0
    warmup_steps: int = 1
    taylor_order: int = 0

    def validate(self) -> None:
        steps = self.compute_steps
        check(all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in steps), "cache.compute_steps", steps,
              "must be step indices (integers >= 0)")
        check(list(steps) == sorted(set(steps)), "cache.compute_steps", steps, "must be increasing, without repeats")
        check(not steps or steps[0] == 0, "cache.compute_steps", steps, "must compute step 0 (it fills the cache)")
        check(0 < self.budget <= 1, "cache.budget", self.budget, "must be in (0, 1]")
        check(self.warmup_steps >= 0, "cache.warmup_steps", self.warmup_steps, "must be >= 0")
        check(self.taylor_order in (0, 1, 2), "cache.taylor_order", self.taylor_order, "must be 0, 1 or 2")


def install(model, cfg, handle):
    from ..cache import apply_schedule_cache

    # the steps section installs first: a reduced step count is known here, and the mask follows it
    return apply_schedule_cache(model, cfg, handle.counters, handle.call_overrides.get("num_inference_steps"))


def _calibrated(ctx) -> bool:
    curve = ctx.step_change
    return curve is not None and len(curve) > 2 and (ctx.num_inference_steps is None or len(curve) == ctx.num_inference_steps)


def mask(ctx, budget: float, warmup_steps: int) -> list[int]:
    from ..cache.schedule import select_steps

    n = len(ctx.step_change)
    flat = ctx.residual_distance
    distance = [flat[k * n:(k + 1) * n] for k in range(n)] if flat is not None and len(flat) == n * n else None
    return select_steps(list(ctx.step_change), budget, warmup_steps, distance)


def suggest(trial, ctx) -> dict:
    budget = trial.suggest_float("cache.budget", *BUDGETS)
    warmup = trial.suggest_int("cache.warmup_steps", *WARMUP_STEPS)
    # the mask is derived, not sampled: a function of the study's calibration and the two above
    return {
        "cache.budget": budget,
        "cache.warmup_steps": warmup,
        "cache.taylor_order": trial.suggest_int("cache.taylor_order", *TAYLOR_ORDERS),
        "cache.compute_steps": mask(ctx, budget, warmup),
    }


def presets(ctx) -> list[dict]:
    return [{"cache.method": "schedule", "cache.budget": PRESET_BUDGET, "cache.warmup_steps": PRESET_WARMUP, "cache.taylor_order": 0}]


def applies(ctx) -> bool:
    return _calibrated(ctx) and cache_entry_applies("schedule")(ctx)


def show(cfg) -> str:
    if not cfg.compute_steps:
        return "schedule: every step computed"
    steps = ",".join(str(s) for s in cfg.compute_steps)
    return f"schedule: compute steps {steps} (budget={cfg.budget:.4g}, taylor_order={cfg.taylor_order})"


register_method(Method(
    section="cache", name="schedule", config=ScheduleCacheConfig, install=install, suggest=suggest,
    applies=applies, presets=presets, show=show, knob=Knob("cache.budget", -1),  # a smaller budget computes fewer steps
    example=ScheduleCacheConfig(compute_steps=[0, 2], budget=0.67),
))
