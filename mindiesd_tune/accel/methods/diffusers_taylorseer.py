"""cache: diffusers_taylorseer, diffusers' own TaylorSeerCache through ``accel.cache.adapters``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import check
from ..registry import Knob, Method, register_method
from ._common import cache_entry_applies, diffusers_cache_install, schedule


@dataclass
class DiffusersTaylorSeerConfig:
    """diffusers' own TaylorSeerCache (attention outputs predicted by a Taylor series).

    Attributes:
        cache_interval: full computation every this many steps (1: never predicts).
        disable_cache_before_step: warm-up steps that always compute.
        max_order: Taylor order (1 or 2).
    """

    method: ClassVar[str] = "diffusers_taylorseer"
    cache_interval: int = 1
    disable_cache_before_step: int = 3
    max_order: int = 1

    def validate(self) -> None:
        check(self.cache_interval >= 1, "cache.cache_interval", self.cache_interval, "must be >= 1")
        check(self.disable_cache_before_step >= 0, "cache.disable_cache_before_step", self.disable_cache_before_step, "must be >= 0")
        check(self.max_order in (1, 2), "cache.max_order", self.max_order, "must be 1 or 2")


def suggest(trial, ctx) -> dict:
    return {
        "cache.cache_interval": trial.suggest_int("cache.cache_interval", 2, schedule(ctx).step_interval[1] + 1),
        "cache.disable_cache_before_step": trial.suggest_int("cache.disable_cache_before_step", 1, 5),
        "cache.max_order": trial.suggest_int("cache.max_order", 1, 2),
    }


def to_diffusers(cfg, pipe, model):
    import re

    from diffusers import TaylorSeerCacheConfig

    from ..cache.adapters import attention_names

    names = attention_names(model)
    return TaylorSeerCacheConfig(cache_interval=cfg.cache_interval, disable_cache_before_step=cfg.disable_cache_before_step,
                                 max_order=cfg.max_order, taylor_factors_dtype=None,
                                 cache_identifiers=[re.escape(n) for n in names] or None)


register_method(Method(
    section="cache", name="diffusers_taylorseer", config=DiffusersTaylorSeerConfig, install=diffusers_cache_install(to_diffusers),
    suggest=suggest, applies=cache_entry_applies("diffusers_taylorseer", needs_cache_mixin=True),
    knob=Knob("cache.cache_interval", +1),
    example=DiffusersTaylorSeerConfig(cache_interval=2, disable_cache_before_step=1),
))
