"""cache: diffusers_mag, diffusers' own MagCache through ``accel.cache.adapters`` (not searched)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..config import check
from ._common import cache_entry_applies, install_diffusers_cache
from .registry import Method, register_method


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


# No suggest: its calibrated ratios are a list, not a trial parameter, so studies never sample it.
register_method(Method(
    section="cache", name="diffusers_mag", config=DiffusersMagCacheConfig, install=install_diffusers_cache,
    applies=cache_entry_applies("diffusers_mag", needs_cache_mixin=True),
    example=DiffusersMagCacheConfig(threshold=10.0, retention_ratio=0.0, mag_ratios=[1.0, 1.0, 1.0]),
))
