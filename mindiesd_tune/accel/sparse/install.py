"""install_sparse(model, cfg, counters): swap the attention processors; the returned function swaps them back."""

from __future__ import annotations

import inspect

import torch

from ...kernels.attention import resolve_backend
from ..blocks import UnsupportedModelError, attention_layers
from ..methods import BlockSparseConfig, NoSparse
from .engine import CallContext, SparseAttention, SparseCounters
from .masks import TokenLayout
from .processors import PROCESSORS


def _flux_layout(model, args) -> TokenLayout | None:
    img_ids, txt_ids = args.get("img_ids"), args.get("txt_ids")
    if img_ids is None or txt_ids is None:
        return None
    img_ids = img_ids.reshape(-1, img_ids.shape[-1])
    h, w = int(img_ids[:, 1].max()) + 1, int(img_ids[:, 2].max()) + 1
    if h * w != img_ids.shape[0]:
        return None
    return TokenLayout((h, w), text_len=txt_ids.reshape(-1, txt_ids.shape[-1]).shape[0], text_first=True)


def _wan_layout(model, args) -> TokenLayout | None:
    x = args["hidden_states"]
    pt, ph, pw = model.config.patch_size
    return TokenLayout((x.shape[2] // pt, x.shape[3] // ph, x.shape[4] // pw))


def _sd3_layout(model, args) -> TokenLayout | None:
    x, text = args["hidden_states"], args.get("encoder_hidden_states")
    p = model.config.patch_size
    return TokenLayout((x.shape[2] // p, x.shape[3] // p), text_len=0 if text is None else text.shape[1], text_first=False)


# denoiser class -> how its forward's inputs lay the tokens out
LAYOUTS = {
    "FluxTransformer2DModel": _flux_layout,
    "WanTransformer3DModel": _wan_layout,
    "SD3Transformer2DModel": _sd3_layout,
}


def install_sparse(model: torch.nn.Module, cfg: NoSparse, counters: SparseCounters, scheduler=None):
    """Route ``model``'s self-attention through ``cfg``; returns the function that undoes it.

    ``scheduler`` (the pipeline's) tells which denoising step is running, for ``dense_steps``.
    """
    if type(cfg) is NoSparse and cfg.backend == "sdpa":
        return lambda: None
    cls = type(model).__name__
    if cls not in LAYOUTS:
        raise UnsupportedModelError(f"{cls} is not supported for sparse attention (supported: {', '.join(sorted(LAYOUTS))})")
    param = next(model.parameters(), None)
    resolve_backend(cfg.backend, param.device if param is not None else "cpu", param.dtype if param is not None else torch.float32)
    dense_steps = isinstance(cfg, BlockSparseConfig) and cfg.dense_steps > 0
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
        kind = PROCESSORS.get(type(original).__name__)
        if kind is None:
            _restore(originals)
            raise UnsupportedModelError(f"{name} runs {type(original).__name__}, which has no sparse processor")
        originals.append((module, original))
        module.set_processor(kind(original, attend, i))

    layout_of = LAYOUTS[cls]
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


__all__ = ["LAYOUTS", "dense_step_count", "install_sparse"]
