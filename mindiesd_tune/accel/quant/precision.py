"""Run one component of a pipeline at another precision than the one it was loaded in.

Casting only the transformer of a float32 pipeline to bfloat16 fails inside its first linear
layer ("mat1 and mat2 must have the same dtype"): the pipeline hands it float32 latents and
prompt embeddings. So a cast component gets its floating inputs cast on the way in and its
outputs cast back on the way out (to the dtype its first floating input came in), and the
modules that must stay float32 (norms that own parameters, and what the model lists in
``_keep_in_fp32_modules``) stay so, with their inputs cast to float32 and their outputs to the
component's precision. Parameters are swapped with ``param.data``, so the original tensors can be
put back untouched.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


def components(pipe) -> dict[str, list[tuple[str, torch.nn.Module]]]:
    """Config component name -> the pipeline's modules it covers, as ``(attribute, module)``.

    A bare ``nn.Module`` (a denoiser outside a pipeline) is the denoiser alone.
    """
    if isinstance(pipe, torch.nn.Module):
        return {"denoiser": [("transformer", pipe)], "text_encoder": [], "vae": []}
    found: dict[str, list] = {"denoiser": [], "text_encoder": [], "vae": []}
    for attr in ("transformer", "unet"):
        if isinstance(getattr(pipe, attr, None), torch.nn.Module):
            found["denoiser"].append((attr, getattr(pipe, attr)))
            break
    for attr in TEXT_ENCODERS:
        if isinstance(getattr(pipe, attr, None), torch.nn.Module):
            found["text_encoder"].append((attr, getattr(pipe, attr)))
    if isinstance(getattr(pipe, "vae", None), torch.nn.Module):
        found["vae"].append(("vae", pipe.vae))
    return found


def module_dtype(module: torch.nn.Module) -> torch.dtype | None:
    """The dtype most of the module's floating parameters have (kept-float32 norms are a minority)."""
    count: dict[torch.dtype, int] = {}
    for p in module.parameters():
        if p.is_floating_point():
            count[p.dtype] = count.get(p.dtype, 0) + p.numel()
    return max(count, key=count.get) if count else None


