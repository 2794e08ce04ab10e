"""cache: diffusers_faster, diffusers' own FasterCache through ``accel.cache.adapters`` (video)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import check
from ..registry import Knob, Method, register_method
from ._common import cache_entry_applies, diffusers_cache_install


@dataclass
class DiffusersFasterCacheConfig:
    """diffusers' own FasterCache (attention reuse plus unconditional-branch skipping).

    Attributes:
        spatial_attention_block_skip_range: reuse spatial attention for this many steps (1: never).
        timestep_skip_end: attention is reused only below this timestep (0-1000 scale).
        unconditional_batch_skip_range: reuse the unconditional branch's output for this many
            steps (1: never). Needs a pipeline that batches CFG.
    """

    method: ClassVar[str] = "diffusers_faster"
    spatial_attention_block_skip_range: int = 1
    timestep_skip_end: int = 681
    unconditional_batch_skip_range: int = 1

    def validate(self) -> None:
        check(self.spatial_attention_block_skip_range >= 1, "cache.spatial_attention_block_skip_range", self.spatial_attention_block_skip_range, "must be >= 1")
        check(self.unconditional_batch_skip_range >= 1, "cache.unconditional_batch_skip_range", self.unconditional_batch_skip_range, "must be >= 1")
        check(0 <= self.timestep_skip_end <= 1000, "cache.timestep_skip_end", self.timestep_skip_end, "must be in [0, 1000]")


def suggest(trial, ctx) -> dict:
    return {
        "cache.spatial_attention_block_skip_range": trial.suggest_int("cache.spatial_attention_block_skip_range", 2, 4),
        "cache.timestep_skip_end": trial.suggest_int("cache.timestep_skip_end", 600, 1000, step=50),
    }


def to_diffusers(cfg, pipe, model):
    from diffusers import FasterCacheConfig

    from ..cache.adapters import guidance_distilled, is_video, timestep_callback

    return FasterCacheConfig(
        spatial_attention_block_skip_range=cfg.spatial_attention_block_skip_range,
        spatial_attention_timestep_skip_range=(-1, cfg.timestep_skip_end),
        unconditional_batch_skip_range=cfg.unconditional_batch_skip_range,
        current_timestep_callback=timestep_callback(pipe),
        attention_weight_callback=lambda _: 0.5,
        is_guidance_distilled=guidance_distilled(pipe),
        tensor_format="BFCHW" if is_video(pipe) else "BCHW",
    )


register_method(Method(
    section="cache", name="diffusers_faster", config=DiffusersFasterCacheConfig, install=diffusers_cache_install(to_diffusers), suggest=suggest,
    applies=cache_entry_applies("diffusers_faster", families=("dit-video",), needs_cache_mixin=True),
    knob=Knob("cache.spatial_attention_block_skip_range", +1),
    example=DiffusersFasterCacheConfig(spatial_attention_block_skip_range=2, timestep_skip_end=1000),
))
