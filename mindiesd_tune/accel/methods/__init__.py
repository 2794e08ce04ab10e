"""The built-in methods, one module each, and the registry's lookups re-exported.

``register_method(Method(...))`` adds a method; ``get_method(section, name)``,
``methods(section)`` and ``method_of(cfg)`` look entries up. ``AccelConfig`` builds its
sections from here, ``accel.apply`` installs the entries in their order, and
``search_spaces`` assembles a study's space from their ``suggest``/``applies``/``presets``.
Third-party methods register the same way from their own module, found through the
``mindiesd_tune.methods`` entry-point group or ``MINDIESD_TUNE_PLUGINS``
(``mindiesd_tune.plugins.load_plugins``). See docs/architecture.md, "Method registry".
"""

from __future__ import annotations

from .. import registry  # noqa: F401  (the registry module, also as ``accel.methods.registry``)
from ..registry import (
    Knob,
    Method,
    Section,
    field_text,
    get_method,
    method_names,
    method_of,
    methods,
    register_method,
    register_section,
    section,
    sections,
    unregister_method,
)

# The order is the order sections are written in a profile and installed on a model: the
# step count and scheduler first, the compiled blocks last (compiled with every hook in place).
register_section(Section("steps", None, "steps", 10, "denoising step count and scheduler"))
register_section(Section("cache", "method", "none", 20, "reuse of block, attention or UNet features between steps"))
register_section(Section("sparse", "method", "none", 30, "block-sparse self-attention and the attention backend"))
register_section(Section("quant", "scheme", "none", 40, "weight/activation quantisation"))
register_section(Section("parallel", None, "mesh", 50, "multi-device mesh degrees"))
register_section(Section("compile", None, "regional", 60, "regional torch.compile"))

# each module registers its method on import
from . import (  # noqa: E402, F401
    _block_sparse,
    adaptive,
    attention_cache,
    block_cache,
    cache_none,
    compile,
    deepcache,
    dense,
    diffusers_faster,
    diffusers_first_block,
    diffusers_mag,
    diffusers_pab,
    diffusers_taylorseer,
    first_block,
    local,
    parallel,
    quant,
    schedule,
    steps,
    taylorseer,
    topk,
)
from ._block_sparse import BlockSparseConfig, block_sparse_method, masked  # noqa: E402
from .quant import QuantConfig, scheme_method  # noqa: E402


def config_classes() -> dict[str, type]:
    """Class name -> config class of every registered entry (the facades export these)."""
    return {m.config.__name__: m.config for m in methods()}


def cache_methods() -> list[str]:
    return method_names("cache")


def sparse_methods() -> list[str]:
    return method_names("sparse")


# the config classes, exported by their names: derived from the registry, so a new built-in
# method is exported without a list to keep in step
CONFIGS = config_classes()
globals().update(CONFIGS)

__all__ = [
    "BlockSparseConfig",
    "Knob",
    "Method",
    "QuantConfig",
    "Section",
    "block_sparse_method",
    "cache_methods",
    "config_classes",
    "field_text",
    "get_method",
    "masked",
    "method_names",
    "method_of",
    "methods",
    "register_method",
    "register_section",
    "scheme_method",
    "section",
    "sections",
    "sparse_methods",
    "unregister_method",
]
__all__ += sorted(CONFIGS)
