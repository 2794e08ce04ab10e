"""Per-family search spaces: Optuna trial -> AccelConfig, flat params <-> config, presets.

Parameters are named ``section.field`` (``cache.method``, ``cache.threshold``) so a user
who knows Optuna reads them straight off ``study.trials_dataframe()``. Parameters exist only
where they mean something (a threshold only for a method that has one): invalid points are
never sampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..accel.config import AccelConfig

NEUTRAL_PARAMS: dict[str, Any] = {"cache.method": "none"}


@dataclass(frozen=True)
class FirstBlockRanges:
    threshold: tuple[float, float]
    warmup_steps: tuple[int, int]
    max_cached_steps: tuple[int, ...]


# Ranges per family. Thresholds span an order of magnitude on both sides of the anchors
# (diffusers and cache-dit use 0.05-0.12 on trained DiTs); issue 4 centres them on per-model
# statistics.
FIRST_BLOCK_RANGES: dict[str, FirstBlockRanges] = {
    "dit-image": FirstBlockRanges((0.01, 1.0), (0, 4), (-1, 4, 8, 12)),
    "dit-video": FirstBlockRanges((0.01, 1.0), (0, 4), (-1, 4, 8, 12)),
}

# Methods the sampler may pick. "none" stays a choice (Optuna needs one distribution per
# parameter); the driver answers a repeat of an earlier point from storage at no cost.
CACHE_METHODS_BY_FAMILY: dict[str, tuple[str, ...]] = {
    "dit-image": ("none", "first_block"),
    "dit-video": ("none", "first_block"),
    "unet-image": ("none",),
}

# Known-good settings tried right after the baseline, so the front is never empty.
PRESETS: dict[str, list[dict[str, Any]]] = {
    "dit-image": [
        {"cache.method": "first_block", "cache.threshold": 0.08, "cache.warmup_steps": 2, "cache.max_cached_steps": -1},
        {"cache.method": "first_block", "cache.threshold": 0.3, "cache.warmup_steps": 2, "cache.max_cached_steps": -1},
    ],
    "dit-video": [
        {"cache.method": "first_block", "cache.threshold": 0.08, "cache.warmup_steps": 2, "cache.max_cached_steps": -1},
        {"cache.method": "first_block", "cache.threshold": 0.3, "cache.warmup_steps": 2, "cache.max_cached_steps": -1},
    ],
}


def suggest(trial, family: str) -> AccelConfig:
    """Sample a config for ``family`` from an Optuna trial (define-by-run, conditional)."""
    methods = list(CACHE_METHODS_BY_FAMILY.get(family, ("none",)))
    params: dict[str, Any] = {"cache.method": trial.suggest_categorical("cache.method", methods)}
    if params["cache.method"] == "first_block":
        r = FIRST_BLOCK_RANGES[family]
        params["cache.threshold"] = trial.suggest_float("cache.threshold", *r.threshold, log=True)
        params["cache.warmup_steps"] = trial.suggest_int("cache.warmup_steps", *r.warmup_steps)
        params["cache.max_cached_steps"] = trial.suggest_categorical("cache.max_cached_steps", list(r.max_cached_steps))
    return config_from_params(params)


def config_from_params(params: dict[str, Any]) -> AccelConfig:
    """Flat ``section.field`` params (as Optuna stores them) -> a validated AccelConfig."""
    sections: dict[str, dict[str, Any]] = {}
    for key, value in params.items():
        section, _, name = key.partition(".")
        sections.setdefault(section, {})[name] = value
    return AccelConfig.from_dict(sections)


def presets(family: str) -> list[dict[str, Any]]:
    return [dict(NEUTRAL_PARAMS)] + [dict(p) for p in PRESETS.get(family, [])]


__all__ = ["NEUTRAL_PARAMS", "PRESETS", "config_from_params", "presets", "suggest"]
