"""Cache state kept per CFG branch and per pipeline call, plus counters that outlive calls."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from diffusers.hooks.hooks import StateManager


class BranchStates(StateManager):
    """diffusers' StateManager, keyed by the pipeline's cache context ("cond"/"uncond").

    Pipelines that set no context share one state named "default". That covers the
    pipelines that batch CFG (SD3, PixArt, CogVideoX's "cond_uncond", SD/SDXL UNets): the
    conditional and unconditional halves share one forward, so they share one state and one
    decision; threshold methods measure change per sample and cache only when every sample
    (both halves, every prompt of a batch) is under the threshold.

    diffusers resets every stateful hook at the end of each pipeline call
    (``maybe_free_model_hooks``), which clears these states, so no cache leaks from one call
    into the next; ``accel.apply`` adds that reset for denoisers without diffusers' CacheMixin.
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
    attention_computed: int = 0
    attention_skipped: int = 0

    def reset(self) -> None:
        self.__init__()

    @property
    def skipped_fraction(self) -> float:
        """Skipped share of block evaluations; of attention evaluations for methods that only skip attention."""
        total = self.blocks_computed + self.blocks_skipped
        if self.blocks_skipped or not (self.attention_computed + self.attention_skipped):
            return self.blocks_skipped / total if total else 0.0
        return self.attention_skipped / (self.attention_computed + self.attention_skipped)

    def as_dict(self) -> dict:
        return {**asdict(self), "skipped_fraction": self.skipped_fraction}
