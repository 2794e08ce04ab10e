"""Model registry: a built-in demo name, a local diffusers folder or a cached hub id -> pipeline + family."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import UserError
from ..modelref import looks_like_hub_id

VIDEO_FAMILIES = {"dit-video"}


@dataclass
class Builtin:
    """A model that ships with the package and is built in-process (no download)."""

    name: str
    build: Callable[..., Any]  # (seed) -> pipeline; loads shipped weights when there are any
    description: str
    generation: dict[str, Any]  # default call settings for tuning and `run`
    trained: Callable[[], bool] = lambda: False


@dataclass
class BuiltinScorer:
    """A scoring model that ships with the package (a CLIP for the clip metric), not a pipeline to tune."""

    name: str
    description: str
    trained: Callable[[], bool] = lambda: False


@dataclass
class LoadedModel:
    """A pipeline ready to run, with what the rest of the tool needs to know about it."""

    pipe: Any
    name: str
    family: str
    source: str  # builtin | local | hub
    generation: dict[str, Any] = field(default_factory=dict)

    @property
    def is_video(self) -> bool:
        return self.family in VIDEO_FAMILIES

    def __iter__(self):  # ``pipe, family = models.load(...)``
        return iter((self.pipe, self.family))


_BUILTINS: dict[str, Builtin] = {}


def register_builtin(builtin: Builtin) -> None:
    _BUILTINS[builtin.name] = builtin


def builtin_names() -> list[str]:
    return list(_BUILTINS)


def builtins() -> list[Builtin]:
    return list(_BUILTINS.values())


_SCORERS: dict[str, BuiltinScorer] = {}


def register_scorer(scorer: BuiltinScorer) -> None:
    _SCORERS[scorer.name] = scorer


def builtin_scorers() -> list[BuiltinScorer]:
    return list(_SCORERS.values())


def family_of(pipe) -> str:
    """The family of the pipeline's denoiser, from its spec; it decides the search space."""
    from ..accel.specs import find_spec, registered_denoisers

    for attr in ("transformer", "unet"):
        model = getattr(pipe, attr, None)
        if model is not None:
            spec = find_spec(model)
            if spec is not None:
                return spec.family
            raise UserError(f"unsupported denoiser {type(model).__name__} (supported: {', '.join(registered_denoisers())})")
    raise UserError(f"{type(pipe).__name__} has no transformer or unet")


def load(
    name_or_path: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    allow_download: bool = False,
    seed: int = 0,
) -> LoadedModel:
    """Resolve ``name_or_path`` to a pipeline on ``device`` and its family.

    Order: a built-in demo name; a local folder with ``model_index.json``; a hub id that is
    already in the local Hugging Face cache (downloaded only with ``allow_download=True``).
    """
    from ..kernels import default_device

    device = torch.device(device) if device is not None else default_device()
    dtype = _dtype(dtype)
    check(name_or_path, allow_download)
    if name_or_path in _BUILTINS:
        b = _BUILTINS[name_or_path]
        pipe = b.build(seed=seed)
        pipe = pipe.to(device=device, dtype=dtype) if dtype is not None else pipe.to(device)
        return LoadedModel(pipe, b.name, family_of(pipe), "builtin", dict(b.generation))

    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise UserError(f"{name_or_path}: a folder, but not a diffusers pipeline (no model_index.json)")
        pipe = _from_pretrained(str(path), dtype, local_only=True)
        source = "local"
    elif looks_like_hub_id(name_or_path):
        try:
            pipe = _from_pretrained(name_or_path, dtype, local_only=not allow_download)
        except UserError:
            raise
        except Exception as e:  # not cached, or no network
            if allow_download:
                raise UserError(f"{name_or_path}: could not download it ({type(e).__name__}: {_first_line(e)})") from None
            raise UserError(
                f"{name_or_path}: not in the local Hugging Face cache; pass --allow-download to fetch it "
                f"(built-in models: {', '.join(builtin_names())})"
            ) from None
        source = "hub"
    else:
        raise UserError(f"unknown model {name_or_path!r}: built-in models are {', '.join(builtin_names())}")
    pipe = pipe.to(device)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    family = family_of(pipe)
    return LoadedModel(pipe, name_or_path, family, source, _generation_defaults(pipe, family))


def check(name_or_path: str, allow_download: bool = False) -> str:
    """Resolve ``name_or_path`` without loading it -> "builtin", "local" or "hub"; a clear error otherwise.

    Lets a caller refuse a bad name at once instead of after starting a worker process.
    """
    from ..modelref import check_model

    return check_model(name_or_path, allow_download, builtins=builtin_names())


def _from_pretrained(ref: str, dtype, local_only: bool):
    import importlib.util

    from diffusers import DiffusionPipeline

    kwargs = {"local_files_only": local_only}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    if importlib.util.find_spec("accelerate") is not None:
        return DiffusionPipeline.from_pretrained(ref, **kwargs)
    # Without accelerate, diffusers refuses to load a model that keeps some modules in float32
    # (Wan's transformer): load it whole, then put those modules back in float32 by hand.
    _import_components(DiffusionPipeline.load_config(ref, local_files_only=local_only))
    with _no_fp32_modules() as kept:
        pipe = DiffusionPipeline.from_pretrained(ref, **kwargs)
    for comp in getattr(pipe, "components", {}).values():
        names = kept.get(type(comp))
        if names and isinstance(comp, torch.nn.Module):
            for name, module in comp.named_modules():
                if any(n in name.split(".") for n in names):
                    module.to(torch.float32)
    return pipe


def _import_components(index: dict) -> None:
    """Import the classes a pipeline's model_index.json names (diffusers imports them lazily)."""
    import importlib

    for value in index.values():
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, str) for v in value):
            try:
                getattr(importlib.import_module(value[0]), value[1])
            except (ImportError, AttributeError):
                pass  # from_pretrained names what is missing


@contextlib.contextmanager
def _no_fp32_modules():
    from diffusers import ModelMixin

    from ..compat.diffusers import keep_in_fp32_modules, set_keep_in_fp32_modules

    kept: dict[type, list[str]] = {}
    stack = list(ModelMixin.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        names = keep_in_fp32_modules(cls, own=True)
        if names:
            kept[cls] = list(names) if isinstance(names, (list, tuple)) else [names]
    for cls in kept:
        set_keep_in_fp32_modules(cls, None)
    try:
        yield {sub: names for cls, names in kept.items() for sub in _with_subclasses(cls)}
    finally:
        for cls, names in kept.items():
            set_keep_in_fp32_modules(cls, names)


def _with_subclasses(cls) -> list[type]:
    out, stack = [], [cls]
    while stack:
        c = stack.pop()
        out.append(c)
        stack.extend(c.__subclasses__())
    return out


def _generation_defaults(pipe, family: str) -> dict[str, Any]:
    from ..workload import model_generation

    return model_generation(pipe)


def _dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if dtype not in names:
        raise UserError(f"unknown dtype {dtype!r} (use one of {', '.join(names)})")
    return names[dtype]


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]
