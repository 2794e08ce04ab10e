"""cache: taylorseer, residuals of skipped blocks extrapolated by a Taylor series (``accel.cache.residual``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import check, check_blocks, check_steps
from ..registry import Knob, Method, register_method
from ._common import cache_entry_applies, schedule


@dataclass
class TaylorSeerConfig:
    """TaylorSeer: on cached steps, extrapolate the skipped blocks' residual with a Taylor series.

    Like the block cache on a schedule (the blocks between ``block_start`` and ``block_end``
    are skipped on the steps between full ones), but instead of reusing the residual of the
    last computed step it predicts the current one from finite differences over the last
    computed steps: first order follows the trend, second order its curvature. Higher order
    tracks fast-changing features better but amplifies noise on long intervals.

    Attributes:
        order: 1 or 2, the Taylor order (needs order + 1 computed steps; before that the
            plain residual is reused).
        step_interval: a full step every this many steps. 1 never caches (baseline, bit for bit).
        step_start: steps before it are always computed (warm-up; also fills the differences).
        step_end: steps from it on are always computed; -1: to the last step.
        block_start: leading blocks always computed (0: the whole stack is predicted).
        block_end: first trailing block always computed; -1: none.
    """

    method: ClassVar[str] = "taylorseer"
    order: int = 1
    step_interval: int = 1
    step_start: int = 2
    step_end: int = -1
    block_start: int = 0
    block_end: int = -1

    def validate(self) -> None:
        check(self.order in (1, 2), "cache.order", self.order, "must be 1 or 2")
        check_steps("cache", self.step_start, self.step_end, self.step_interval)
        check_blocks("cache", self.block_start, self.block_end)


def install(model, cfg, handle):
    from ..cache.residual import SchedulePolicy, install_residual_cache

    policy = SchedulePolicy(cfg.step_start, cfg.step_end, cfg.step_interval, taylor_order=cfg.order)
    return install_residual_cache(model, policy, handle.counters, cfg.block_start, cfg.block_end)


def suggest(trial, ctx) -> dict:
    n, sched = ctx.n_blocks, schedule(ctx)
    return {
        "cache.order": trial.suggest_int("cache.order", 1, 2),
        "cache.step_interval": trial.suggest_int("cache.step_interval", 2, sched.step_interval[1] + 1),
        "cache.step_start": trial.suggest_int("cache.step_start", max(1, sched.step_start[0]), sched.step_start[1]),
        "cache.block_start": trial.suggest_int("cache.block_start", 0, min(2, n - 1) if n else 2),
    }


register_method(Method(
    section="cache", name="taylorseer", config=TaylorSeerConfig, install=install, suggest=suggest,
    applies=cache_entry_applies("taylorseer"), knob=Knob("cache.step_interval", +1),
    example=TaylorSeerConfig(order=1, step_interval=2, step_start=1),
))
