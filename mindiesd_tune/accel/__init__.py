"""The acceleration library, usable without the tuner: ``apply(pipe, AccelConfig(...)) -> Handle``.

The methods and their configs live in the method registry (``accel.methods``), one module each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# Everything here but the model lookup and the step statistics imports without torch; those
# resolve on first use, so that reading a profile (`validate`, `show`) stays light. Importing
# accel.methods registers the built-in entries, which AccelConfig reads from the registry.
from .apply import AlreadyAppliedError, Handle, NotRemovableError, apply
from .config import AccelConfig, ConfigError, ConflictError
from .methods import CONFIGS, BlockSparseConfig, Method, QuantConfig, cache_methods, register_method, sparse_methods

_LAZY = {
    "UnsupportedModelError": ".blocks",
    "find_denoiser": ".blocks",
    "transformer_blocks": ".blocks",
    "StepStatistics": ".cache",
    "compatible_schedulers": ".cache",
    "step_statistics": ".cache",
}

if TYPE_CHECKING:
    from .blocks import UnsupportedModelError, find_denoiser, transformer_blocks
    from .cache import StepStatistics, compatible_schedulers, step_statistics


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)


# every registered entry's config class, by its name (from the registry, as accel.methods exports them)
globals().update(CONFIGS)

__all__ = [
    "AccelConfig",
    "AlreadyAppliedError",
    "BlockSparseConfig",
    "ConfigError",
    "ConflictError",
    "Handle",
    "Method",
    "NotRemovableError",
    "QuantConfig",
    "StepStatistics",
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
__all__ += sorted(CONFIGS)
