"""First-block cache and block cache: residual caching of the middle blocks, by threshold or schedule."""

from __future__ import annotations

import torch

from ..methods import BlockCacheConfig, FirstBlockCacheConfig, TaylorSeerConfig
from .residual import SchedulePolicy, ThresholdPolicy, install_residual_cache, relative_l1
from .state import CacheCounters


def apply_first_block_cache(model: torch.nn.Module, cfg: FirstBlockCacheConfig, counters: CacheCounters):
    """Compute block 0 every step; skip all the others while its residual barely changes."""
    policy = ThresholdPolicy(cfg.threshold, cfg.warmup_steps, cfg.max_cached_steps,
                             cfg.max_consecutive_cached_steps, cfg.accumulate)
    return install_residual_cache(model, policy, counters, block_start=1)


def apply_block_cache(model: torch.nn.Module, cfg: BlockCacheConfig, counters: CacheCounters):
    """Compute Fn front and Bn back blocks every step; reuse the middle's residual on cached steps."""
    policy = SchedulePolicy(cfg.step_start, cfg.step_end, cfg.step_interval, cfg.threshold)
    return install_residual_cache(model, policy, counters, cfg.block_start, cfg.block_end)


def apply_taylorseer(model: torch.nn.Module, cfg: TaylorSeerConfig, counters: CacheCounters):
    """Block cache on a schedule whose reused residual is a Taylor extrapolation."""
    policy = SchedulePolicy(cfg.step_start, cfg.step_end, cfg.step_interval, taylor_order=cfg.order)
    return install_residual_cache(model, policy, counters, cfg.block_start, cfg.block_end)


__all__ = ["apply_block_cache", "apply_first_block_cache", "apply_taylorseer", "relative_l1"]
