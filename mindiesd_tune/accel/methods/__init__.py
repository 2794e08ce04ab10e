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
from ._block_sparse import BlockSparseConfig, block_sparse_method, masked  # noqa: E402
from .adaptive import HeadAdaptiveSparseConfig  # noqa: E402
from .attention_cache import AttentionCacheConfig  # noqa: E402
from .block_cache import BlockCacheConfig  # noqa: E402
from .cache_none import NoCache  # noqa: E402
from .compile import CompileConfig  # noqa: E402
from .deepcache import DeepCacheConfig  # noqa: E402
from .dense import NoSparse  # noqa: E402
from .diffusers_faster import DiffusersFasterCacheConfig  # noqa: E402
from .diffusers_first_block import DiffusersFirstBlockCacheConfig  # noqa: E402
from .diffusers_mag import DiffusersMagCacheConfig  # noqa: E402
from .diffusers_pab import DiffusersPyramidAttentionBroadcastConfig  # noqa: E402
from .diffusers_taylorseer import DiffusersTaylorSeerConfig  # noqa: E402
from .first_block import FirstBlockCacheConfig  # noqa: E402
from .local import LocalWindowConfig  # noqa: E402
from .parallel import ParallelConfig  # noqa: E402
from .quant import QuantConfig, scheme_method  # noqa: E402
from .schedule import ScheduleCacheConfig  # noqa: E402
from .steps import StepsConfig  # noqa: E402
from .taylorseer import TaylorSeerConfig  # noqa: E402
from .topk import TopKSparseConfig  # noqa: E402


def cache_methods() -> list[str]:
    return method_names("cache")


def sparse_methods() -> list[str]:
    return method_names("sparse")


__all__ = [
    "AttentionCacheConfig",
    "BlockCacheConfig",
    "BlockSparseConfig",
    "CompileConfig",
    "DeepCacheConfig",
    "DiffusersFasterCacheConfig",
    "DiffusersFirstBlockCacheConfig",
    "DiffusersMagCacheConfig",
    "DiffusersPyramidAttentionBroadcastConfig",
    "DiffusersTaylorSeerConfig",
    "FirstBlockCacheConfig",
    "HeadAdaptiveSparseConfig",
    "Knob",
    "LocalWindowConfig",
    "Method",
    "NoCache",
    "NoSparse",
    "ParallelConfig",
    "QuantConfig",
    "ScheduleCacheConfig",
    "Section",
    "StepsConfig",
    "TaylorSeerConfig",
    "TopKSparseConfig",
    "block_sparse_method",
    "cache_methods",
    "field_text",
    "get_method",
    "method_names",
    "masked",
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
