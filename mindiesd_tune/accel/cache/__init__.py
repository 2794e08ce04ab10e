"""The caching family: config type -> installer, shared per-branch state and counters, step statistics.

Methods: ``first_block``, ``block_cache``, ``taylorseer`` (residual caching of the middle
blocks), ``attention_cache``, ``deepcache`` (UNets), ``step_reduction``, and adapters for
diffusers' own hooks (``diffusers_first_block``, ``diffusers_taylorseer``, ``diffusers_mag``,
``diffusers_faster``, ``diffusers_pab``). ``step_statistics`` measures a model's per-step
change so search spaces can centre thresholds on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import config as C
from .adapters import apply_diffusers_cache
from .attention import apply_attention_cache
from .deepcache import apply_deepcache
from .first_block import apply_block_cache, apply_first_block_cache, apply_taylorseer
from .residual import relative_l1
from .state import BranchStates, CacheCounters
from .stats import StepStatistics, step_statistics
from .steps import apply_step_reduction, build_scheduler, compatible_schedulers


@dataclass
class InstallContext:
    """What an installer may touch besides the denoiser: the pipeline (None for a bare
    model), the handle's counters, and the call overrides it reports (step reduction)."""

    pipe: object
    counters: CacheCounters
    call_kwargs: dict = field(default_factory=dict)


def _on_model(fn):
    return lambda model, cfg, ctx: fn(model, cfg, ctx.counters)


# config dataclass -> installer(model, cfg, ctx) -> remove()
INSTALLERS = {
    C.FirstBlockCacheConfig: _on_model(apply_first_block_cache),
    C.BlockCacheConfig: _on_model(apply_block_cache),
    C.TaylorSeerConfig: _on_model(apply_taylorseer),
    C.AttentionCacheConfig: _on_model(apply_attention_cache),
    C.DeepCacheConfig: _on_model(apply_deepcache),
    C.StepReductionConfig: lambda model, cfg, ctx: apply_step_reduction(ctx.pipe, cfg, ctx.call_kwargs),
    **{
        kind: (lambda model, cfg, ctx: apply_diffusers_cache(model, cfg, ctx.counters, ctx.pipe))
        for kind in (C.DiffusersFirstBlockCacheConfig, C.DiffusersTaylorSeerConfig, C.DiffusersMagCacheConfig,
                     C.DiffusersFasterCacheConfig, C.DiffusersPyramidAttentionBroadcastConfig)
    },
}


def install_cache(model, cfg, ctx: InstallContext):
    """Install the cache method ``cfg`` on ``model``; returns the function that removes it."""
    if isinstance(cfg, C.NoCache):
        return lambda: None
    try:
        installer = INSTALLERS[type(cfg)]
    except KeyError:
        raise ValueError(f"no installer for cache method {cfg.method!r}") from None
    return installer(model, cfg, ctx)


__all__ = [
    "BranchStates",
    "CacheCounters",
    "INSTALLERS",
    "InstallContext",
    "StepStatistics",
    "apply_attention_cache",
    "apply_block_cache",
    "apply_deepcache",
    "apply_diffusers_cache",
    "apply_first_block_cache",
    "apply_step_reduction",
    "apply_taylorseer",
    "build_scheduler",
    "compatible_schedulers",
    "install_cache",
    "relative_l1",
    "step_statistics",
]
