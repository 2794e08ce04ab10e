"""Cache state kept per CFG branch and per pipeline call, plus counters that outlive calls."""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from diffusers.hooks.hooks import CacheContext, HookRegistry, ModelHook, StateManager

# the context of forwards made outside any ``cache_context`` (pipelines that set none)
_NO_CONTEXT = CacheContext("default")


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

    While ``bypass`` is set (``bypass_hooks``) the hooks run their modules untouched.
    Only StateManager's public methods are used (``set_context``, ``context``, ``get_state``,
    ``reset``); tests/test_cache_state.py checks the behaviour relied on against the installed
    diffusers.
    """

    bypass = False

    def __init__(self, state_cls, init_args=None, init_kwargs=None):
        super().__init__(state_cls, init_args, init_kwargs)
        self._branches: dict = {}
        super().set_context(_NO_CONTEXT)

    def set_context(self, context: CacheContext | None) -> None:
        super().set_context(_NO_CONTEXT if context is None else context)

    def get_state(self):
        state = super().get_state()
        self._branches[self.context.name] = state
        return state

    def reset(self, *args, **kwargs) -> None:
        super().reset(*args, **kwargs)
        self._branches.clear()
        super().set_context(_NO_CONTEXT)

    def branches(self) -> dict:
        """The state of every context seen since the last reset, by context name."""
        return dict(self._branches)


class CacheHook(ModelHook):
    """What every cache hook shares: one BranchStates, bypass while it says so, reset with it.

    Subclasses implement ``cached_forward(module, state, args, kwargs)``; ``run`` calls the
    module as written. The states must stay an attribute of the hook: diffusers finds the
    StateManagers to give a cache context among the attributes of stateful hooks.
    """

    _is_stateful = True

    def __init__(self, states: BranchStates):
        super().__init__()
        self.states = states

    def new_forward(self, module, *args, **kwargs):
        if self.states.bypass:
            return self.fn_ref.original_forward(*args, **kwargs)
        return self.cached_forward(module, self.states.get_state(), args, kwargs)

    def cached_forward(self, module, state, args: tuple, kwargs: dict):
        raise NotImplementedError

    def run(self, args: tuple, kwargs: dict):
        return self.fn_ref.original_forward(*args, **kwargs)

    def reset_state(self, module):
        self.states.reset()
        return module


def registry(module: torch.nn.Module) -> HookRegistry:
    return HookRegistry.check_if_exists_or_initialize(module)


def invalidate(model: torch.nn.Module) -> None:
    """Make the model's registry see hooks added to or removed from its submodules."""
    registry(model).invalidate_child_registries_cache()


def install_hooks(model: torch.nn.Module, hooks: list[tuple[torch.nn.Module, ModelHook, str]]):
    """Register each ``(module, hook, name)`` in order; returns the function that removes them all."""
    for module, hook, name in hooks:
        registry(module).register_hook(hook, name)
    invalidate(model)

    def remove() -> None:
        for module, _, name in reversed(hooks):
            registry(module).remove_hook(name, recurse=False)
        invalidate(model)

    return remove


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


def bypass_hooks(model: torch.nn.Module, states: BranchStates, hook_name: str) -> list:
    """Run forwards with ``skip_layers`` (SD3's skip-layer guidance) uncached: the hook to install last.

    The pipeline makes that forward beside the batched CFG one, with no cache context, on the
    conditional half of the batch and with some blocks left out. Sharing the CFG forward's
    state would count it as a step and add residuals of the wrong batch size; a state of its
    own would break whenever a left-out block is one the hooks live on. It is rare (SD3.5 runs
    it on 1-20% of the steps), so it runs as the model wrote it, outside the counters.
    An empty list for models without ``skip_layers``.
    """
    signature = inspect.signature(model.forward)
    if "skip_layers" not in signature.parameters:
        return []
    return [(model, _BypassSkipLayers(states, signature), hook_name)]


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
