"""Cache state kept per CFG branch and per pipeline call, plus counters that outlive calls."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from diffusers.hooks.hooks import StateManager


class BranchStates(StateManager):
    """diffusers' StateManager, keyed by the pipeline's cache context ("cond"/"uncond").

    Pipelines that set no context share one state named "default". diffusers resets every
    stateful hook at the end of each pipeline call (``maybe_free_model_hooks``), which clears
    these states, so no cache leaks from one call into the next.
    """

    def get_state(self):
        name = self._context.name if self._context is not None else "default"
        state = self._state_cache.get(name)
        if state is None:
            state = self._state_cache[name] = self._state_cls(*self._init_args, **self._init_kwargs)
        return state


@dataclass
class CacheCounters:
    """How much work the cache saved since apply() or the last reset()."""

    blocks_computed: int = 0
    blocks_skipped: int = 0
    computed_steps: int = 0
    cached_steps: int = 0

    def reset(self) -> None:
        self.__init__()

    @property
    def skipped_fraction(self) -> float:
        total = self.blocks_computed + self.blocks_skipped
        return self.blocks_skipped / total if total else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "skipped_fraction": self.skipped_fraction}
