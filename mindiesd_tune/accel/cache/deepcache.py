"""DeepCache for UNets: on cached steps only the shallow down/up blocks run; the deep path is reused.

Not supported with ControlNet or T2I-Adapter residuals, whose additions to the skipped deep
features would meet placeholders of the wrong shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.hooks.hooks import HookRegistry, ModelHook

from ..blocks import unet_structure
from ..methods import DeepCacheConfig
from .residual import invalidate
from .state import BranchStates, CacheCounters

HOOK_NAME = "mindiesd_deepcache"


@dataclass
class _BranchState:
    step: int = -1
    last_full: int = -1
    reuse: bool = False
    feature: torch.Tensor | None = None  # output of the deepest skipped up block at the last full step

    def reset(self) -> None:
        self.__init__()


def _first(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


class _EntryHook(ModelHook):
    """On down_blocks[0]: advances the step and decides whether the deep path is reused."""

    _is_stateful = True

    def __init__(self, cfg: DeepCacheConfig, states: BranchStates, counters: CacheCounters, n_live: int, n_deep: int):
        super().__init__()
        self.cfg, self.states, self.counters, self.n_live, self.n_deep = cfg, states, counters, n_live, n_deep

    def new_forward(self, module, *args, **kwargs):
        st, cfg, c = self.states.get_state(), self.cfg, self.counters
        st.step += 1
        st.reuse = (
            st.feature is not None
            and st.step >= cfg.step_start
            and (cfg.step_end == -1 or st.step < cfg.step_end)
            and st.step - st.last_full < cfg.cache_interval
        )
        c.blocks_computed += self.n_live
        if st.reuse:
            c.cached_steps += 1
            c.blocks_skipped += self.n_deep
        else:
            st.last_full = st.step
            c.computed_steps += 1
            c.blocks_computed += self.n_deep
        return self.fn_ref.original_forward(*args, **kwargs)

    def reset_state(self, module):
        self.states.reset()
        return module


class _DeepHook(ModelHook):
    """On a deep block: passes its input through when cached (placeholders for a down block's skips)."""

    _is_stateful = True

    def __init__(self, states: BranchStates, kind: str, n_res: int = 0, keeps_feature: bool = False):
        super().__init__()
        self.states, self.kind, self.n_res, self.keeps_feature = states, kind, n_res, keeps_feature

    def new_forward(self, module, *args, **kwargs):
        st = self.states.get_state()
        if st.reuse:
            x = _first(args, kwargs)
            if self.kind == "down":
                # the skip connections are consumed only by the deep up blocks, which are skipped too
                return x, (x,) * self.n_res
            return st.feature if self.keeps_feature else x
        out = self.fn_ref.original_forward(*args, **kwargs)
        if self.keeps_feature:
            st.feature = out
        return out

    def reset_state(self, module):
        self.states.reset()
        return module


def _n_res(down_block) -> int:
    return len(down_block.resnets) + (1 if getattr(down_block, "downsamplers", None) else 0)


def apply_deepcache(model: torch.nn.Module, cfg: DeepCacheConfig, counters: CacheCounters):
    """Install DeepCache on a UNet; returns the function that removes it."""
    unet = unet_structure(model)
    down, mid, up = list(getattr(model, unet.down)), getattr(model, unet.mid), list(getattr(model, unet.up))
    b = cfg.branch
    if b > len(down) - 1 or b > len(up) - 2:
        raise ValueError(f"cache.branch={b}: this UNet has {len(down)} down and {len(up)} up blocks; use 0..{min(len(down) - 1, len(up) - 2)}")
    states = BranchStates(_BranchState)
    deep_up = up[: len(up) - 1 - b]
    hooks: list[tuple[torch.nn.Module, ModelHook]] = []
    for d in down[b + 1:]:
        hooks.append((d, _DeepHook(states, "down", _n_res(d))))
    if mid is not None:
        hooks.append((mid, _DeepHook(states, "mid")))
    for i, u in enumerate(deep_up):
        hooks.append((u, _DeepHook(states, "up", keeps_feature=i == len(deep_up) - 1)))
    n_deep = len(hooks)
    n_live = len(down) + len(up) + (mid is not None) - n_deep
    hooks.append((down[0], _EntryHook(cfg, states, counters, n_live, n_deep)))
    for m, h in hooks:
        HookRegistry.check_if_exists_or_initialize(m).register_hook(h, HOOK_NAME)
    invalidate(model)

    def remove() -> None:
        for m, _ in hooks:
            HookRegistry.check_if_exists_or_initialize(m).remove_hook(HOOK_NAME, recurse=False)
        invalidate(model)

    return remove
