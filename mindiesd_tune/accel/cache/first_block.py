"""First-block residual cache: skip all blocks after the first when its residual barely changed."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.hooks.hooks import HookRegistry, ModelHook

from ..blocks import Block, transformer_blocks
from ..config import FirstBlockCacheConfig
from .state import BranchStates, CacheCounters

HOOK_NAME = "mindiesd_first_block_cache"


@dataclass
class _BranchState:
    """Per CFG branch, per pipeline call."""

    step: int = 0
    ref_residual: torch.Tensor | None = None  # first block's residual at the last computed step
    head_output: dict | None = None  # first block's outputs at the current step
    tail_residuals: dict = field(default_factory=dict)  # last block output - first block output
    skip: bool = False
    cached_steps: int = 0
    consecutive: int = 0
    accumulated: float = 0.0

    def reset(self) -> None:
        self.__init__()


def relative_l1(new: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean |new - ref| over mean |ref|, the change measure of FBC, TeaCache and DBCache."""
    return ((new - ref).abs().mean() / ref.abs().mean().clamp_min(1e-12)).item()


class _HeadHook(ModelHook):
    _is_stateful = True

    def __init__(self, block: Block, cfg: FirstBlockCacheConfig, states: BranchStates, counters: CacheCounters):
        super().__init__()
        self.block, self.cfg, self.states, self.counters = block, cfg, states, counters

    def new_forward(self, module, *args, **kwargs):
        inputs = self.block.bind(args, kwargs)
        output = self.fn_ref.original_forward(*args, **kwargs)
        outs = self.block.unpack(output)
        st: _BranchState = self.states.get_state()
        residual = outs["hidden_states"] - inputs["hidden_states"]
        st.skip = self._should_skip(st, residual)
        if st.skip:
            st.cached_steps += 1
            st.consecutive += 1
            self.counters.cached_steps += 1
        else:
            st.ref_residual = residual
            st.consecutive = 0
            st.accumulated = 0.0
            self.counters.computed_steps += 1
        st.head_output = outs
        st.step += 1
        self.counters.blocks_computed += 1
        return output

    def _should_skip(self, st: _BranchState, residual: torch.Tensor) -> bool:
        cfg = self.cfg
        if cfg.threshold <= 0 or st.step < cfg.warmup_steps or st.ref_residual is None or not st.tail_residuals:
            return False
        if 0 <= cfg.max_cached_steps <= st.cached_steps:
            return False
        if 0 < cfg.max_consecutive_cached_steps <= st.consecutive:
            return False
        change = relative_l1(residual, st.ref_residual)
        if cfg.accumulate:
            st.accumulated += change
            change = st.accumulated
        return change < cfg.threshold

    def reset_state(self, module):
        self.states.reset()
        return module


class _TailHook(ModelHook):
    _is_stateful = True

    def __init__(self, block: Block, is_last: bool, states: BranchStates, counters: CacheCounters):
        super().__init__()
        self.block, self.is_last, self.states, self.counters = block, is_last, states, counters

    def new_forward(self, module, *args, **kwargs):
        st: _BranchState = self.states.get_state()
        if st.skip:
            self.counters.blocks_skipped += 1
            inputs = self.block.bind(args, kwargs)
            tensors = {n: inputs[n] for n in self.block.returns}
            if self.is_last:
                for n, r in st.tail_residuals.items():
                    tensors[n] = tensors[n] + r
            return self.block.pack(tensors)
        output = self.fn_ref.original_forward(*args, **kwargs)
        self.counters.blocks_computed += 1
        if self.is_last:
            outs = self.block.unpack(output)
            st.tail_residuals = {n: outs[n] - st.head_output[n] for n in outs if n in st.head_output}
        return output

    def reset_state(self, module):
        self.states.reset()
        return module


def apply_first_block_cache(model: torch.nn.Module, cfg: FirstBlockCacheConfig, counters: CacheCounters):
    """Install the cache on ``model``'s blocks; returns a function that removes it."""
    blocks = transformer_blocks(model)
    if len(blocks) < 2:
        raise ValueError("first-block cache needs at least two blocks")
    states = BranchStates(_BranchState)
    head, tail = blocks[0], blocks[1:]
    HookRegistry.check_if_exists_or_initialize(head.module).register_hook(
        _HeadHook(head, cfg, states, counters), HOOK_NAME
    )
    for i, b in enumerate(tail):
        HookRegistry.check_if_exists_or_initialize(b.module).register_hook(
            _TailHook(b, i == len(tail) - 1, states, counters), HOOK_NAME
        )
    _invalidate(model)

    def remove() -> None:
        for b in blocks:
            HookRegistry.check_if_exists_or_initialize(b.module).remove_hook(HOOK_NAME, recurse=False)
        _invalidate(model)

    return remove


def _invalidate(model: torch.nn.Module) -> None:
    HookRegistry.check_if_exists_or_initialize(model).invalidate_child_registries_cache()
