"""cache: deepcache, UNet deep features reused between steps (hooks in ``accel.cache.deepcache``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import check, check_steps
from ..registry import Knob, Method, register_method
from ._common import cache_entry_applies, schedule


@dataclass
class DeepCacheConfig:
    """DeepCache for UNets: reuse the deep features, recompute the shallow branch every step.

    On a full step the whole UNet runs and the output of the up block that feeds the
    branch is kept. On the steps in between, only the down blocks up to ``branch`` and the
    matching up blocks run (plus the input and output layers); the deeper down blocks, the
    mid block and the deeper up blocks are skipped and the kept feature stands in for them.
    Granularity is whole down/up blocks (DeepCache's paper also splits inside a block).

    Attributes:
        cache_interval: a full step every this many steps. 1 never caches (baseline).
        branch: how many down/up block pairs stay live, minus one (0: only the outermost;
            larger is slower and more faithful).
        step_start: steps before it are always full (warm-up).
        step_end: steps from it on are always full; -1: to the last step.
    """

    method: ClassVar[str] = "deepcache"
    cache_interval: int = 1
    branch: int = 0
    step_start: int = 0
    step_end: int = -1

    def validate(self) -> None:
        check(self.branch >= 0, "cache.branch", self.branch, "must be >= 0")
        check_steps("cache", self.step_start, self.step_end, self.cache_interval)


def install(model, cfg, handle):
    from ..cache import apply_deepcache

    return apply_deepcache(model, cfg, handle.counters)


def suggest(trial, ctx) -> dict:
    sched = schedule(ctx)
    return {
        "cache.cache_interval": trial.suggest_int("cache.cache_interval", *sched.step_interval),
        "cache.branch": trial.suggest_int("cache.branch", 0, max(0, (ctx.unet_branches or 1) - 1)),
        "cache.step_start": trial.suggest_int("cache.step_start", *sched.step_start),
    }


def presets(ctx) -> list[dict]:
    return [{"cache.method": "deepcache", "cache.cache_interval": 3, "cache.branch": 0, "cache.step_start": 0}]


register_method(Method(
    section="cache", name="deepcache", config=DeepCacheConfig, install=install, suggest=suggest,
    applies=cache_entry_applies("deepcache", families=("unet-image",)), presets=presets,
    knob=Knob("cache.cache_interval", +1),
    example=DeepCacheConfig(cache_interval=2, step_start=1),
))
