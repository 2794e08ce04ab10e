"""Attention cache (MindIE SD's attention_cache): reuse self-attention outputs between full steps."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.hooks.hooks import HookRegistry, ModelHook

from ..blocks import transformer_blocks
from ..methods import AttentionCacheConfig
from .residual import invalidate, segment
from .state import BranchStates, CacheCounters, bypass_skip_layer_calls

HOOK_NAME = "mindiesd_attention_cache"


@dataclass
class _BranchState:
    step: int = -1
    last_full: int = -1  # the last step whose attention was computed
    reuse: bool = False
    outputs: dict = field(default_factory=dict)  # attention module name -> its output

    def reset(self) -> None:
        self.__init__()


class _StepHook(ModelHook):
    """On block 0: advances the step and decides, once for all cached modules, whether it reuses."""

    _is_stateful = True

    def __init__(self, cfg: AttentionCacheConfig, states: BranchStates):
        super().__init__()
        self.cfg, self.states = cfg, states

    def new_forward(self, module, *args, **kwargs):
        if self.states.bypass:
            return self.fn_ref.original_forward(*args, **kwargs)
        st = self.states.get_state()
        st.step += 1
        cfg = self.cfg
        st.reuse = (
            st.last_full >= 0
            and st.step >= cfg.step_start
            and (cfg.step_end == -1 or st.step < cfg.step_end)
            and st.step - st.last_full < cfg.step_interval
        )
        if not st.reuse:
            st.last_full = st.step
        return self.fn_ref.original_forward(*args, **kwargs)

    def reset_state(self, module):
        self.states.reset()
        return module


class _AttentionHook(ModelHook):
    _is_stateful = True

    def __init__(self, name: str, states: BranchStates, counters: CacheCounters):
        super().__init__()
        self.name, self.states, self.counters = name, states, counters

    def new_forward(self, module, *args, **kwargs):
        if self.states.bypass:
            return self.fn_ref.original_forward(*args, **kwargs)
        st = self.states.get_state()
        if st.reuse:
            out = st.outputs.get(self.name)
            if out is not None:
                self.counters.attention_skipped += 1
                return out
        out = self.fn_ref.original_forward(*args, **kwargs)
        st.outputs[self.name] = out
        self.counters.attention_computed += 1
        return out

    def reset_state(self, module):
        self.states.reset()
        return module


def apply_attention_cache(model: torch.nn.Module, cfg: AttentionCacheConfig, counters: CacheCounters):
    """Cache the self-attention of blocks [block_start, block_end); returns the function that removes it."""
    blocks = transformer_blocks(model)
    start, end = segment(len(blocks), cfg.block_start, cfg.block_end)
    states = BranchStates(_BranchState)
    modules = [(n, m) for b in blocks[start:end] for n, m in b.attention_modules()]
    if not modules:
        raise ValueError(f"{type(model).__name__}: no attention modules in blocks {start}..{end - 1}")
    for name, m in modules:
        HookRegistry.check_if_exists_or_initialize(m).register_hook(_AttentionHook(name, states, counters), HOOK_NAME)
    step_module = blocks[0].module
    HookRegistry.check_if_exists_or_initialize(step_module).register_hook(_StepHook(cfg, states), HOOK_NAME + "_step")
    unbypass = bypass_skip_layer_calls(model, states, HOOK_NAME + "_bypass")
    invalidate(model)

    def remove() -> None:
        unbypass()
        for _, m in modules:
            HookRegistry.check_if_exists_or_initialize(m).remove_hook(HOOK_NAME, recurse=False)
        HookRegistry.check_if_exists_or_initialize(step_module).remove_hook(HOOK_NAME + "_step", recurse=False)
        invalidate(model)

    return remove
