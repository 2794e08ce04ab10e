"""The acceleration library, usable without the tuner: ``apply(pipe, AccelConfig(...)) -> Handle``."""

from .apply import AlreadyAppliedError, Handle, apply
from .blocks import UnsupportedModelError, find_denoiser, transformer_blocks
from .config import (
    AccelConfig,
    CompileConfig,
    ConfigError,
    FirstBlockCacheConfig,
    NoCache,
    ParallelConfig,
    QuantConfig,
    SparseConfig,
    cache_methods,
)

__all__ = [
    "AccelConfig",
    "AlreadyAppliedError",
    "CompileConfig",
    "ConfigError",
    "FirstBlockCacheConfig",
    "Handle",
    "NoCache",
    "ParallelConfig",
    "QuantConfig",
    "SparseConfig",
    "UnsupportedModelError",
    "apply",
    "cache_methods",
    "find_denoiser",
    "transformer_blocks",
]
