"""Residual block caching, the engine behind first-block cache, block cache and TaylorSeer.

The block chain is cut in three: the front blocks (Fn) and back blocks (Bn) run at every
step; on a cached step the middle blocks pass their inputs through and the last of them
adds the middle's residual (output minus input) from the last computed step, or a Taylor
extrapolation of it. A policy decides, once per step and CFG branch, whether to cache.

Only block 0 (to count the step and, for threshold policies, keep its input) and the
middle blocks carry hooks; the front and back blocks run untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..blocks import Block, transformer_blocks
from . import state
from .state import BranchStates, CacheCounters, CacheHook, bypass_hooks, install_hooks

HOOK_NAME = "mindiesd_residual_cache"


def relative_l1(new: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean |new - ref| over mean |ref|, per sample, the largest over the batch.

    The change measure of FBC, TeaCache and DBCache. Taken per sample so that a batch of
    several prompts, or a batched cond+uncond CFG pair, caches only when every sample in it
    would: one forward computes all samples or none.
    """
    if new.dim() < 2:
        new, ref = new.reshape(1, -1), ref.reshape(1, -1)
    diff = (new - ref).abs().flatten(1).mean(1)
    scale = ref.abs().flatten(1).mean(1)
    if state.change_reduction is not None:
        diff, scale = state.change_reduction(diff, scale)
    return (diff / scale.clamp_min(1e-12)).max().item()


@dataclass
class _BranchState:
    """Per CFG branch, per pipeline call."""

    step: int = -1  # index of the current step
    entry_in: torch.Tensor | None = None  # block 0's input hidden_states (threshold policies)
    ref_signal: torch.Tensor | None = None  # front residual at the last computed step
    mid_in: dict | None = None  # the middle's inputs at the current (computed) step
    residual: dict | None = None  # middle output - middle input at the last computed step
    taylor: dict | None = None  # name -> [F, dF, d2F] at the last computed step
    computed_step: int = -1  # the step ``residual`` / ``taylor`` come from
    skip: bool = False
    cached_steps: int = 0
    consecutive: int = 0
    accumulated: float = 0.0

    def reset(self) -> None:
        self.__init__()


class Policy:
    """Decides whether the current step reuses the middle blocks."""

    needs_signal = False  # whether ``decide`` reads the front residual's change
    taylor_order = 0

    def decide(self, st: _BranchState, signal: torch.Tensor | None) -> bool:
        raise NotImplementedError


class ThresholdPolicy(Policy):
    """First-block cache: reuse while the front residual's relative change is under a threshold."""

    def __init__(self, threshold: float, warmup_steps: int = 0, max_cached_steps: int = -1,
                 max_consecutive_cached_steps: int = -1, accumulate: bool = False):
        self.threshold, self.warmup_steps = threshold, warmup_steps
        self.max_cached, self.max_consecutive, self.accumulate = max_cached_steps, max_consecutive_cached_steps, accumulate
        self.needs_signal = threshold > 0

    def decide(self, st, signal):
        if self.threshold <= 0 or st.step < self.warmup_steps or st.ref_signal is None or st.residual is None:
            return False
        if 0 <= self.max_cached <= st.cached_steps:
            return False
        if 0 < self.max_consecutive <= st.consecutive:
            return False
        change = relative_l1(signal, st.ref_signal)
        if self.accumulate:
            st.accumulated += change
            change = st.accumulated
        return change < self.threshold


class SchedulePolicy(Policy):
    """Block cache / TaylorSeer: within [step_start, step_end) a full step every ``step_interval``
    steps; the steps in between reuse, optionally only while the threshold allows."""

    def __init__(self, step_start: int, step_end: int, step_interval: int, threshold: float = 0.0, taylor_order: int = 0):
        self.step_start, self.step_end, self.step_interval = step_start, step_end, step_interval
        self.threshold, self.taylor_order = threshold, taylor_order
        self.needs_signal = threshold > 0 and step_interval > 1

    def decide(self, st, signal):
        if self.step_interval <= 1 or st.residual is None or st.step < self.step_start:
            return False
        if 0 <= self.step_end <= st.step:
            return False
        if st.consecutive >= self.step_interval - 1:
            return False
        if self.threshold > 0:
            return st.ref_signal is not None and relative_l1(signal, st.ref_signal) < self.threshold
        return True


class MaskPolicy(Policy):
    """Calibrated schedule: compute exactly the steps in ``compute_steps``, reuse on the others.

    Steps after the last listed one (a call with more steps than the mask was made for) are
    computed, so such a call degrades towards the baseline rather than reusing a stale residual.
    An empty mask computes every step.
    """

    def __init__(self, compute_steps, taylor_order: int = 0):
        self.compute = frozenset(int(s) for s in compute_steps)
        self.last = max(self.compute, default=-1)
        self.taylor_order = taylor_order

    def decide(self, st, signal):
        return st.residual is not None and st.step < self.last and st.step not in self.compute


