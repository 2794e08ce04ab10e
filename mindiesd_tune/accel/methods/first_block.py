"""cache: first_block, the first-block residual cache (hooks in ``accel.cache.residual``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import check
from ..registry import Knob, Method, register_method
from ._common import cache_entry_applies, thresholds

WARMUP_STEPS = (0, 4)
MAX_CACHED_CHOICES = (-1, 4, 8, 12)
MAX_CONSECUTIVE_CHOICES = (-1, 1, 2, 3, 5)


@dataclass
class FirstBlockCacheConfig:
    """First-block residual cache (a.k.a. step cache; cf. diffusers FirstBlockCache, cache-dit DBCache F1B0).

    At every denoising step the first transformer block is computed. Its residual (output
    minus input) is compared with the residual at the last fully computed step; when the
    relative L1 change is below ``threshold``, the remaining blocks are skipped and their
    cached residual is added instead. Larger thresholds skip more steps: faster, less
    faithful. State is kept separately for each CFG branch and reset at every pipeline call.

    Attributes:
        threshold: relative L1 change of the first block's residual under which the rest of
            the network is skipped. 0 never skips (the baseline output, bit for bit).
        warmup_steps: the first steps of every call are always computed; early steps shape
            the image layout, so caching them costs the most quality.
        max_cached_steps: at most this many steps per call reuse the cache (-1: no limit).
        max_consecutive_cached_steps: at most this many cached steps in a row before a full
            computation refreshes the cache (-1: no limit). Bounds error accumulation.
        accumulate: compare the *sum* of relative changes since the last computed step with
            the threshold (TeaCache / cache-dit style) rather than the change alone, so a
            slow drift still triggers a refresh.
    """

    method: ClassVar[str] = "first_block"
    threshold: float = 0.0
    warmup_steps: int = 0
    max_cached_steps: int = -1
    max_consecutive_cached_steps: int = -1
    accumulate: bool = False

    def validate(self) -> None:
        check(self.threshold >= 0, "cache.threshold", self.threshold, "must be >= 0")
        check(self.warmup_steps >= 0, "cache.warmup_steps", self.warmup_steps, "must be >= 0")
        check(self.max_cached_steps >= -1, "cache.max_cached_steps", self.max_cached_steps, "must be >= -1")
        check(
            self.max_consecutive_cached_steps >= -1 and self.max_consecutive_cached_steps != 0,
            "cache.max_consecutive_cached_steps",
            self.max_consecutive_cached_steps,
            "must be -1 (no limit) or >= 1",
        )


def install(model, cfg, handle):
    from ..cache.residual import ThresholdPolicy, install_residual_cache

    # block 0 is computed every step: its residual decides whether the rest is skipped
    policy = ThresholdPolicy(cfg.threshold, cfg.warmup_steps, cfg.max_cached_steps,
                             cfg.max_consecutive_cached_steps, cfg.accumulate)
    return install_residual_cache(model, policy, handle.counters, block_start=1)


def suggest(trial, ctx) -> dict:
    return {
        "cache.threshold": trial.suggest_float("cache.threshold", *thresholds(ctx), log=True),
        "cache.warmup_steps": trial.suggest_int("cache.warmup_steps", *WARMUP_STEPS),
        "cache.max_cached_steps": trial.suggest_categorical("cache.max_cached_steps", list(MAX_CACHED_CHOICES)),
        "cache.max_consecutive_cached_steps": trial.suggest_categorical("cache.max_consecutive_cached_steps",
                                                                        list(MAX_CONSECUTIVE_CHOICES)),
        "cache.accumulate": trial.suggest_categorical("cache.accumulate", [False, True]),
    }


PRESET_THRESHOLD = 0.08  # diffusers' and cache-dit's anchors are 0.05-0.12 on trained DiTs
PRESET_WARMUP = 2
# a calibrated preset sits this far above the model's median change after the warm-up:
# a step right after a computed one is cached, the next (twice the change) is computed
PRESET_OVER_MEDIAN = 1.25


def can_skip(threshold: float, changes, warmup_steps: int) -> bool:
    """Whether a first-block threshold caches any step at the model's measured changes
    (``changes[i]``: the first block residual's change into step i): some step after the
    warm-up must change less than it."""
    after = [c for i, c in enumerate(changes) if i >= max(1, warmup_steps) and c > 0]
    return not after or min(after) < threshold


def presets(ctx) -> list[dict]:
    # a preset names every parameter ``suggest`` asks for, so none of them is sampled
    threshold = PRESET_THRESHOLD
    changes = ctx.first_block_change
    if changes:
        after = sorted(c for i, c in enumerate(changes) if i >= PRESET_WARMUP and c > 0)
        if after:
            threshold = round(PRESET_OVER_MEDIAN * after[len(after) // 2], 4)
        if not can_skip(threshold, changes, PRESET_WARMUP):
            return []  # it would only time the baseline again
    return [{"cache.method": "first_block", "cache.threshold": threshold, "cache.warmup_steps": PRESET_WARMUP,
             "cache.max_cached_steps": -1, "cache.max_consecutive_cached_steps": -1, "cache.accumulate": False}]


register_method(Method(
    section="cache", name="first_block", config=FirstBlockCacheConfig, install=install, suggest=suggest,
    applies=cache_entry_applies("first_block"), presets=presets, knob=Knob("cache.threshold", +1),
    example=FirstBlockCacheConfig(threshold=10.0, warmup_steps=1),
))
