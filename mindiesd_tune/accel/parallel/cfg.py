"""CFG parallel: the conditional and unconditional passes of a step on different ranks.

Hooks on the denoiser, so every pipeline of a CFG kind works without a copy of its loop:

* batched (``PipelineSpec.cfg == "batched"``): the pipeline doubles the batch; each rank of
  the ``cfg`` axis runs its half and the halves are all-gathered, so every rank returns the
  whole batch.
* separate (true CFG: Flux, Wan, Qwen-Image): the pipeline calls the denoiser once per branch
  inside ``cache_context("cond")`` / ``("uncond")``. Rank 0 runs the ``cond`` call, rank 1 the
  ``uncond`` one; the rank skipping a call returns an empty placeholder tensor at once and
  the two outputs are exchanged at the ``uncond`` call, where the placeholder is resized and
  filled in place. The pipeline combines ``cond`` and ``uncond`` only after both calls, so by
  then it holds the real values. Whether a step has an ``uncond`` call at all (guidance may
  be off for one call) is read from the pipeline spec's ``branch_probe`` where it names one
  (Flux encodes one prompt per branch before the loop); otherwise it is only known after the
  first step, so the first step of every pipeline call runs whole on both ranks.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from diffusers.hooks.hooks import HookRegistry, ModelHook, StateManager

from .comm import CommCounter, all_gather, map_tensors

HOOK_NAME = "mindiesd_parallel_cfg"


def _first_tensor(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, dict) else out
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
    raise TypeError(f"denoiser output {type(out).__name__} holds no tensor")


def _replace_first(out, tensor: torch.Tensor):
    """``out`` with its first tensor (the noise prediction) replaced by ``tensor``."""
    if isinstance(out, torch.Tensor):
        return tensor
    if isinstance(out, dict):
        key = next(k for k, v in out.items() if isinstance(v, torch.Tensor))
        return type(out)(**{**out, key: tensor})
    i = next(i for i, v in enumerate(out) if isinstance(v, torch.Tensor))
    return type(out)((*out[:i], tensor, *out[i + 1:]))


def _output_like(sample: torch.Tensor, kwargs: dict):
    """A denoiser's output holding ``sample``, in the form diffusers models return it: a tuple
    under ``return_dict=False`` (what pipelines pass), else ``Transformer2DModelOutput``."""
    if kwargs.get("return_dict", True) is False:
        return (sample,)
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    return Transformer2DModelOutput(sample=sample)


class _BatchedCFGHook(ModelHook):
    """Each cfg rank runs its half of a doubled batch; the halves are gathered."""

    def __init__(self, model, group, rank: int, degree: int, counter: CommCounter):
        super().__init__()
        self.group, self.rank, self.degree, self.counter = group, rank, degree, counter
        self.first_arg = next(iter(inspect.signature(model.forward).parameters))

    def new_forward(self, module, *args, **kwargs):
        x = args[0] if args else kwargs.get(self.first_arg)
        batch = x.shape[0] if isinstance(x, torch.Tensor) else 0
        if batch < self.degree or batch % self.degree:
            return self.fn_ref.original_forward(*args, **kwargs)
        local = batch // self.degree

        def split(t):
            return t.narrow(0, self.rank * local, local) if t.dim() and t.shape[0] == batch else t

        out = self.fn_ref.original_forward(*map_tensors(args, split), **map_tensors(kwargs, split))

        def gather(t):
            if not t.dim() or t.shape[0] != local:
                return t
            return torch.cat(all_gather(t, self.group, self.counter), dim=0)

        return map_tensors(out, gather)


class _Context(StateManager):
    """Only to learn the pipeline's cache context: diffusers sets it on stateful hooks' managers."""

    def name(self) -> str | None:
        return self._context.name if self._context is not None else None


@dataclass
class _CallState:
    saw_cond: bool = False
    paired: bool = False  # an uncond call followed a cond one: the pipeline runs true CFG
    probed: int = 0  # calls of the spec's branch probe since the last pipeline call ended
    template: Any = None  # a whole output of this call, to give placeholders its structure
    own: torch.Tensor | None = None  # rank 0: this step's cond output
    pending: torch.Tensor | None = None  # rank 1: the placeholder the pipeline holds as cond

    def reset(self) -> None:
        self.__init__()


class _SeparateCFGHook(ModelHook):
    """Rank 0 runs the ``cond`` calls, rank 1 the ``uncond`` ones; outputs exchanged per step."""

    _is_stateful = True

    def __init__(self, group, rank: int, counter: CommCounter, probed: bool = False,
                 flag: Callable[[], bool] | None = None):
        super().__init__()
        self.group, self.rank, self.counter = group, rank, counter
        self.probed = probed  # the branch probe is counted: two calls mean both branches run
        self.flag = flag  # else the pipeline's own word, read at the first cond call
        self.context = _Context(_CallState)
        self.state = _CallState()

    def new_forward(self, module, *args, **kwargs):
        name, st = self.context.name(), self.state
        run = self.fn_ref.original_forward
        if name == "cond" and not st.saw_cond:
            if self.probed:
                st.paired = st.probed >= 2  # known before the first step: no whole first step
            elif self.flag is not None:
                st.paired = bool(self.flag())
        if name not in ("cond", "uncond") or (name == "cond" and not st.paired):
            st.saw_cond = st.saw_cond or name == "cond"
            out = run(*args, **kwargs)
            st.template = out
            return out
        if name == "uncond" and not st.paired:
            st.paired = st.saw_cond
            return run(*args, **kwargs)
        if name == "cond":
            if self.rank == 0:
                out = run(*args, **kwargs)
                st.own = _first_tensor(out)
                st.template = out
                return out
            if st.template is None:  # split from the first step (probed): no whole output seen yet
                ref = args[0] if args and isinstance(args[0], torch.Tensor) else _first_tensor(kwargs)
                st.pending = torch.empty(0, dtype=ref.dtype, device=ref.device)
                return _output_like(st.pending, kwargs)
            ref = _first_tensor(st.template)
            st.pending = torch.empty(0, dtype=ref.dtype, device=ref.device)
            return _replace_first(st.template, st.pending)
        # the uncond call: the step's exchange
        if self.rank == 1:
            out = run(*args, **kwargs)
            cond, uncond = all_gather(_first_tensor(out), self.group, self.counter)
            if st.pending is not None:
                st.pending.resize_(cond.shape).copy_(cond)
            st.pending = None
            return out
        cond, uncond = all_gather(st.own, self.group, self.counter)
        st.own = None
        return _replace_first(st.template, uncond)

    def reset_state(self, module):
        self.state.reset()
        self.context.reset()
        return module


def install_cfg_parallel(model: torch.nn.Module, mode: str, group, rank: int, degree: int, counter: CommCounter,
                         pipe=None, probe: str | None = None, flag: str | None = None):
    """Put the CFG split of ``mode`` (``batched`` / ``separate``) on ``model``; returns the remover.

    ``probe``: for ``separate``, the ``pipe`` method called once per branch before the loop
    (``PipelineSpec.branch_probe``); its calls are counted through an instance attribute.
    ``flag``: else the ``pipe`` attribute saying whether both branches run (``PipelineSpec.branch_flag``).
    """
    probing = mode == "separate" and probe is not None and pipe is not None and callable(getattr(pipe, probe, None))
    flagged = None
    if mode == "separate" and not probing and flag is not None and pipe is not None and hasattr(type(pipe), flag):
        def flagged() -> bool:
            return bool(getattr(pipe, flag))
    if mode == "separate":
        hook = _SeparateCFGHook(group, rank, counter, probed=probing, flag=flagged)
    elif mode == "batched":
        hook = _BatchedCFGHook(model, group, rank, degree, counter)
    else:
        raise ValueError(f"cfg parallel: the pipeline runs CFG {mode!r}, which has no branches to split")
    registry = HookRegistry.check_if_exists_or_initialize(model)
    registry.register_hook(hook, HOOK_NAME)
    counted = None
    if probing:
        original = getattr(pipe, probe)

        def counted(*args, **kwargs):
            hook.state.probed += 1
            return original(*args, **kwargs)

        object.__setattr__(pipe, probe, counted)

    def remove() -> None:
        if counted is not None and pipe.__dict__.get(probe) is counted:
            del pipe.__dict__[probe]
        registry.remove_hook(HOOK_NAME, recurse=False)

    return remove
