"""Adapters for diffusers' own cache hooks, so a study compares them with ours under one measurement.

Each of our ``diffusers_*`` configs builds the matching diffusers config and installs it
with ``transformer.enable_cache(...)`` (removed with ``disable_cache()``). Counting hooks
on the blocks and attention modules fill the handle's counters: one wraps the module
inside diffusers' hook (it runs only when the module really computes), one outside (every
call), so the difference is what diffusers skipped.
"""

from __future__ import annotations

import torch
from diffusers.hooks.hooks import ModelHook

from ..blocks import transformer_blocks
from ..methods import (
    DiffusersFasterCacheConfig,
    DiffusersFirstBlockCacheConfig,
    DiffusersMagCacheConfig,
    DiffusersPyramidAttentionBroadcastConfig,
    DiffusersTaylorSeerConfig,
)
from ..specs import UnsupportedModelError, pipeline_spec
from .state import CacheCounters, invalidate, registry

INNER, OUTER = "mindiesd_count_inner", "mindiesd_count_outer"


class _Count(ModelHook):
    def __init__(self, counters: CacheCounters, attr: str, sign: int):
        super().__init__()
        self.counters, self.attr, self.sign = counters, attr, sign

    def new_forward(self, module, *args, **kwargs):
        # inner: +1 computed, -1 skipped; outer: +1 skipped. Net: computed and skipped counts.
        c = self.counters
        if self.sign > 0:
            setattr(c, self.attr + "_computed", getattr(c, self.attr + "_computed") + 1)
            setattr(c, self.attr + "_skipped", getattr(c, self.attr + "_skipped") - 1)
        else:
            setattr(c, self.attr + "_skipped", getattr(c, self.attr + "_skipped") + 1)
        return self.fn_ref.original_forward(*args, **kwargs)


def diffusers_config(cfg, pipe, model=None):
    """Our adapter config -> the diffusers config object."""
    from diffusers import (
        FasterCacheConfig,
        FirstBlockCacheConfig,
        MagCacheConfig,
        PyramidAttentionBroadcastConfig,
        TaylorSeerCacheConfig,
    )

    def timestep():
        return getattr(pipe, "current_timestep", None) if pipe is not None else None

    if isinstance(cfg, DiffusersFirstBlockCacheConfig):
        return FirstBlockCacheConfig(threshold=cfg.threshold)
    if isinstance(cfg, DiffusersTaylorSeerConfig):
        # diffusers' default patterns must match a whole module name and miss e.g. Wan's
        # "blocks.0.attn1"; name the attention modules from our block table instead
        import re

        names = [n for b in transformer_blocks(model) for n, _ in b.attention_modules()] if model is not None else []
        return TaylorSeerCacheConfig(cache_interval=cfg.cache_interval, disable_cache_before_step=cfg.disable_cache_before_step,
                                     max_order=cfg.max_order, taylor_factors_dtype=None,
                                     cache_identifiers=[re.escape(n) for n in names] or None)
    if isinstance(cfg, DiffusersMagCacheConfig):
        ratios = list(cfg.mag_ratios)
        if not ratios:
            raise ValueError("cache.mag_ratios: MagCache needs the model's ratios, one per step; "
                             "measure them with accel.cache.step_statistics(pipe, prompt, ...).mag_ratios")
        return MagCacheConfig(threshold=cfg.threshold, max_skip_steps=cfg.max_skip_steps, retention_ratio=cfg.retention_ratio,
                              num_inference_steps=len(ratios), mag_ratios=ratios)
    if isinstance(cfg, DiffusersPyramidAttentionBroadcastConfig):
        return PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=cfg.spatial_attention_block_skip_range,
            spatial_attention_timestep_skip_range=(cfg.timestep_skip_start, cfg.timestep_skip_end),
            current_timestep_callback=timestep,
        )
    if isinstance(cfg, DiffusersFasterCacheConfig):
        return FasterCacheConfig(
            spatial_attention_block_skip_range=cfg.spatial_attention_block_skip_range,
            spatial_attention_timestep_skip_range=(-1, cfg.timestep_skip_end),
            unconditional_batch_skip_range=cfg.unconditional_batch_skip_range,
            current_timestep_callback=timestep,
            attention_weight_callback=lambda _: 0.5,
            is_guidance_distilled=_guidance_distilled(pipe),
            tensor_format="BFCHW" if "Video" in type(getattr(pipe, "transformer", None)).__name__ else "BCHW",
        )
    raise TypeError(f"not a diffusers adapter config: {cfg!r}")


def _guidance_distilled(pipe) -> bool:
    """Whether FasterCache must leave the unconditional branch alone: it expects cond and
    uncond batched in one forward, so pipelines that run them as separate calls (Flux, Wan,
    Qwen-Image, HunyuanVideo) or have no unconditional branch get only its attention reuse."""
    if pipe is None:
        return True
    try:
        return pipeline_spec(pipe).cfg != "batched"
    except UnsupportedModelError:
        return True


def apply_diffusers_cache(model: torch.nn.Module, cfg, counters: CacheCounters, pipe=None):
    """``model.enable_cache`` with the diffusers config for ``cfg``; returns the function that removes it."""
    if not hasattr(model, "enable_cache"):
        raise ValueError(
            f"{type(model).__name__} has no diffusers CacheMixin (enable_cache); cache.method {cfg.method!r} needs one"
        )
    if getattr(model, "is_cache_enabled", False):
        raise ValueError(f"{type(model).__name__} already has a diffusers cache enabled; disable_cache() first")
    blocks = transformer_blocks(model)
    counted = [(b.module, "blocks") for b in blocks] + [(m, "attention") for b in blocks for _, m in b.attention_modules()]
    for m, attr in counted:
        registry(m).register_hook(_Count(counters, attr, +1), INNER)
    try:
        model.enable_cache(diffusers_config(cfg, pipe, model))
    except Exception:
        _remove_counts(model, counted)
        raise
    for m, attr in counted:
        registry(m).register_hook(_Count(counters, attr, -1), OUTER)
    invalidate(model)

    def remove() -> None:
        model.disable_cache()
        _remove_counts(model, counted)

    return remove


def _remove_counts(model, counted) -> None:
    for m, _ in counted:
        registry(m).remove_hook(OUTER, recurse=False)
        registry(m).remove_hook(INNER, recurse=False)
    invalidate(model)
