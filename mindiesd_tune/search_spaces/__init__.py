"""Per-family search spaces: Optuna trial -> AccelConfig, flat params <-> config, presets.

Parameters are named ``section.field`` (``cache.method``, ``cache.threshold``) so a user
who knows Optuna reads them straight off ``study.trials_dataframe()``, and
``config_from_params(trial.params)`` rebuilds the config. Parameters exist only where they
mean something (a threshold only for a method that has one): invalid points are never
sampled. A parameter name keeps one distribution kind in a study (Optuna requires it), and
categorical choices never depend on the trial.

What the family alone cannot know (block count, step count, the schedulers the pipeline
accepts, the model's own per-step change statistics) comes in a ``SpaceContext``; without
one, fixed ranges are used. ``describe(pipe, generation, stats)`` builds it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..accel.config import AccelConfig

# Every section that suggest() samples is fixed here, so the enqueued baseline stays neutral.
NEUTRAL_PARAMS: dict[str, Any] = {"cache.method": "none", "sparse.method": "none"}


@dataclass(frozen=True)
class FirstBlockRanges:
    threshold: tuple[float, float]
    warmup_steps: tuple[int, int]
    max_cached_steps: tuple[int, ...]


@dataclass(frozen=True)
class ScheduleRanges:
    """Shared by the scheduled methods: refresh interval and warm-up steps."""

    step_interval: tuple[int, int]
    step_start: tuple[int, int]


# Ranges per family. Without statistics, thresholds span an order of magnitude on both
# sides of the anchors (diffusers and cache-dit use 0.05-0.12 on trained DiTs); with them,
# the range is centred on the model's own per-step change (``SpaceContext.stats``).
FIRST_BLOCK_RANGES: dict[str, FirstBlockRanges] = {
    "dit-image": FirstBlockRanges((0.01, 1.0), (0, 4), (-1, 4, 8, 12)),
    "dit-video": FirstBlockRanges((0.01, 1.0), (0, 4), (-1, 4, 8, 12)),
}
MAX_CONSECUTIVE_CHOICES = (-1, 1, 2, 3, 5)
# video is more sensitive to stale features (flicker): shorter intervals
SCHEDULE_RANGES: dict[str, ScheduleRanges] = {
    "dit-image": ScheduleRanges((2, 5), (0, 4)),
    "dit-video": ScheduleRanges((2, 4), (0, 4)),
    "unet-image": ScheduleRanges((2, 5), (0, 4)),
}
DEFAULT_SCHEDULERS = ("default", "euler")

# Methods the sampler may pick. "none" stays a choice (Optuna needs one distribution per
# parameter); the driver answers a repeat of an earlier point from storage at no cost.
# diffusers_mag is left out: its calibrated ratios are a list, not a trial parameter.
_DIT_METHODS = ("none", "first_block", "block_cache", "taylorseer", "attention_cache", "step_reduction",
                "diffusers_first_block", "diffusers_taylorseer", "diffusers_pab")
CACHE_METHODS_BY_FAMILY: dict[str, tuple[str, ...]] = {
    "dit-image": _DIT_METHODS,
    "dit-video": _DIT_METHODS + ("diffusers_faster",),
    "unet-image": ("none", "deepcache", "step_reduction"),
}

@dataclass(frozen=True)
class SparseRanges:
    methods: tuple[str, ...]  # "none" first: dense attention stays a choice
    ratio: tuple[float, float]
    block_size: tuple[int, ...]
    dense_steps: tuple[float, float]
    dense_layers: tuple[str, ...]  # comma-separated layer indices; "" = none


# Sparse attention per family. Ratios bracket MindIE SD's starting points (0.6 for images,
# 0.8 for video). Block sizes include small ones because the demo models have only tens to
# hundreds of tokens; 128 is what real models and the GPU kernels use.
SPARSE_RANGES: dict[str, SparseRanges] = {
    "dit-image": SparseRanges(("none", "local", "topk", "adaptive"), (0.3, 0.9), (16, 64, 128), (0.0, 0.5), ("", "0", "0,-1")),
    "dit-video": SparseRanges(("none", "local", "topk", "adaptive"), (0.5, 0.95), (16, 64, 128), (0.0, 0.5), ("", "0", "0,-1")),
}


# Known-good settings tried right after the baseline, so the front is never empty. Kept to
# two per family: every preset is a trial of the budget, and a resumed study runs the ones
# left waiting first.
# a preset names every parameter ``suggest`` asks for, so none of them is sampled
_PRESET_FIRST_BLOCK = {"cache.method": "first_block", "cache.threshold": 0.08, "cache.warmup_steps": 2, "cache.max_cached_steps": -1,
                       "cache.max_consecutive_cached_steps": -1, "cache.accumulate": False,
                       "sparse.method": "none"}
# threshold 1.0 lies in the range's top decade: in effect MindIE SD's pure schedule
_PRESET_BLOCK_CACHE = {"cache.method": "block_cache", "cache.block_start": 1, "cache.step_start": 2, "cache.step_interval": 2,
                       "cache.threshold": 1.0, "sparse.method": "none"}
PRESETS: dict[str, list[dict[str, Any]]] = {
    "dit-image": [_PRESET_FIRST_BLOCK, _PRESET_BLOCK_CACHE],
    "dit-video": [_PRESET_FIRST_BLOCK, _PRESET_BLOCK_CACHE],
    "unet-image": [{"cache.method": "deepcache", "cache.cache_interval": 3, "cache.branch": 0, "cache.step_start": 0,
                    "sparse.method": "none"}],
}


@dataclass(frozen=True)
class SpaceContext:
    """What a space needs to know about the model beyond its family (all optional).

    Attributes:
        n_blocks: transformer blocks in the chain (bounds Fn/Bn and attention block ranges).
        num_inference_steps: the workload's step count (bounds step reduction).
        schedulers: ``cache.scheduler`` choices the pipeline accepts.
        unet_branches: number of DeepCache branch ids the UNet allows.
        thresholds: the threshold range centred on the model's per-step change
            (``StepStatistics.threshold_range()`` of a baseline call); None: fixed ranges.
        methods: restrict ``cache.method`` to these (e.g. without diffusers_* when the
            denoiser has no CacheMixin).
    """

    n_blocks: int | None = None
    num_inference_steps: int | None = None
    schedulers: tuple[str, ...] | None = None
    unet_branches: int | None = None
    thresholds: tuple[float, float] | None = None
    methods: tuple[str, ...] | None = None

    def threshold_range(self, default: tuple[float, float]) -> tuple[float, float]:
        return tuple(self.thresholds) if self.thresholds is not None else default

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for a worker process to send and a study to record."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "SpaceContext":
        data = dict(data or {})
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in cls.__dataclass_fields__})


def describe(pipe, generation: dict | None = None, stats=None) -> SpaceContext:
    """The SpaceContext of a loaded pipeline (and, optionally, its step statistics)."""
    from ..accel import UnsupportedModelError, compatible_schedulers, find_denoiser, transformer_blocks
    from ..accel.blocks import UNET_BLOCKS

    model = find_denoiser(pipe)
    try:
        n_blocks = len(transformer_blocks(model))
    except UnsupportedModelError:
        n_blocks = None
    branches = None
    if type(model).__name__ in UNET_BLOCKS:
        branches = min(len(model.down_blocks), len(model.up_blocks) - 1)
    steps = (generation or {}).get("num_inference_steps")
    methods = None
    if not hasattr(model, "enable_cache"):
        methods = tuple(m for ms in CACHE_METHODS_BY_FAMILY.values() for m in ms if not m.startswith("diffusers_"))
    thresholds = None
    if stats is not None and stats.values("first_block_residual_change").size:
        thresholds = tuple(float(x) for x in stats.threshold_range())
    return SpaceContext(n_blocks, steps, tuple(compatible_schedulers(pipe)), branches, thresholds, methods)


def methods_for(family: str, context: SpaceContext | None = None) -> list[str]:
    methods = list(CACHE_METHODS_BY_FAMILY.get(family, ("none",)))
    if context is not None and context.methods is not None:
        methods = [m for m in methods if m in context.methods]
    return methods


def suggest(trial, family: str, context: SpaceContext | None = None) -> AccelConfig:
    """Sample a config for ``family`` from an Optuna trial (define-by-run, conditional)."""
    ctx = context or SpaceContext()
    method = trial.suggest_categorical("cache.method", methods_for(family, ctx))
    params: dict[str, Any] = {"cache.method": method}
    sched = SCHEDULE_RANGES.get(family, SCHEDULE_RANGES["dit-image"])
    fb = FIRST_BLOCK_RANGES.get(family, FIRST_BLOCK_RANGES["dit-image"])
    n = ctx.n_blocks
    f, i, c = trial.suggest_float, trial.suggest_int, trial.suggest_categorical

    if method in ("first_block", "diffusers_first_block"):
        params["cache.threshold"] = f("cache.threshold", *ctx.threshold_range(fb.threshold), log=True)
    if method == "first_block":
        params["cache.warmup_steps"] = i("cache.warmup_steps", *fb.warmup_steps)
        params["cache.max_cached_steps"] = c("cache.max_cached_steps", list(fb.max_cached_steps))
        params["cache.max_consecutive_cached_steps"] = c("cache.max_consecutive_cached_steps", list(MAX_CONSECUTIVE_CHOICES))
        params["cache.accumulate"] = c("cache.accumulate", [False, True])
    elif method == "block_cache":
        params["cache.block_start"] = i("cache.block_start", 1, min(3, n - 1) if n else 3)
        if n:
            params["cache.block_end"] = i("cache.block_end", params["cache.block_start"] + 1, n)
        params["cache.step_start"] = i("cache.step_start", *sched.step_start)
        params["cache.step_interval"] = i("cache.step_interval", *sched.step_interval)
        # Optuna keeps one (log) distribution per name, so 0 cannot be sampled; the top decade
        # of the range is never reached by a real change and acts as MindIE's pure schedule
        lo, hi = ctx.threshold_range(fb.threshold)
        params["cache.threshold"] = f("cache.threshold", lo, 10 * hi, log=True)
    elif method == "taylorseer":
        params["cache.order"] = i("cache.order", 1, 2)
        params["cache.step_interval"] = i("cache.step_interval", 2, sched.step_interval[1] + 1)
        params["cache.step_start"] = i("cache.step_start", max(1, sched.step_start[0]), sched.step_start[1])
        params["cache.block_start"] = i("cache.block_start", 0, min(2, n - 1) if n else 2)
    elif method == "attention_cache":
        params["cache.step_interval"] = i("cache.step_interval", *sched.step_interval)
        params["cache.step_start"] = i("cache.step_start", *sched.step_start)
        params["cache.block_start"] = i("cache.block_start", 0, n // 2 if n else 2)
    elif method == "deepcache":
        params["cache.cache_interval"] = i("cache.cache_interval", *sched.step_interval)
        params["cache.branch"] = i("cache.branch", 0, max(0, (ctx.unet_branches or 1) - 1))
        params["cache.step_start"] = i("cache.step_start", *sched.step_start)
    elif method == "step_reduction":
        steps = ctx.num_inference_steps or 28
        params["cache.num_inference_steps"] = i("cache.num_inference_steps", max(2, steps // 4), max(2, steps - 1))
        params["cache.scheduler"] = c("cache.scheduler", list(ctx.schedulers or DEFAULT_SCHEDULERS))
    elif method == "diffusers_taylorseer":
        params["cache.cache_interval"] = i("cache.cache_interval", 2, sched.step_interval[1] + 1)
        params["cache.disable_cache_before_step"] = i("cache.disable_cache_before_step", 1, 5)
        params["cache.max_order"] = i("cache.max_order", 1, 2)
    elif method in ("diffusers_pab", "diffusers_faster"):
        params["cache.spatial_attention_block_skip_range"] = i("cache.spatial_attention_block_skip_range", 2, 4)
        params["cache.timestep_skip_end"] = i("cache.timestep_skip_end", 600, 1000, step=50)
        if method == "diffusers_pab":
            params["cache.timestep_skip_start"] = i("cache.timestep_skip_start", 0, 300, step=50)
    params.update(suggest_sparse(trial, family))
    return config_from_params(params)


def suggest_sparse(trial, family: str) -> dict[str, Any]:
    """The ``sparse.*`` params for ``family``; only ``sparse.method`` when it is ``none``."""
    r = SPARSE_RANGES.get(family)
    methods = list(r.methods) if r else ["none"]
    params: dict[str, Any] = {"sparse.method": trial.suggest_categorical("sparse.method", methods)}
    if params["sparse.method"] != "none":
        params["sparse.ratio"] = trial.suggest_float("sparse.ratio", *r.ratio)
        params["sparse.block_size"] = trial.suggest_categorical("sparse.block_size", list(r.block_size))
        params["sparse.dense_steps"] = trial.suggest_float("sparse.dense_steps", *r.dense_steps, step=0.05)
        params["sparse.dense_layers"] = trial.suggest_categorical("sparse.dense_layers", list(r.dense_layers))
    return params


def config_from_params(params: dict[str, Any]) -> AccelConfig:
    """Flat ``section.field`` params (as Optuna stores them) -> a validated AccelConfig."""
    sections: dict[str, dict[str, Any]] = {}
    for key, value in params.items():
        section, _, name = key.partition(".")
        sections.setdefault(section, {})[name] = value
    return AccelConfig.from_dict(sections)


def presets(family: str, context: SpaceContext | None = None) -> list[dict[str, Any]]:
    """The baseline, then the family's known-good settings (completed for ``context``)."""
    allowed = set(methods_for(family, context))
    out = [dict(NEUTRAL_PARAMS)]
    for p in PRESETS.get(family, []):
        if p["cache.method"] not in allowed:
            continue
        p = dict(p)
        if p["cache.method"] == "block_cache" and context is not None and context.n_blocks:
            p["cache.block_end"] = context.n_blocks  # suggest asks for it when the block count is known
        out.append(p)
    return out


__all__ = [
    "CACHE_METHODS_BY_FAMILY",
    "NEUTRAL_PARAMS",
    "PRESETS",
    "SPARSE_RANGES",
    "SpaceContext",
    "config_from_params",
    "describe",
    "methods_for",
    "presets",
    "suggest",
    "suggest_sparse",
]
