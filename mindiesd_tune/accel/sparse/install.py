"""install_sparse(model, cfg, counters): swap the attention processors; the returned function swaps them back."""

from __future__ import annotations

import importlib
import inspect
import math

import torch

from ...kernels.attention import resolve_backend
from ..blocks import UnsupportedModelError, attention_layers, find_denoiser, sparse_spec
from ..registry import method_of
from ..specs import find_spec
from .engine import CallContext, SparseAttention, SparseCounters
from .processors import SparseProcessor


def install_sparse(model: torch.nn.Module, cfg, counters: SparseCounters, scheduler=None):
    """Route ``model``'s self-attention through ``cfg`` (a sparse section config); returns the function that undoes it.

    ``scheduler`` (the pipeline's) tells which denoising step is running, for ``dense_steps``.
    """
    if method_of(cfg).hook is None and cfg.backend == "sdpa":  # dense on the models' own kernel
        return lambda: None
    cls = type(model).__name__
    spec = sparse_spec(model)
    param = next(model.parameters(), None)
    resolve_backend(cfg.backend, param.device if param is not None else "cpu", param.dtype if param is not None else torch.float32)
    dense_steps = getattr(cfg, "dense_steps", 0) > 0
    if dense_steps and scheduler is None:
        raise ValueError("sparse.dense_steps needs the pipeline's scheduler to count steps; apply the config to the pipeline")

    layers = attention_layers(model)
    n = len(layers)
    dense_layers = set()
    for i in getattr(cfg, "dense_layers", []):
        if not -n <= i < n:
            raise ValueError(f"sparse.dense_layers: layer {i} does not exist ({cls} has {n} attention layers)")
        dense_layers.add(i % n)

    context = CallContext()
    attend = SparseAttention(cfg, context, counters, dense_layers)
    originals = []
    for i, (name, module) in enumerate(layers):
        original = module.processor
        kind = _sparse_processor(spec, original)
        if kind is None:
            _restore(originals)
            raise UnsupportedModelError(f"{name} runs {type(original).__name__}, which has no sparse processor")
        originals.append((module, original))
        module.set_processor(kind(original, attend, i))

    layout_of = spec.layout
    signature = inspect.signature(model.forward)

    def before_forward(module, args, kwargs):
        bound = signature.bind_partial(*args, **kwargs).arguments
        context.layout = layout_of(module, bound)
        context.dense_step = dense_steps and _step_fraction(scheduler) < cfg.dense_steps
        return None

    hook = model.register_forward_pre_hook(before_forward, with_kwargs=True)

    def remove() -> None:
        hook.remove()
        _restore(originals)

    return remove


def _sparse_processor(spec, original) -> type[SparseProcessor] | None:
    """The sparse processor the spec names for a module running ``original`` (by its class or MRO)."""
    for klass in type(original).__mro__:
        kind = spec.processors.get(klass.__name__)
        if kind is not None:
            if isinstance(kind, str):
                module, _, attr = kind.partition(":")
                kind = getattr(importlib.import_module(module), attr)
            return kind
    return None


def sparse_token_count(pipe, generation: dict | None = None) -> int | None:
    """The image or video tokens sparse attention would see in one call at ``generation``'s size.

    None where sparse attention cannot be installed on ``pipe``'s denoiser: its spec has no
    sparse layout, or one of its attention layers runs a processor the spec has no sparse
    processor for. Text tokens of joint attention are not counted (they attend densely).
    """
    model = find_denoiser(pipe)
    spec = find_spec(model)
    if spec is None or spec.sparse is None:
        return None
    for _, module in attention_layers(model):
        processor = getattr(module, "processor", None)
        if not isinstance(processor, SparseProcessor) and _sparse_processor(spec.sparse, processor) is None:
            return None
    if isinstance(pipe, torch.nn.Module):
        raise ValueError("sparse_token_count needs the pipeline (its VAE sets the latent size), not the bare denoiser")
    return math.prod(spec.sparse.token_grid(pipe, dict(generation or {})))


def _step_fraction(scheduler) -> float:
    """The fraction of this call's steps already done (0 at the first step)."""
    timesteps = getattr(scheduler, "timesteps", None)
    total = 0 if timesteps is None else len(timesteps)
    step = getattr(scheduler, "step_index", None) or 0
    return step / total if total else 0.0


def _restore(originals) -> None:
    for module, original in reversed(originals):
        module.set_processor(original)
    originals.clear()


def dense_step_count(dense_steps: float, steps: int) -> int:
    """How many of ``steps`` denoising steps attend densely for a ``dense_steps`` fraction."""
    return sum(1 for s in range(steps) if s / steps < dense_steps) if steps else 0


__all__ = ["dense_step_count", "install_sparse", "sparse_token_count"]
