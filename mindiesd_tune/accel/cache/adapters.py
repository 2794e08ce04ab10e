"""Adapters for diffusers' own cache hooks, so a study compares them with ours under one measurement.

Each ``diffusers_*`` method entry builds the matching diffusers config (its own builder, with
the helpers here) and installs it through ``apply_diffusers_cache``: ``enable_cache(...)`` on the
denoiser, removed with ``disable_cache()``. Counting hooks on the blocks and attention modules fill the handle's counters: one wraps the module
inside diffusers' hook (it runs only when the module really computes), one outside (every
call), so the difference is what diffusers skipped.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from diffusers.hooks.hooks import ModelHook

from ..blocks import transformer_blocks
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


def timestep_callback(pipe):
    """diffusers' ``current_timestep_callback`` for ``pipe``: the timestep its loop is at (None without a pipeline)."""
    return lambda: getattr(pipe, "current_timestep", None) if pipe is not None else None


def attention_names(model) -> list[str]:
    """Every attention module's name in ``model``'s blocks, from the model registry.

    diffusers' default identifier patterns must match a whole module name and miss e.g. Wan's
    "blocks.0.attn1"; an adapter names the modules it means from our block table instead.
    """
    return [n for b in transformer_blocks(model) for n, _ in b.attention_modules()] if model is not None else []


def is_video(pipe) -> bool:
    return "Video" in type(getattr(pipe, "transformer", None)).__name__


def guidance_distilled(pipe) -> bool:
    """Whether FasterCache must leave the unconditional branch alone: it expects cond and
    uncond batched in one forward, so pipelines that run them as separate calls (Flux, Wan,
    Qwen-Image, HunyuanVideo) or have no unconditional branch get only its attention reuse."""
    if pipe is None:
        return True
    try:
        return pipeline_spec(pipe).cfg != "batched"
    except UnsupportedModelError:
        return True


def apply_diffusers_cache(model: torch.nn.Module, make_config: Callable[[], Any], counters: CacheCounters, name: str):
    """``model.enable_cache(make_config())``; returns the function that removes it.

    ``make_config`` builds diffusers' config object (each ``diffusers_*`` entry owns its
    builder); ``name`` is the entry's ``cache.method``, for the refusals.
    """
    if not hasattr(model, "enable_cache"):
        raise ValueError(
            f"{type(model).__name__} has no diffusers CacheMixin (enable_cache); cache.method {name!r} needs one"
        )
    if getattr(model, "is_cache_enabled", False):
        raise ValueError(f"{type(model).__name__} already has a diffusers cache enabled; disable_cache() first")
    blocks = transformer_blocks(model)
    counted = [(b.module, "blocks") for b in blocks] + [(m, "attention") for b in blocks for _, m in b.attention_modules()]
    for m, attr in counted:
        registry(m).register_hook(_Count(counters, attr, +1), INNER)
    try:
        model.enable_cache(make_config())
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
