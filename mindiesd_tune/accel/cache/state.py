"""Cache state kept per CFG branch and per pipeline call, plus counters that outlive calls."""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from diffusers.hooks.hooks import HookRegistry, ModelHook, StateManager


# Set by accel.parallel while a multi-device mesh is installed, None otherwise:
# ``(|new - ref| per sample, |ref| per sample) -> the same over the whole call``. Ranks that
# share one denoiser call hold parts of it (sequence shards, batch halves); reducing the
# change metric before a threshold decides keeps the cache decision identical on every rank.
change_reduction: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None


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

    While ``bypass`` is set (``bypass_skip_layer_calls``) the hooks run their modules untouched.
    """

    bypass = False

    def get_state(self):
        name = self._context.name if self._context is not None else "default"
        state = self._state_cache.get(name)
        if state is None:
            state = self._state_cache[name] = self._state_cls(*self._init_args, **self._init_kwargs)
        return state


class _BypassSkipLayers(ModelHook):
    """On the denoiser: a forward given ``skip_layers`` runs with the cache hooks bypassed."""

    def __init__(self, states: BranchStates, signature: inspect.Signature):
        super().__init__()
        self.states, self.signature = states, signature

    def new_forward(self, module, *args, **kwargs):
        if self.signature.bind_partial(*args, **kwargs).arguments.get("skip_layers") is None:
            return self.fn_ref.original_forward(*args, **kwargs)
        self.states.bypass = True
        try:
            return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            self.states.bypass = False


def bypass_skip_layer_calls(model: torch.nn.Module, states: BranchStates, hook_name: str):
    """Run forwards with ``skip_layers`` (SD3's skip-layer guidance) uncached; returns the remover.

    The pipeline makes that forward beside the batched CFG one, with no cache context, on the
    conditional half of the batch and with some blocks left out. Sharing the CFG forward's
    state would count it as a step and add residuals of the wrong batch size; a state of its
    own would break whenever a left-out block is one the hooks live on. It is rare (SD3.5 runs
    it on 1-20% of the steps), so it runs as the model wrote it, outside the counters.
    """
    signature = inspect.signature(model.forward)
    if "skip_layers" not in signature.parameters:
        return lambda: None
    registry = HookRegistry.check_if_exists_or_initialize(model)
    registry.register_hook(_BypassSkipLayers(states, signature), hook_name)
    return lambda: registry.remove_hook(hook_name, recurse=False)


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
