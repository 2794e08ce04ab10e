"""cache: attention_cache, self-attention outputs reused between steps (hooks in ``accel.cache.attention``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import check_blocks, check_steps
from ..registry import Knob, Method, register_method
from ._common import cache_entry_applies, schedule


@dataclass
class AttentionCacheConfig:
    """Attention cache (MindIE SD's attention_cache): reuse self-attention outputs between steps.

    In the blocks from ``block_start`` to ``block_end``, the self-attention output is
    recomputed every ``step_interval`` steps between ``step_start`` and ``step_end`` and
    reused on the steps in between; the rest of each block (norms, MLP, cross-attention)
    runs every step. Attention dominates the cost at long sequence lengths (video), where
    this pays most; the error is smaller than block caching's since the MLP stays live.

    Attributes:
        step_interval: recompute attention every this many steps. 1 never reuses (baseline).
        step_start: steps before it always recompute (warm-up).
        step_end: steps from it on always recompute; -1: to the last step.
        block_start: first block whose attention is cached.
        block_end: first block after the cached range; -1: to the last block.
    """

    method: ClassVar[str] = "attention_cache"
    step_interval: int = 1
    step_start: int = 0
    step_end: int = -1
    block_start: int = 0
    block_end: int = -1

    def validate(self) -> None:
        check_steps("cache", self.step_start, self.step_end, self.step_interval)
        check_blocks("cache", self.block_start, self.block_end)


def install(model, cfg, handle):
    from ..cache import apply_attention_cache

    return apply_attention_cache(model, cfg, handle.counters)


def suggest(trial, ctx) -> dict:
    n, sched = ctx.n_blocks, schedule(ctx)
    return {
        "cache.step_interval": trial.suggest_int("cache.step_interval", *sched.step_interval),
        "cache.step_start": trial.suggest_int("cache.step_start", *sched.step_start),
        "cache.block_start": trial.suggest_int("cache.block_start", 0, n // 2 if n else 2),
    }


register_method(Method(
    section="cache", name="attention_cache", config=AttentionCacheConfig, install=install, suggest=suggest,
    applies=cache_entry_applies("attention_cache"), knob=Knob("cache.step_interval", +1),
    example=AttentionCacheConfig(step_interval=2, step_start=1),
))
