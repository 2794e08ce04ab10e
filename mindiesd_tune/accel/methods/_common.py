"""What several method entries share: per-family schedule and threshold ranges, applicability tests.

A ``ctx`` here is a ``search_spaces.SpaceContext``; every field of it may be None (unknown),
and then the fixed ranges below are used.
"""

from __future__ import annotations

from dataclasses import dataclass

DIT = ("dit-image", "dit-video")


@dataclass(frozen=True)
class ScheduleRanges:
    """Shared by the scheduled methods: refresh interval and warm-up steps."""

    step_interval: tuple[int, int]
    step_start: tuple[int, int]


# video is more sensitive to stale features (flicker): shorter intervals
SCHEDULE_RANGES: dict[str, ScheduleRanges] = {
    "dit-image": ScheduleRanges((2, 5), (0, 4)),
    "dit-video": ScheduleRanges((2, 4), (0, 4)),
    "unet-image": ScheduleRanges((2, 5), (0, 4)),
}
# Without statistics, thresholds span an order of magnitude on both sides of the anchors
# (diffusers and cache-dit use 0.05-0.12 on trained DiTs); with them, the range is centred on
# the model's own per-step change (``SpaceContext.thresholds``).
THRESHOLDS = (0.01, 1.0)


def schedule(ctx) -> ScheduleRanges:
    return SCHEDULE_RANGES.get(ctx.family, SCHEDULE_RANGES["dit-image"])


def thresholds(ctx) -> tuple[float, float]:
    return tuple(ctx.thresholds) if ctx.thresholds is not None else THRESHOLDS


def allowed(name: str, ctx) -> bool:
    """Whether ``SpaceContext.methods`` (a restriction of the cache methods) lets ``name`` through."""
    return ctx.methods is None or name in ctx.methods


def cache_entry_applies(name: str, families=DIT, needs_cache_mixin: bool = False):
    def applies(ctx) -> bool:
        if needs_cache_mixin and ctx.cache_mixin is False:
            return False
        return (ctx.family is None or ctx.family in families) and allowed(name, ctx)

    return applies


def diffusers_cache_install(build):
    """The installer of a diffusers cache adapter: diffusers' own hook, counted by the handle.

    ``build(cfg, pipe, model)`` is the entry's own builder of diffusers' config object
    (diffusers is imported inside it, when the method is installed).
    """

    def install(model, cfg, handle):
        from ..cache.adapters import apply_diffusers_cache

        return apply_diffusers_cache(model, lambda: build(cfg, handle.pipe, model), handle.counters, cfg.method)

    return install
