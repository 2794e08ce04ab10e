"""Step and block caching methods: config type -> installer, plus shared state and counters."""

from ..config import FirstBlockCacheConfig, NoCache
from .first_block import apply_first_block_cache, relative_l1
from .state import BranchStates, CacheCounters

# config dataclass -> installer(model, cfg, counters) -> remove()
INSTALLERS = {
    FirstBlockCacheConfig: apply_first_block_cache,
}


def install_cache(model, cfg, counters: CacheCounters):
    """Install the cache method ``cfg`` on ``model``; returns the function that removes it."""
    if isinstance(cfg, NoCache):
        return lambda: None
    try:
        installer = INSTALLERS[type(cfg)]
    except KeyError:
        raise ValueError(f"no installer for cache method {cfg.method!r}") from None
    return installer(model, cfg, counters)


__all__ = ["CacheCounters", "BranchStates", "install_cache", "relative_l1", "apply_first_block_cache"]