class _EntryHook(CacheHook):
    """On block 0: counts the step and keeps the input the front residual is measured from."""

    def __init__(self, block: Block, policy: Policy, states: BranchStates, counters: CacheCounters, n_live: int):
        super().__init__(states)
        self.block, self.policy, self.counters, self.n_live = block, policy, counters, n_live

    def cached_forward(self, module, st, args, kwargs):
        st.step += 1
        self.counters.blocks_computed += self.n_live
        if self.policy.needs_signal:
            st.entry_in = self.block.bind(args, kwargs)["hidden_states"]
        return self.run(args, kwargs)


class _MiddleHook(CacheHook):
    """On each middle block: the first decides, all pass through when cached, the last adds the residual."""

    def __init__(self, block: Block, first: bool, last: bool, policy: Policy, states: BranchStates,
                 counters: CacheCounters, n_mid: int):
        super().__init__(states)
        self.block, self.first, self.last, self.policy = block, first, last, policy
        self.counters, self.n_mid = counters, n_mid

    def cached_forward(self, module, st, args, kwargs):
        inputs = None
        if self.first:
            inputs = self.block.bind(args, kwargs)
            mid_in = {n: inputs[n] for n in self.block.returns if inputs.get(n) is not None}
            signal = None
            if self.policy.needs_signal and st.entry_in is not None:
                signal = mid_in["hidden_states"] - st.entry_in
            st.skip = self.policy.decide(st, signal)
            c = self.counters
            if st.skip:
                st.cached_steps += 1
                st.consecutive += 1
                c.cached_steps += 1
                c.blocks_skipped += self.n_mid
            else:
                st.consecutive = 0
                st.accumulated = 0.0
                st.mid_in = mid_in
                if signal is not None:
                    st.ref_signal = signal
                c.computed_steps += 1
                c.blocks_computed += self.n_mid
        if st.skip:
            if inputs is None:
                inputs = self.block.bind(args, kwargs)
            tensors = {n: inputs.get(n) for n in self.block.returns}
            if self.last:
                for n, r in self._residual(st).items():
                    tensors[n] = tensors[n] + r
            return self.block.pack(tensors)
        output = self.run(args, kwargs)
        if self.last:
            self._store(st, self.block.unpack(output))
        return output

    def _store(self, st: _BranchState, outs: dict) -> None:
        residual = {n: outs[n] - st.mid_in[n] for n in st.mid_in if outs.get(n) is not None}
        order = self.policy.taylor_order
        if order:
            old, dt = st.taylor, st.step - st.computed_step
            taylor = {}
            for n, f in residual.items():
                terms = [f]
                prev = old.get(n) if old else None
                for i in range(order):
                    if prev is None or i >= len(prev):
                        break
                    terms.append((terms[i] - prev[i]) / dt)
                taylor[n] = terms
            st.taylor = taylor
        st.residual = residual
        st.computed_step = st.step

    def _residual(self, st: _BranchState) -> dict:
        if not self.policy.taylor_order:
            return st.residual
        dt = st.step - st.computed_step
        out = {}
        for n, terms in st.taylor.items():
            r = terms[0]
            for i in range(1, len(terms)):
                r = r + terms[i] * (dt**i / math.factorial(i))
            out[n] = r
        return out


def segment(n_blocks: int, block_start: int, block_end: int) -> tuple[int, int]:
    """(first middle block, first back block) for a stack of ``n_blocks``; clear errors when empty."""
    end = n_blocks if block_end == -1 else block_end
    if not 0 <= block_start < end <= n_blocks:
        raise ValueError(
            f"cache.block_start={block_start}, cache.block_end={block_end} leave no blocks to cache in a model with {n_blocks} blocks"
        )
    return block_start, end


def install_residual_cache(model: torch.nn.Module, policy: Policy, counters: CacheCounters,
                           block_start: int, block_end: int = -1):
    """Hook ``model``'s blocks so that blocks [block_start, block_end) are cached by ``policy``."""
    blocks = transformer_blocks(model)
    start, end = segment(len(blocks), block_start, block_end)
    n_mid = end - start
    states = BranchStates(_BranchState)
    hooks = [(blocks[i].module, _MiddleHook(blocks[i], i == start, i == end - 1, policy, states, counters, n_mid), HOOK_NAME)
             for i in range(start, end)]
    # block 0 counts the step; registered after the middle hooks, so on a shared block 0 it runs first
    hooks.append((blocks[0].module, _EntryHook(blocks[0], policy, states, counters, n_live=len(blocks) - n_mid),
                  HOOK_NAME + "_entry"))
    return install_hooks(model, hooks + bypass_hooks(model, states, HOOK_NAME + "_bypass"))
