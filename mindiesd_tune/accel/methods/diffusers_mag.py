"""cache: diffusers_mag, diffusers' own MagCache through ``accel.cache.adapters``, calibrated once per study."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..config import check
from ..registry import Knob, Method, register_method
from ._common import cache_entry_applies, diffusers_cache_install


@dataclass
class DiffusersMagCacheConfig:
    """diffusers' own MagCache: skip while the accumulated magnitude-ratio error stays small.

    Attributes:
        threshold: accumulated error under which blocks are skipped (0: never skips).
        max_skip_steps: most consecutive skipped steps.
        retention_ratio: the leading fraction of steps that is never skipped.
        mag_ratios: the model's per-step magnitude ratios; ``accel.cache.step_statistics``
            measures them (``stats.mag_ratios``). Empty: all ones (no calibration).
    """

    method: ClassVar[str] = "diffusers_mag"
    threshold: float = 0.0
    max_skip_steps: int = 3
    retention_ratio: float = 0.2
    mag_ratios: list = field(default_factory=list)

    def validate(self) -> None:
        check(self.threshold >= 0, "cache.threshold", self.threshold, "must be >= 0")
        check(self.max_skip_steps >= 1, "cache.max_skip_steps", self.max_skip_steps, "must be >= 1")
        check(0 <= self.retention_ratio <= 1, "cache.retention_ratio", self.retention_ratio, "must be in [0, 1]")
        check(all(isinstance(r, (int, float)) and r > 0 for r in self.mag_ratios), "cache.mag_ratios", self.mag_ratios, "must be positive numbers")


# diffusers' published defaults; the search ranges span them
DEFAULTS = {"cache.threshold": 0.06, "cache.max_skip_steps": 3, "cache.retention_ratio": 0.2}
THRESHOLDS = (0.06, 0.5)
MAX_SKIP_STEPS = (1, 4)
RETENTION = (0.1, 0.3)


def _calibrated(ctx) -> bool:
    ratios = ctx.mag_ratios
    return bool(ratios) and all(r > 0 for r in ratios) and (ctx.num_inference_steps is None or len(ratios) == ctx.num_inference_steps)


def suggest(trial, ctx) -> dict:
    return {
        "cache.threshold": trial.suggest_float("cache.threshold", *THRESHOLDS, log=True),
        "cache.max_skip_steps": trial.suggest_int("cache.max_skip_steps", *MAX_SKIP_STEPS),
        "cache.retention_ratio": trial.suggest_float("cache.retention_ratio", *RETENTION),
        # the study's calibration, not a trial parameter (Optuna parameters are scalars): it
        # travels in the trial's config and from there into the profile
        "cache.mag_ratios": [float(r) for r in ctx.mag_ratios],
    }


def skipped_steps(ratios, threshold: float, max_skip_steps: int, retention_ratio: float) -> int:
    """How many steps MagCache skips with these ratios, its decision rule replayed
    (diffusers.hooks.mag_cache: the accumulated |1 - product of ratios| against the threshold)."""
    n = len(ratios)
    retention = int(retention_ratio * n + 0.5)
    acc_ratio, acc_steps, acc_err, skipped = 1.0, 0, 0.0, 0
    for step in range(retention, n):
        acc_ratio *= ratios[step]
        acc_steps += 1
        acc_err += abs(1.0 - acc_ratio)
        if step > 0 and acc_err <= threshold and acc_steps <= max_skip_steps:
            skipped += 1
        else:
            acc_ratio, acc_steps, acc_err = 1.0, 0, 0.0
    return skipped


def presets(ctx) -> list[dict]:
    # the published defaults, unless this model's ratios say they would skip nothing
    if not skipped_steps(list(ctx.mag_ratios or ()), DEFAULTS["cache.threshold"], DEFAULTS["cache.max_skip_steps"],
                         DEFAULTS["cache.retention_ratio"]):
        return []
    return [{"cache.method": "diffusers_mag", **DEFAULTS}]


_mixin_and_family = cache_entry_applies("diffusers_mag", needs_cache_mixin=True)


def applies(ctx) -> bool:
    """Where diffusers' hooks install and the study measured the model's ratios at its step count."""
    return _calibrated(ctx) and _mixin_and_family(ctx)


def show(cfg) -> str:
    return (f"diffusers_mag: threshold={cfg.threshold:.4g}, max_skip_steps={cfg.max_skip_steps}, "
            f"retention_ratio={cfg.retention_ratio:.4g}, mag_ratios=[{len(cfg.mag_ratios)} calibrated]")


def to_diffusers(cfg, pipe, model):
    from diffusers import MagCacheConfig

    ratios = list(cfg.mag_ratios)
    if not ratios:
        raise ValueError("cache.mag_ratios: MagCache needs the model's ratios, one per step; "
                         "measure them with accel.cache.step_statistics(pipe, prompt, ...).mag_ratios")
    return MagCacheConfig(threshold=cfg.threshold, max_skip_steps=cfg.max_skip_steps, retention_ratio=cfg.retention_ratio,
                          num_inference_steps=len(ratios), mag_ratios=ratios)


register_method(Method(
    section="cache", name="diffusers_mag", config=DiffusersMagCacheConfig, install=diffusers_cache_install(to_diffusers),
    suggest=suggest, applies=applies, presets=presets, show=show, knob=Knob("cache.threshold", +1),
    example=DiffusersMagCacheConfig(threshold=10.0, retention_ratio=0.0, mag_ratios=[1.0, 1.0, 1.0]),
))
