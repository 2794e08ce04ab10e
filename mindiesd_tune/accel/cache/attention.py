"""Attention cache (MindIE SD's attention_cache): reuse self-attention outputs between full steps."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..blocks import transformer_blocks
from .residual import segment
from .state import BranchStates, CacheCounters, CacheHook, bypass_hooks, install_hooks

HOOK_NAME = "mindiesd_attention_cache"


@dataclass
class _BranchState:
    step: int = -1
    last_full: int = -1  # the last step whose attention was computed
    reuse: bool = False
    outputs: dict = field(default_factory=dict)  # attention module name -> its output

    def reset(self) -> None:
        self.__init__()


class _StepHook(CacheHook):
    """On block 0: advances the step and decides, once for all cached modules, whether it reuses."""

    def __init__(self, cfg, states: BranchStates):
        super().__init__(states)
        self.cfg = cfg

    def cached_forward(self, module, st, args, kwargs):
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
        return self.run(args, kwargs)


class _AttentionHook(CacheHook):
    def __init__(self, name: str, states: BranchStates, counters: CacheCounters):
        super().__init__(states)
        self.name, self.counters = name, counters

    def cached_forward(self, module, st, args, kwargs):
        if st.reuse:
            out = st.outputs.get(self.name)
            if out is not None:
                self.counters.attention_skipped += 1
                return out
        out = self.run(args, kwargs)
        st.outputs[self.name] = out
        self.counters.attention_computed += 1
        return out


def apply_attention_cache(model: torch.nn.Module, cfg, counters: CacheCounters):
    """Cache the self-attention of blocks [block_start, block_end); returns the function that removes it.

    ``cfg`` is read for its ``step_start``, ``step_end``, ``step_interval``, ``block_start`` and
    ``block_end`` (an ``AttentionCacheConfig``, which this hook does not import).
    """
    blocks = transformer_blocks(model)
    start, end = segment(len(blocks), cfg.block_start, cfg.block_end)
    states = BranchStates(_BranchState)
    modules = [(n, m) for b in blocks[start:end] for n, m in b.attention_modules()]
    if not modules:
        raise ValueError(f"{type(model).__name__}: no attention modules in blocks {start}..{end - 1}")
    hooks = [(m, _AttentionHook(name, states, counters), HOOK_NAME) for name, m in modules]
    hooks.append((blocks[0].module, _StepHook(cfg, states), HOOK_NAME + "_step"))
    return install_hooks(model, hooks + bypass_hooks(model, states, HOOK_NAME + "_bypass"))
