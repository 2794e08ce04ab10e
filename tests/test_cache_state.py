"""BranchStates against the installed diffusers: the cache hooks' per-branch state rests on it.

Only StateManager's public methods are used; these tests fail first on a diffusers whose
cache contexts or state reset work differently.
"""

from dataclasses import dataclass

import torch
from diffusers.hooks.hooks import HookRegistry
from diffusers.models.cache_utils import CacheMixin

from mindiesd_tune.accel.cache.state import BranchStates, CacheHook, install_hooks


@dataclass
class _Count:
    calls: int = 0

    def reset(self):
        self.calls = 0


class _Counting(CacheHook):
    def cached_forward(self, module, st, args, kwargs):
        st.calls += 1
        return self.run(args, kwargs)


class _Denoiser(torch.nn.Module, CacheMixin):
    def __init__(self):
        super().__init__()
        self.block = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.block(x)


def test_branches_follow_the_pipelines_cache_context_and_default_without_one():
    model, x = _Denoiser(), torch.ones(1, 2)
    states = BranchStates(_Count)
    remove = install_hooks(model, [(model.block, _Counting(states), "count")])
    model(x)  # no cache context: the "default" branch
    for _ in range(2):
        with model.cache_context("cond"):
            model(x)
    with model.cache_context("uncond"):
        model(x)
    model(x)  # the context is cleared on leaving it: "default" again
    assert {k: v.calls for k, v in states.branches().items()} == {"default": 2, "cond": 2, "uncond": 1}

    HookRegistry.check_if_exists_or_initialize(model).reset_stateful_hooks(recurse=True)  # a pipeline call's end
    assert states.branches() == {}
    model(x)
    assert {k: v.calls for k, v in states.branches().items()} == {"default": 1}

    remove()
    assert HookRegistry.check_if_exists_or_initialize(model.block).get_hook("count") is None


def test_bypass_runs_the_module_without_touching_the_state():
    model, x = _Denoiser(), torch.ones(1, 2)
    states = BranchStates(_Count)
    remove = install_hooks(model, [(model.block, _Counting(states), "count")])
    states.bypass = True
    assert torch.equal(model(x), torch.nn.functional.linear(x, model.block.weight, model.block.bias))
    assert states.branches() == {}
    remove()
