"""Every use of diffusers' private API, in one place.

diffusers publishes no API for what these reach: the parallel configs and plans behind
``enable_parallelism``, the hook registry a module carries, the query/key/value projections
the attention processors start with, the latent packing of the Flux pipeline, the per-model
list of float32 modules and the cache reset at the end of a call. A release that renames one
fails here with one line naming the name and the installed version, rather than in several
places at once deep inside a trial; ``missing()`` lists what is gone (tests/test_compat.py).

The names were read from diffusers ``TESTED``; an older diffusers is refused on import.
Nothing here is imported until a method or the training scripts need it.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable

import diffusers

from ._version import CompatError, at_least, lookup

TESTED = "0.42"  # pyproject's lower bound: the release these names were read from

if not at_least(diffusers.__version__, TESTED):
    raise ImportError(f"diffusers {diffusers.__version__} is older than {TESTED}, which mindiesd-tune needs")

_MODELING = "diffusers.models.modeling_utils"
_PARALLEL = "diffusers.models._modeling_parallel"
_FLUX_PIPELINE = "diffusers.pipelines.flux.pipeline_flux"
_CACHE_MIXIN = "diffusers.models.cache_utils"

# (module, attribute path): every private name this module reaches, for ``missing()``
NAMES: tuple[tuple[str, str], ...] = (
    (_PARALLEL, "ParallelConfig"),
    (_PARALLEL, "ContextParallelConfig"),
    (_PARALLEL, "TensorParallelConfig"),
    (_MODELING, "ModelMixin._parallel_config"),
    (_MODELING, "ModelMixin._cp_plan"),
    (_MODELING, "ModelMixin._tp_plan"),
    (_MODELING, "ModelMixin._keep_in_fp32_modules"),
    (_CACHE_MIXIN, "CacheMixin._reset_stateful_cache"),
    ("diffusers.models.transformers.transformer_flux", "_get_qkv_projections"),
    ("diffusers.models.transformers.transformer_wan", "_get_qkv_projections"),
    (_FLUX_PIPELINE, "FluxPipeline._pack_latents"),
    (_FLUX_PIPELINE, "FluxPipeline._prepare_latent_image_ids"),
)
HOOK_ATTR = "_diffusers_hook"  # where HookRegistry.check_if_exists_or_initialize keeps a module's registry
KEEP_FP32_ATTR = "_keep_in_fp32_modules"


def _get(module: str, path: str, use: str) -> Any:
    return lookup("diffusers", diffusers.__version__, TESTED, module, path, use)


def missing() -> list[str]:
    """The private names of ``NAMES`` (and the hook registry's attribute) the installed diffusers lacks."""
    out = []
    for module, path in NAMES:
        try:
            _get(module, path, "")
        except CompatError:
            out.append(f"{module}.{path}")
    import torch
    from diffusers.hooks.hooks import HookRegistry

    probe = torch.nn.Linear(1, 1)
    HookRegistry.check_if_exists_or_initialize(probe)
    if not hasattr(probe, HOOK_ATTR):
        out.append(f"diffusers.hooks.hooks.HookRegistry -> module.{HOOK_ATTR}")
    return out


# ---- parallelism (accel.parallel)
def parallel_config_classes() -> tuple[type, type, type]:
    """diffusers' (ParallelConfig, ContextParallelConfig, TensorParallelConfig)."""
    use = "the context- and tensor-parallel meshes"
    return tuple(_get(_PARALLEL, name, use) for name in ("ParallelConfig", "ContextParallelConfig", "TensorParallelConfig"))


def cp_plan(model) -> Any:
    """The model's context-parallel plan (None: diffusers has none for it)."""
    _get(_MODELING, "ModelMixin._cp_plan", "context parallelism")
    return getattr(model, "_cp_plan", None)


def tp_plan(model) -> Any:
    """The model's tensor-parallel plan (None: diffusers has none for it)."""
    _get(_MODELING, "ModelMixin._tp_plan", "tensor parallelism")
    return getattr(model, "_tp_plan", None)


def parallel_config(obj) -> Any:
    _get(_MODELING, "ModelMixin._parallel_config", "parallelism")
    return getattr(obj, "_parallel_config", None)


def set_parallel_config(obj, config) -> None:
    """Set the parallel config a model or an attention processor reads in its forward."""
    _get(_MODELING, "ModelMixin._parallel_config", "parallelism")
    obj._parallel_config = config


def takes_parallel_config(processor) -> bool:
    """Whether an attention processor reads a parallel config (diffusers' context-parallel ones do)."""
    return hasattr(processor, "_parallel_config")


# ---- hooks and caches (accel.apply, accel.parallel)
def hook_names(module) -> list[str]:
    """The names of the diffusers hooks registered on ``module`` itself (none without a registry)."""
    registry = getattr(module, HOOK_ATTR, None)
    return list(getattr(registry, "hooks", {}))


def resets_cache_at_call_end(model) -> bool:
    """Whether the pipeline's end-of-call cleanup resets ``model``'s stateful hooks (diffusers'
    CacheMixin does, through ``_reset_stateful_cache``)."""
    _get(_CACHE_MIXIN, "CacheMixin._reset_stateful_cache", "resetting cache hooks at the end of a call")
    return hasattr(model, "_reset_stateful_cache")


# ---- precision (accel.quant.precision, models.registry)
def keep_in_fp32_modules(cls: type, own: bool = False) -> Any:
    """The module names a model class keeps in float32 (``own``: declared on ``cls`` itself, not inherited)."""
    return cls.__dict__.get(KEEP_FP32_ATTR) if own else getattr(cls, KEEP_FP32_ATTR, None)


def set_keep_in_fp32_modules(cls: type, names) -> None:
    setattr(cls, KEEP_FP32_ATTR, names)


# ---- sparse attention (accel.sparse.processors)
@functools.cache
def qkv_projections(model: str) -> Callable:
    """diffusers' ``_get_qkv_projections`` of ``diffusers.models.transformers.<model>`` (the
    query, key and value projections its attention processor starts with, fused or not).

    No public API computes them; mirroring them by hand would drift from diffusers' fused-QKV
    handling."""
    module = importlib.import_module(f"diffusers.models.transformers.{model}")
    found = getattr(module, "_get_qkv_projections", None)
    if not callable(found):
        raise CompatError(f"diffusers {diffusers.__version__}: {module.__name__} has no _get_qkv_projections, "
                          f"which the sparse attention processors call (written against diffusers {TESTED})")
    return found


# ---- training (training.flux)
def pack_latents(pipe, latents, batch: int, channels: int, height: int, width: int):
    """Flux's packing of VAE latents into its token sequence."""
    _get(_FLUX_PIPELINE, "FluxPipeline._pack_latents", "training the demo Flux")
    return pipe._pack_latents(latents, batch, channels, height, width)


def prepare_latent_image_ids(pipe, batch: int, height: int, width: int, device, dtype):
    """Flux's positional ids of the packed latent tokens."""
    _get(_FLUX_PIPELINE, "FluxPipeline._prepare_latent_image_ids", "training the demo Flux")
    return pipe._prepare_latent_image_ids(batch, height, width, device, dtype)


__all__ = [
    "HOOK_ATTR",
    "NAMES",
    "TESTED",
    "CompatError",
    "cp_plan",
    "hook_names",
    "keep_in_fp32_modules",
    "missing",
    "pack_latents",
    "parallel_config",
    "parallel_config_classes",
    "prepare_latent_image_ids",
    "qkv_projections",
    "resets_cache_at_call_end",
    "set_keep_in_fp32_modules",
    "set_parallel_config",
    "takes_parallel_config",
    "tp_plan",
]
