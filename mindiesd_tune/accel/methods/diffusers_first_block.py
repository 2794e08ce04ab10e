"""cache: diffusers_first_block, diffusers' own FirstBlockCache through ``accel.cache.adapters``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import check
from ..registry import Knob, Method, register_method
from ._common import cache_entry_applies, diffusers_cache_install, thresholds


@dataclass
class DiffusersFirstBlockCacheConfig:
    """diffusers' own FirstBlockCache (``transformer.enable_cache(FirstBlockCacheConfig(...))``).

    Here so a study can compare it with ours under the same measurement.

    Attributes:
        threshold: relative change of the first block's residual under which the remaining
            blocks are skipped (diffusers' default 0.05). 0 never skips.
    """

    method: ClassVar[str] = "diffusers_first_block"
    threshold: float = 0.0

    def validate(self) -> None:
        check(self.threshold >= 0, "cache.threshold", self.threshold, "must be >= 0")


def suggest(trial, ctx) -> dict:
    return {"cache.threshold": trial.suggest_float("cache.threshold", *thresholds(ctx), log=True)}


def to_diffusers(cfg, pipe, model):
    from diffusers import FirstBlockCacheConfig

    return FirstBlockCacheConfig(threshold=cfg.threshold)


register_method(Method(
    section="cache", name="diffusers_first_block", config=DiffusersFirstBlockCacheConfig, install=diffusers_cache_install(to_diffusers),
    suggest=suggest, applies=cache_entry_applies("diffusers_first_block", needs_cache_mixin=True),
    knob=Knob("cache.threshold", +1),
    example=DiffusersFirstBlockCacheConfig(threshold=10.0),
))
