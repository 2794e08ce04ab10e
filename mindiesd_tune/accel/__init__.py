"""The acceleration library, usable without the tuner: ``apply(pipe, AccelConfig(...)) -> Handle``.

The methods and their configs live in the method registry (``accel.methods``), one module each.
"""

from .apply import AlreadyAppliedError, Handle, apply
from .blocks import UnsupportedModelError, find_denoiser, transformer_blocks
from .cache import StepStatistics, compatible_schedulers, step_statistics
from .config import AccelConfig, ConfigError, ConflictError
from .methods import (
    AttentionCacheConfig,
    BlockCacheConfig,
    BlockSparseConfig,
    CompileConfig,
    DeepCacheConfig,
    DiffusersFasterCacheConfig,
    DiffusersFirstBlockCacheConfig,
    DiffusersMagCacheConfig,
    DiffusersPyramidAttentionBroadcastConfig,
    DiffusersTaylorSeerConfig,
    FirstBlockCacheConfig,
    HeadAdaptiveSparseConfig,
    LocalWindowConfig,
    Method,
    NoCache,
    NoSparse,
    ParallelConfig,
    QuantConfig,
    StepsConfig,
    TaylorSeerConfig,
    TopKSparseConfig,
    cache_methods,
    register_method,
    sparse_methods,
)

__all__ = [
    "AccelConfig",
    "AlreadyAppliedError",
    "AttentionCacheConfig",
    "BlockCacheConfig",
    "BlockSparseConfig",
    "CompileConfig",
    "ConfigError",
    "ConflictError",
    "DeepCacheConfig",
    "DiffusersFasterCacheConfig",
    "DiffusersFirstBlockCacheConfig",
    "DiffusersMagCacheConfig",
    "DiffusersPyramidAttentionBroadcastConfig",
    "DiffusersTaylorSeerConfig",
    "FirstBlockCacheConfig",
    "Handle",
    "HeadAdaptiveSparseConfig",
    "LocalWindowConfig",
    "Method",
    "NoCache",
    "NoSparse",
    "ParallelConfig",
    "QuantConfig",
    "StepStatistics",
    "StepsConfig",
    "TaylorSeerConfig",
    "TopKSparseConfig",
    "UnsupportedModelError",
    "apply",
    "cache_methods",
    "compatible_schedulers",
    "find_denoiser",
    "register_method",
    "sparse_methods",
    "step_statistics",
    "transformer_blocks",
]
