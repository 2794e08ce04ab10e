"""cache: block_cache, MindIE SD's dit_block_cache / cache-dit's DBCache (hooks in ``accel.cache.residual``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import check, check_blocks, check_steps
from ..registry import Knob, Method, register_method
from ._common import cache_entry_applies, schedule, thresholds


@dataclass
class BlockCacheConfig:
    """Block cache (MindIE SD's dit_block_cache, cache-dit's DBCache Fn/Bn).

    The blocks before ``block_start`` (Fn) and from ``block_end`` on (Bn) are computed at
    every step; on a cached step the blocks in between are skipped and their residual (their
    output minus their input, from the last computed step) is added instead. Between
    ``step_start`` and ``step_end`` a full step is computed every ``step_interval`` steps;
    the steps in between reuse the cache, unconditionally when ``threshold`` is 0 (MindIE SD's
    schedule), or only while the relative L1 change of the Fn blocks' residual since the
    last computed step stays below ``threshold`` (DBCache). More skipped blocks and longer
    intervals are faster and less faithful; larger Fn/Bn cost speed and buy quality.

    Attributes:
        block_start: Fn, the number of leading blocks always computed (>= 1 with a threshold,
            whose signal they produce).
        block_end: first trailing block always computed; -1 means none (Bn = 0).
        step_start: steps before it are always computed (warm-up).
        step_end: steps from it on are always computed; -1: caching runs to the last step.
        step_interval: a full step at least every this many steps. 1 never caches (the
            baseline output, bit for bit).
        threshold: 0 caches on the schedule alone; > 0 also requires the Fn residual's
            relative L1 change to be below it.
    """

    method: ClassVar[str] = "block_cache"
    block_start: int = 1
    block_end: int = -1
    step_start: int = 0
    step_end: int = -1
    step_interval: int = 1
    threshold: float = 0.0

    def validate(self) -> None:
        check_blocks("cache", self.block_start, self.block_end, lowest_start=1 if self.threshold > 0 else 0)
        check_steps("cache", self.step_start, self.step_end, self.step_interval)
        check(self.threshold >= 0, "cache.threshold", self.threshold, "must be >= 0")


def install(model, cfg, handle):
    from ..cache.residual import SchedulePolicy, install_residual_cache

    policy = SchedulePolicy(cfg.step_start, cfg.step_end, cfg.step_interval, cfg.threshold)
    return install_residual_cache(model, policy, handle.counters, cfg.block_start, cfg.block_end)


def suggest(trial, ctx) -> dict:
    n, sched = ctx.n_blocks, schedule(ctx)
    params = {"cache.block_start": trial.suggest_int("cache.block_start", 1, min(3, n - 1) if n else 3)}
    if n:
        params["cache.block_end"] = trial.suggest_int("cache.block_end", params["cache.block_start"] + 1, n)
    params["cache.step_start"] = trial.suggest_int("cache.step_start", *sched.step_start)
    params["cache.step_interval"] = trial.suggest_int("cache.step_interval", *sched.step_interval)
    # Optuna keeps one (log) distribution per name, so 0 cannot be sampled; the top decade
    # of the range is never reached by a real change and acts as MindIE's pure schedule
    lo, hi = thresholds(ctx)
    params["cache.threshold"] = trial.suggest_float("cache.threshold", lo, 10 * hi, log=True)
    return params


def presets(ctx) -> list[dict]:
    # threshold 1.0 lies in the range's top decade: in effect MindIE SD's pure schedule
    p = {"cache.method": "block_cache", "cache.block_start": 1, "cache.step_start": 2, "cache.step_interval": 2,
         "cache.threshold": 1.0}
    if ctx.n_blocks:
        p["cache.block_end"] = ctx.n_blocks  # suggest asks for it when the block count is known
    return [p]


register_method(Method(
    section="cache", name="block_cache", config=BlockCacheConfig, install=install, suggest=suggest,
    applies=cache_entry_applies("block_cache"), presets=presets, knob=Knob("cache.step_interval", +1),
    example=BlockCacheConfig(block_start=1, step_start=1, step_interval=2),
))
