"""The caching hooks: shared per-branch state and counters, step statistics, the scheduler swap.

The hooks behind the cache methods: ``first_block``, ``block_cache``, ``taylorseer``
(residual caching of the middle blocks), ``schedule`` (the whole stack on a calibrated
step mask), ``attention_cache``, ``deepcache`` (UNets), and
adapters for diffusers' own hooks (``diffusers_*``); the scheduler swap behind the ``steps``
section. Each method's entry (``accel.methods``) calls its installer here; the hooks take
plain arguments and import nothing from the entries, so the registry sits above them.
``step_statistics`` measures a model's per-step change so search spaces can centre
thresholds on it.
"""

from __future__ import annotations

from .adapters import apply_diffusers_cache
from .attention import apply_attention_cache
from .deepcache import apply_deepcache
from .residual import relative_l1
from .schedule import apply_schedule_cache, select_steps
from .state import BranchStates, CacheCounters
from .stats import StepStatistics, step_statistics
from .steps import apply_step_reduction, build_scheduler, compatible_schedulers

__all__ = [
    "BranchStates",
    "CacheCounters",
    "StepStatistics",
    "apply_attention_cache",
    "apply_deepcache",
    "apply_diffusers_cache",
    "apply_schedule_cache",
    "apply_step_reduction",
    "build_scheduler",
    "compatible_schedulers",
    "relative_l1",
    "select_steps",
    "step_statistics",
]
