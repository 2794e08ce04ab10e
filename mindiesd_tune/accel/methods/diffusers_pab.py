"""cache: diffusers_pab, diffusers' own Pyramid Attention Broadcast through ``accel.cache.adapters``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import check
from ..registry import Knob, Method, register_method
from ._common import cache_entry_applies, diffusers_cache_install


@dataclass
class DiffusersPyramidAttentionBroadcastConfig:
    """diffusers' own Pyramid Attention Broadcast (reuse attention outputs inside a timestep window).

    Attributes:
        spatial_attention_block_skip_range: recompute spatial attention every this many calls (1: always).
        timestep_skip_start: reuse only for timesteps above this (0-1000 scale).
        timestep_skip_end: and below this.
    """

    method: ClassVar[str] = "diffusers_pab"
    spatial_attention_block_skip_range: int = 1
    timestep_skip_start: int = 100
    timestep_skip_end: int = 800

    def validate(self) -> None:
        check(self.spatial_attention_block_skip_range >= 1, "cache.spatial_attention_block_skip_range", self.spatial_attention_block_skip_range, "must be >= 1")
        check(0 <= self.timestep_skip_start < self.timestep_skip_end <= 1000, "cache.timestep_skip_start", self.timestep_skip_start, "must satisfy 0 <= start < end <= 1000")


def suggest(trial, ctx) -> dict:
    return {
        "cache.spatial_attention_block_skip_range": trial.suggest_int("cache.spatial_attention_block_skip_range", 2, 4),
        "cache.timestep_skip_end": trial.suggest_int("cache.timestep_skip_end", 600, 1000, step=50),
        "cache.timestep_skip_start": trial.suggest_int("cache.timestep_skip_start", 0, 300, step=50),
    }


def to_diffusers(cfg, pipe, model):
    from diffusers import PyramidAttentionBroadcastConfig

    from ..cache.adapters import timestep_callback

    return PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=cfg.spatial_attention_block_skip_range,
        spatial_attention_timestep_skip_range=(cfg.timestep_skip_start, cfg.timestep_skip_end),
        current_timestep_callback=timestep_callback(pipe),
    )


register_method(Method(
    section="cache", name="diffusers_pab", config=DiffusersPyramidAttentionBroadcastConfig, install=diffusers_cache_install(to_diffusers),
    suggest=suggest, applies=cache_entry_applies("diffusers_pab", needs_cache_mixin=True),
    knob=Knob("cache.spatial_attention_block_skip_range", +1),
    example=DiffusersPyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=2, timestep_skip_start=0,
                                                     timestep_skip_end=1000),
))