def cast_tree(value: Any, dtype: torch.dtype) -> Any:
    """Floating tensors in ``value`` (nested tuples, lists, dicts, model outputs) cast to ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value
    if type(value) is dict:  # a new dict: a pipeline may pass the same one (joint_attention_kwargs) every call
        return {k: cast_tree(v, dtype) for k, v in value.items()}
    if isinstance(value, dict):  # diffusers' BaseOutput and transformers' ModelOutput: a fresh output, cast in place
        for k in list(value.keys()):
            value[k] = cast_tree(value[k], dtype)
        return value
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(cast_tree(v, dtype) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(cast_tree(v, dtype) for v in value)
    return value


def first_float_dtype(value: Any) -> torch.dtype | None:
    if isinstance(value, torch.Tensor):
        return value.dtype if value.is_floating_point() else None
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else ()
    for v in items:
        d = first_float_dtype(v)
        if d is not None:
            return d
    return None


def _keep_names(module: torch.nn.Module) -> set[str]:
    from ...compat.diffusers import keep_in_fp32_modules

    names: set[str] = set()
    for m in module.modules():
        names.update(keep_in_fp32_modules(type(m)) or ())
    return names


def _is_norm(module: torch.nn.Module) -> bool:
    """A normalisation layer that owns parameters (one without them has nothing to keep)."""
    name = type(module).__name__
    is_norm = isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)) or name.endswith(("RMSNorm", "LayerNorm", "GroupNorm"))
    return is_norm and next(module.children(), None) is None and next(module.parameters(recurse=False), None) is not None


def kept_float32(module: torch.nn.Module) -> tuple[list[tuple[str, torch.nn.Module]], set[str]]:
    """The submodules that stay float32 (outermost only) and the names of every parameter/buffer under them or kept by name."""
    keep = _keep_names(module)
    matches = lambda qualified: bool(keep) and any(part in keep for part in qualified.split("."))  # noqa: E731
    roots: list[tuple[str, torch.nn.Module]] = []
    kept: set[str] = set()
    for name, sub in module.named_modules():
        if any(name == r or name.startswith(r + ".") for r, _ in roots):
            continue
        if name and (matches(name) or _is_norm(sub)):
            roots.append((name, sub))
    prefixes = tuple(r + "." for r, _ in roots)
    for name, _ in list(module.named_parameters()) + list(module.named_buffers()):
        if name.startswith(prefixes) or matches(name):
            kept.add(name)
    return roots, kept


class PrecisionCast:
    """One component cast to ``dtype``; ``undo()`` puts the original tensors and methods back.

    ``keep_original=False`` drops the references to the original tensors, so their memory is
    freed (deployment); ``undo()`` then refuses.
    """

    def __init__(self, attr: str, module: torch.nn.Module, dtype: torch.dtype, keep_original: bool = True,
                 boundary_only: bool = False):
        self.attr, self.module, self.dtype = attr, module, dtype
        self.keep_original, self.boundary_only = keep_original, boundary_only
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._dropped = 0  # tensors cast whose originals were not kept
        self._handles: list = []
        self._wrapped: list[str] = []
        self._apply()

    def _apply(self) -> None:
        module, dtype = self.module, self.dtype
        roots, kept = ([], set()) if self.boundary_only else kept_float32(module)
        tensors = list(module.named_parameters()) + list(module.named_buffers())
        for name, t in tensors:
            if self.boundary_only or not t.is_floating_point():
                continue
            target = torch.float32 if name in kept else dtype
            if t.dtype == target:
                continue
            old = t.data
            t.data = old.to(target)
            if self.keep_original:
                self._saved.append((t, old))
            else:
                self._dropped += 1
        if isinstance(module, torch.nn.Module) and self.attr == "vae":
            # pipelines call the VAE's encode/decode, not its forward
            for method in ("encode", "decode"):
                if callable(getattr(module, method, None)):
                    setattr(module, method, self._boundary(getattr(module, method), dtype))
                    self._wrapped.append(method)
        else:
            self._hook_boundary(module, dtype)
        for _, sub in roots:
            self._hook_kept(sub, dtype)

    @staticmethod
    def _boundary(fn: Callable, dtype: torch.dtype) -> Callable:
        def wrapped(*args, **kwargs):
            back = first_float_dtype((args, kwargs))
            out = fn(*cast_tree(args, dtype), **cast_tree(kwargs, dtype))
            return cast_tree(out, back) if back is not None else out

        return wrapped

    def _hook_boundary(self, module: torch.nn.Module, dtype: torch.dtype) -> None:
        came_in: list[torch.dtype | None] = []

        def pre(_m, args, kwargs):
            came_in.append(first_float_dtype((args, kwargs)))
            return cast_tree(args, dtype), cast_tree(kwargs, dtype)

        def post(_m, _args, _kwargs, out):
            back = came_in.pop() if came_in else None
            return cast_tree(out, back) if back is not None else out

        self._handles += [module.register_forward_pre_hook(pre, with_kwargs=True),
                          module.register_forward_hook(post, with_kwargs=True)]

    def _hook_kept(self, sub: torch.nn.Module, dtype: torch.dtype) -> None:
        if dtype == torch.float32:
            return

        def pre(_m, args, kwargs):
            return cast_tree(args, torch.float32), cast_tree(kwargs, torch.float32)

        def post(_m, _args, _kwargs, out):
            return cast_tree(out, dtype)

        self._handles += [sub.register_forward_pre_hook(pre, with_kwargs=True),
                          sub.register_forward_hook(post, with_kwargs=True)]

    @property
    def restorable(self) -> bool:
        """False when weights were cast and their originals dropped (``keep_original=False``)."""
        return self._dropped == 0

    @property
    def gone(self) -> str | None:
        """Why ``undo()`` refuses (None: it restores the component bit for bit)."""
        if self.restorable:
            return None
        return f"{self.attr}: cast to {str(self.dtype).removeprefix('torch.')} without keep_original, so its original weights are gone"

    def undo(self) -> None:
        # refuse before touching anything, so a refused undo leaves the component as it runs
        if not self.restorable:
            raise RuntimeError(self.gone)
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for method in self._wrapped:
            self.module.__dict__.pop(method, None)
        self._wrapped.clear()
        for t, old in self._saved:
            t.data = old
        self._saved.clear()


def cast_components(pipe, precision: dict[str, str], keep_original: bool = True) -> list[PrecisionCast]:
    """Cast each component named in ``precision`` whose dtype differs; a component already at that dtype is left alone.

    Once one component is cast, the others get their inputs cast at their boundary too (their
    weights untouched): a pipeline may derive one component's input dtype from another's
    (FluxPipeline makes its latents in the text encoder's dtype and hands them to the VAE as
    they are).
    """
    casts: list[PrecisionCast] = []
    found = components(pipe)
    for comp, name in precision.items():
        dtype = DTYPES[name]
        for attr, module in found.get(comp, []):
            if module_dtype(module) == dtype:
                continue
            logger.debug("casting %s to %s", attr, name)
            casts.append(PrecisionCast(attr, module, dtype, keep_original))
    if casts:
        cast = {id(c.module) for c in casts}
        for attr, module in (m for mods in found.values() for m in mods):
            dtype = module_dtype(module)
            if id(module) not in cast and dtype is not None:
                casts.append(PrecisionCast(attr, module, dtype, keep_original, boundary_only=True))
    return casts
