"""The model registry: what the library knows about each denoiser class and each pipeline class.

One ``DenoiserSpec`` per denoiser class holds everything the acceleration methods need to
find their way around it: the family (which picks the search space), the ``nn.ModuleList``
attributes holding its repeated blocks in forward order, per block class the tensors it
returns and its self-attention submodules, the UNet structure, the sparse-attention layout,
and how its pipelines run classifier-free guidance and call the scheduler (``PipelineSpec``).

Specs are keyed by class *name*, so declaring one imports no diffusers model code; lookups
walk the class's MRO, so a subclass of a supported class is supported too. The built-in
specs live one module per family beside this one (``flux``, ``sd3``, ``wan``, ...) and are
imported on the first lookup, followed by third-party ones (``mindiesd_tune.plugins``:
the ``mindiesd_tune.specs`` entry-point group and ``MINDIESD_TUNE_PLUGINS``).

This module imports neither torch nor diffusers.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

logger = logging.getLogger(__name__)

FAMILIES = ("dit-image", "dit-video", "unet-image")

# How a pipeline evaluates classifier-free guidance:
#   batched:  cond and uncond in one denoiser call (the batch is doubled);
#   separate: one denoiser call per branch (true CFG);
#   none:     guidance-distilled, one call per step and no unconditional branch.
CFG_MODES = ("batched", "separate", "none")

ENTRY_POINT_GROUP = "mindiesd_tune.specs"

# the built-in spec modules, imported on the first lookup
_BUILTIN_MODULES = ("flux", "sd3", "wan", "hunyuan_video", "cogvideox", "qwen_image", "pixart", "unet")


class UnsupportedModelError(ValueError):
    """The denoiser (or pipeline) has no spec, or its spec lacks what a method needs."""


@dataclass(frozen=True)
class BlockSpec:
    """One repeated block class.

    Attributes:
        returns: names of the tensors its forward returns, in order; hooks pass inputs
            through or add cached residuals by name. A returned None (SD3's last block drops
            the text stream) is passed through as the input of the same name. One of them
            must be ``hidden_states``, an argument of the block's forward.
        attention: its self-attention submodules (what the attention cache reuses); an
            attribute that is None on an instance (SD3's optional ``attn2``) is skipped.
    """

    returns: tuple[str, ...]
    attention: tuple[str, ...] = ()


@dataclass(frozen=True)
class UNetSpec:
    """The attributes of a UNet's down path, middle block and up path (DeepCache's view)."""

    down: str = "down_blocks"
    mid: str = "mid_block"
    up: str = "up_blocks"


@dataclass(frozen=True)
class SparseSpec:
    """Where sparse attention may go in a denoiser and how it finds the token grid.

    Attributes:
        layers: ``(ModuleList attribute, attention attributes of each block)`` whose
            self-attention sparse attention may replace, in forward order. Cross-attention
            is left out on purpose; an attribute that is None on an instance is skipped.
        processors: the diffusers processor class name a layer runs -> the sparse processor
            replacing it: a class, or ``"module:Class"`` imported when sparse is installed.
        layout: ``(model, forward arguments by name) -> TokenLayout | None``: the token grid
            and the text tokens of one forward call (None: attend densely).
        token_grid: ``(pipe, generation settings) -> grid shape``: the image or video token
            grid the denoiser sees for a generation of that size, without running it.
    """

    layers: tuple[tuple[str, tuple[str, ...]], ...]
    processors: Mapping[str, Any]
    layout: Callable[[Any, dict], Any]
    token_grid: Callable[[Any, dict], tuple[int, ...]]

    def __post_init__(self):
        object.__setattr__(self, "processors", MappingProxyType(dict(self.processors)))


@dataclass(frozen=True)
class PipelineSpec:
    """How a pipeline class drives its denoiser.

    Attributes:
        cfg: ``batched``, ``separate`` or ``none`` (see ``CFG_MODES``).
        scheduler_args: the keyword arguments besides the step count it hands to the
            scheduler's ``set_timesteps`` (through ``retrieve_timesteps``), e.g. ``sigmas``
            and ``mu``; a replacement scheduler must accept them.
        branch_probe: for ``separate`` pipelines, the pipeline method called once per CFG
            branch before the denoising loop (FluxPipeline's ``encode_prompt``, called a second
            time for the negative prompt exactly when true CFG is on). CFG parallel counts its
            calls to know from the first step whether an unconditional call follows; None:
            that is learned from the first step, which then runs whole on every rank.
        branch_flag: for ``separate`` pipelines without a probe, a pipeline attribute that is
            true exactly when an unconditional call follows each conditional one, set before
            the loop (WanPipeline's ``do_classifier_free_guidance``); read at the first
            conditional call to the same end.
    """

    cfg: str
    scheduler_args: tuple[str, ...] = ()
    branch_probe: str | None = None
    branch_flag: str | None = None

    def __post_init__(self):
        if self.cfg not in CFG_MODES:
            raise ValueError(f"PipelineSpec.cfg: {self.cfg!r} is not one of {', '.join(CFG_MODES)}")


@dataclass(frozen=True)
class DenoiserSpec:
    """Everything the library knows about one denoiser class.

    Attributes:
        name: the denoiser class name (subclasses match through the MRO).
        family: ``dit-image``, ``dit-video`` or ``unet-image``; picks the search space.
        block_lists: ``nn.ModuleList`` attributes holding the repeated blocks, in the order
            forward() runs them (empty for UNets, which are not a chain of blocks).
        block_types: block class name -> ``BlockSpec``, for every class in those lists.
        unet: the down/mid/up structure, for UNets.
        sparse: where sparse attention may go; None where it cannot be installed.
        pipelines: pipeline class name -> ``PipelineSpec``, for the pipelines built on it.
        default_pipeline: the ``PipelineSpec`` of a pipeline of this denoiser not listed in
            ``pipelines`` (None: such a pipeline is unsupported where its spec matters).
    """

    name: str
    family: str
    block_lists: tuple[str, ...] = ()
    block_types: Mapping[str, BlockSpec] = field(default_factory=dict)
    unet: UNetSpec | None = None
    sparse: SparseSpec | None = None
    pipelines: Mapping[str, PipelineSpec] = field(default_factory=dict)
    default_pipeline: PipelineSpec | None = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"DenoiserSpec {self.name}: family {self.family!r} is not one of {', '.join(FAMILIES)}")
        if self.block_lists and not self.block_types:
            raise ValueError(f"DenoiserSpec {self.name}: block_lists given without block_types")
        object.__setattr__(self, "block_lists", tuple(self.block_lists))
        object.__setattr__(self, "block_types", MappingProxyType(dict(self.block_types)))
        object.__setattr__(self, "pipelines", MappingProxyType(dict(self.pipelines)))

    def block_spec(self, block) -> BlockSpec | None:
        """The ``BlockSpec`` of a block instance or class (its MRO is searched), or None."""
        return _by_mro(block, self.block_types)


_DENOISERS: dict[str, DenoiserSpec] = {}
_PIPELINES: dict[str, PipelineSpec] = {}
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True  # before importing: the modules call register_denoiser
    for name in _BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{name}")


def _ensure_loaded() -> None:
    _load_builtins()
    from ...plugins import load_plugins

    load_plugins(ENTRY_POINT_GROUP)


def register_denoiser(spec: DenoiserSpec) -> DenoiserSpec:
    """Add ``spec`` to the registry (replacing one of the same name, built-ins included)."""
    if not isinstance(spec, DenoiserSpec):
        raise TypeError(f"register_denoiser takes a DenoiserSpec, not {type(spec).__name__}")
    _load_builtins()  # so that a plugin's spec replaces the built-in one, never the reverse
    if spec.name in _DENOISERS:
        logger.debug("denoiser spec %s replaced", spec.name)
    _DENOISERS[spec.name] = spec
    return spec


def unregister_denoiser(name: str) -> None:
    """Remove the spec of denoiser class ``name`` (no error if there is none)."""
    _DENOISERS.pop(name, None)


def register_pipeline(name: str, spec: PipelineSpec) -> PipelineSpec:
    """Declare how pipeline class ``name`` runs CFG and calls its scheduler.

    For a pipeline whose denoiser spec does not list it, or to override that entry.
    """
    if not isinstance(spec, PipelineSpec):
        raise TypeError(f"register_pipeline takes a PipelineSpec, not {type(spec).__name__}")
    _load_builtins()
    _PIPELINES[name] = spec
    return spec


def registered_denoisers() -> dict[str, DenoiserSpec]:
    """Denoiser class name -> spec, built-in and third-party, sorted by name."""
    _ensure_loaded()
    return dict(sorted(_DENOISERS.items()))


def _by_mro(obj, table: Mapping[str, Any]):
    cls = obj if isinstance(obj, type) else type(obj)
    for klass in cls.__mro__:
        found = table.get(klass.__name__)
        if found is not None:
            return found
    return None


def _denoiser_of(model_or_pipe):
    """The object itself if its class has a spec, else its ``transformer`` or ``unet``."""
    if isinstance(model_or_pipe, type) or _by_mro(model_or_pipe, _DENOISERS) is not None:
        return model_or_pipe
    for attr in ("transformer", "unet"):
        model = getattr(model_or_pipe, attr, None)
        if model is not None:
            return model
    return model_or_pipe


def find_spec(model_or_pipe) -> DenoiserSpec | None:
    """``denoiser_spec``, or None where there is none."""
    _ensure_loaded()
    return _by_mro(_denoiser_of(model_or_pipe), _DENOISERS)


def denoiser_spec(model_or_pipe) -> DenoiserSpec:
    """The spec of a denoiser (instance or class), or of a pipeline's transformer / unet.

    Raises ``UnsupportedModelError`` naming the class and the supported ones.
    """
    spec = find_spec(model_or_pipe)
    if spec is None:
        model = _denoiser_of(model_or_pipe)
        cls = (model if isinstance(model, type) else type(model)).__name__
        raise UnsupportedModelError(f"{cls} is not a supported denoiser (supported: {', '.join(sorted(_DENOISERS))})")
    return spec


def pipeline_spec(pipe) -> PipelineSpec:
    """How ``pipe`` runs CFG and calls its scheduler.

    Looked up by the pipeline class (and its MRO) among ``register_pipeline`` entries, then
    among its denoiser spec's ``pipelines``, then the denoiser's ``default_pipeline``.
    Raises ``UnsupportedModelError`` where none applies.
    """
    _ensure_loaded()
    found = _by_mro(pipe, _PIPELINES)
    if found is not None:
        return found
    denoiser = find_spec(pipe)
    if denoiser is not None:
        found = _by_mro(pipe, denoiser.pipelines) or denoiser.default_pipeline
        if found is not None:
            return found
    cls = (pipe if isinstance(pipe, type) else type(pipe)).__name__
    known = sorted({*_PIPELINES, *(p for s in _DENOISERS.values() for p in s.pipelines)})
    raise UnsupportedModelError(f"{cls} is not a supported pipeline (supported: {', '.join(known)})")


__all__ = [
    "CFG_MODES",
    "ENTRY_POINT_GROUP",
    "FAMILIES",
    "BlockSpec",
    "DenoiserSpec",
    "PipelineSpec",
    "SparseSpec",
    "UNetSpec",
    "UnsupportedModelError",
    "denoiser_spec",
    "find_spec",
    "pipeline_spec",
    "register_denoiser",
    "register_pipeline",
    "registered_denoisers",
    "unregister_denoiser",
]
