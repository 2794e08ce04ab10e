"""DeepCache for UNets: on cached steps only the shallow down/up blocks run; the deep path is reused.

Not supported with ControlNet or T2I-Adapter residuals, whose additions to the skipped deep
features would meet placeholders of the wrong shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..blocks import unet_structure
from .state import BranchStates, CacheCounters, CacheHook, install_hooks

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


class _EntryHook(CacheHook):
    """On down_blocks[0]: advances the step and decides whether the deep path is reused."""

    def __init__(self, cfg, states: BranchStates, counters: CacheCounters, n_live: int, n_deep: int):
        super().__init__(states)
        self.cfg, self.counters, self.n_live, self.n_deep = cfg, counters, n_live, n_deep

    def cached_forward(self, module, st, args, kwargs):
        cfg, c = self.cfg, self.counters
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
        return self.run(args, kwargs)


class _DeepHook(CacheHook):
    """On a deep block: passes its input through when cached (placeholders for a down block's skips)."""

    def __init__(self, states: BranchStates, kind: str, n_res: int = 0, keeps_feature: bool = False):
        super().__init__(states)
        self.kind, self.n_res, self.keeps_feature = kind, n_res, keeps_feature

    def cached_forward(self, module, st, args, kwargs):
        if st.reuse:
            x = _first(args, kwargs)
            if self.kind == "down":
                # the skip connections are consumed only by the deep up blocks, which are skipped too
                return x, (x,) * self.n_res
            return st.feature if self.keeps_feature else x
        out = self.run(args, kwargs)
        if self.keeps_feature:
            st.feature = out
        return out


def _n_res(down_block) -> int:
    return len(down_block.resnets) + (1 if getattr(down_block, "downsamplers", None) else 0)


def apply_deepcache(model: torch.nn.Module, cfg, counters: CacheCounters):
    """Install DeepCache on a UNet; returns the function that removes it.

    ``cfg`` is read for its ``cache_interval``, ``branch``, ``step_start`` and ``step_end`` (a
    ``DeepCacheConfig``, which this hook does not import).
    """
    unet = unet_structure(model)
    down, mid, up = list(getattr(model, unet.down)), getattr(model, unet.mid), list(getattr(model, unet.up))
    b = cfg.branch
    if b > len(down) - 1 or b > len(up) - 2:
        raise ValueError(f"cache.branch={b}: this UNet has {len(down)} down and {len(up)} up blocks; use 0..{min(len(down) - 1, len(up) - 2)}")
    states = BranchStates(_BranchState)
    deep_up = up[: len(up) - 1 - b]
    hooks: list[tuple[torch.nn.Module, CacheHook]] = []
    for d in down[b + 1:]:
        hooks.append((d, _DeepHook(states, "down", _n_res(d))))
    if mid is not None:
        hooks.append((mid, _DeepHook(states, "mid")))
    for i, u in enumerate(deep_up):
        hooks.append((u, _DeepHook(states, "up", keeps_feature=i == len(deep_up) - 1)))
    n_deep = len(hooks)
    n_live = len(down) + len(up) + (mid is not None) - n_deep
    hooks.append((down[0], _EntryHook(cfg, states, counters, n_live, n_deep)))
    return install_hooks(model, [(m, h, HOOK_NAME) for m, h in hooks])
