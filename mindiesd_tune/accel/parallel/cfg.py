"""CFG parallel: the conditional and unconditional passes of a step on different ranks.

Hooks on the denoiser, so every pipeline of a CFG kind works without a copy of its loop:

* batched (``PipelineSpec.cfg == "batched"``): the pipeline doubles the batch; each rank of
  the ``cfg`` axis runs its half and the halves are all-gathered, so every rank returns the
  whole batch.
* separate (true CFG: Flux, Wan, Qwen-Image): the pipeline calls the denoiser once per branch
  inside ``cache_context("cond")`` / ``("uncond")``. Rank 0 runs the ``cond`` call, rank 1 the
  ``uncond`` one; the rank skipping a call returns a placeholder tensor at once and the two
  outputs are exchanged at the ``uncond`` call, where the placeholder is filled in place. The
  placeholder has the output's shape (a step's earlier output, else the latents'), so a slice
  the pipeline takes of it before the ``uncond`` call (Flux Kontext drops its image tokens) is a
  view that is filled with it, and the caller's dtype, so a precision cast around the denoiser
  (``quant.precision``) hands the pipeline the placeholder itself, not a copy made before it was
  filled. The pipeline combines ``cond`` and ``uncond`` only after both calls, so by
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
BATCH_HOOK_NAME = "mindiesd_batched_cfg"


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
                 flag: Callable[[], bool] | None = None, first_arg: str = "hidden_states"):
        super().__init__()
        self.group, self.rank, self.counter = group, rank, counter
        self.probed = probed  # the branch probe is counted: two calls mean both branches run
        self.flag = flag  # else the pipeline's own word, read at the first cond call
        self.first_arg = first_arg
        self.caller_dtype: torch.dtype | None = None  # set by a pre-hook that runs before any other
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
                x = args[0] if args else kwargs.get(self.first_arg)
                ref = x if isinstance(x, torch.Tensor) else _first_tensor(kwargs)
                st.pending = _placeholder(ref, self.caller_dtype)
                return _output_like(st.pending, kwargs)
            st.pending = _placeholder(_first_tensor(st.template), self.caller_dtype)
            return _replace_first(st.template, st.pending)
        # the uncond call: the step's exchange
        if self.rank == 1:
            out = run(*args, **kwargs)
            cond, uncond = all_gather(_first_tensor(out), self.group, self.counter)
            if st.pending is not None:
                if st.pending.shape != cond.shape:  # a denoiser whose output is not the latents' shape
                    st.pending.resize_(cond.shape)
                st.pending.copy_(cond)
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
    pre = None
    if mode == "separate":
        first_arg = next(iter(inspect.signature(model.forward).parameters))
        hook = _SeparateCFGHook(group, rank, counter, probed=probing, flag=flagged, first_arg=first_arg)
        pre = _record_caller_dtype(model, hook, first_arg)
    elif mode == "batched":
        hook = _BatchedCFGHook(model, group, rank, degree, counter)
    else:
        raise ValueError(f"cfg parallel: the pipeline runs CFG {mode!r}, which has no branches to split")
    registry = HookRegistry.check_if_exists_or_initialize(model)
    registry.register_hook(hook, HOOK_NAME)
    unprobe = _count_probe(pipe, probe, hook.state) if probing else (lambda: None)

    def remove() -> None:
        if pre is not None:
            pre.remove()
        unprobe()
        registry.remove_hook(HOOK_NAME, recurse=False)

    return remove


def _placeholder(ref: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """What the pipeline holds as a cond output until it is filled: ``ref``'s shape, so a slice of
    it is a view that is filled too, in the caller's ``dtype`` (``_record_caller_dtype``)."""
    return torch.empty(ref.shape, dtype=dtype or ref.dtype, device=ref.device)


def _record_caller_dtype(model: torch.nn.Module, hook, first_arg: str):
    """A forward pre-hook, run before any other, that records the dtype the caller passes the
    latents in on ``hook.caller_dtype`` (the dtype a placeholder returned to the caller must
    have); returns its handle."""
    def record(_module, args, kwargs):
        x = args[0] if args else kwargs.get(first_arg)
        hook.caller_dtype = x.dtype if isinstance(x, torch.Tensor) and x.is_floating_point() else None

    return model.register_forward_pre_hook(record, prepend=True, with_kwargs=True)


@dataclass
class _PairState:
    paired: bool | None = None  # None: not known yet this call
    probed: int = 0  # calls of the spec's branch probe since the last pipeline call ended
    held: tuple | None = None  # this step's cond call (args, kwargs), waiting for its uncond call
    pending: torch.Tensor | None = None  # the placeholder the pipeline holds as the cond output

    def reset(self) -> None:
        self.__init__()


def _merge(a, b, batch: int):
    """The inputs of two calls as those of one call over both batches: tensors whose first
    dimension is the batch are concatenated, the others (position ids, masks shared by both
    branches) must be the same; None when the calls differ in anything else."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape or a.dtype != b.dtype:
            return None
        if a.dim() and a.shape[0] == batch:
            return torch.cat([a, b])
        return a if a is b or torch.equal(a, b) else None
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return None
        out = {}
        for k in a:
            out[k] = _merge(a[k], b[k], batch)
            if out[k] is None and (a[k] is not None or b[k] is not None):
                return None
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if type(a) is not type(b) or len(a) != len(b):
            return None
        out = [_merge(x, y, batch) for x, y in zip(a, b)]
        if any(o is None and (x is not None or y is not None) for o, x, y in zip(out, a, b)):
            return None
        return type(a)(out)
    try:
        return a if a == b else None
    except (TypeError, ValueError, RuntimeError):  # values without a plain equality (arrays)
        return None


class _BatchedBranchesHook(ModelHook):
    """One device, true CFG: each step's ``cond`` and ``uncond`` calls run as one call over
    twice the batch. The ``cond`` call returns a placeholder at once and keeps its inputs; the
    ``uncond`` call runs both and fills the placeholder in place (the pipeline combines the
    two outputs only after both calls, as CFG parallel relies on too). The placeholder has the
    shape of the call's latents, so a pipeline that slices the ``cond`` output before the
    ``uncond`` call (Flux Kontext drops its image tokens) holds a view that is filled with it,
    and the dtype the caller passed its latents in (``caller_dtype``, recorded by a pre-hook
    that runs before any other), so a precision cast around the denoiser (``quant.precision``)
    hands the pipeline the placeholder itself, not a copy made before it was filled."""

    _is_stateful = True

    def __init__(self, probed: bool, flag: Callable[[], bool] | None, first_arg: str):
        super().__init__()
        self.probed, self.flag, self.first_arg = probed, flag, first_arg
        self.context = _Context(_CallState)
        self.state = _PairState()
        self.merged_calls = 0  # calls that ran both branches at once (tests read it)
        self.caller_dtype: torch.dtype | None = None

    def _latents(self, args, kwargs) -> torch.Tensor | None:
        x = args[0] if args else kwargs.get(self.first_arg)
        return x if isinstance(x, torch.Tensor) else None

    def _fill(self, got: torch.Tensor) -> None:
        """Put the cond output ``got`` into the placeholder the pipeline holds."""
        st = self.state
        if st.pending.shape != got.shape:
            st.pending.resize_(got.shape)
        st.pending.copy_(got)
        st.pending = None

    def new_forward(self, module, *args, **kwargs):
        name, st = self.context.name(), self.state
        run = self.fn_ref.original_forward
        if name == "cond" and st.paired is None:
            # whether an uncond call follows must be known before the first one: a cache
            # keeps per-branch state, which a step run whole and then batched would mix up
            st.paired = st.probed >= 2 if self.probed else bool(self.flag()) if self.flag is not None else False
        x = self._latents(args, kwargs)
        if not st.paired or name not in ("cond", "uncond") or x is None:
            return run(*args, **kwargs)
        if name == "cond":
            if st.held is not None:  # two cond calls in a row: the one held runs alone
                self._fill(_first_tensor(run(*st.held[0], **st.held[1])))
            st.held = (args, kwargs)
            st.pending = _placeholder(x, self.caller_dtype)
            return _output_like(st.pending, kwargs)
        if st.held is None:
            return run(*args, **kwargs)
        (cargs, ckwargs), st.held = st.held, None
        n = x.shape[0]
        both_args, both_kwargs = _merge(tuple(cargs), tuple(args), n), _merge(ckwargs, kwargs, n)
        if both_args is None or both_kwargs is None:  # the branches differ beyond their batch: one after the other
            self._fill(_first_tensor(run(*cargs, **ckwargs)))
            return run(*args, **kwargs)
        out = run(*both_args, **both_kwargs)
        self.merged_calls += 1
        self._fill(_first_tensor(out)[:n])
        return map_tensors(out, lambda t: t[n:] if t.dim() and t.shape[0] == 2 * n else t)

    def reset_state(self, module):
        self.state.reset()
        self.context.reset()
        return module


def _count_probe(pipe, probe: str, state) -> Callable[[], None]:
    """Count the calls of ``pipe.<probe>`` in ``state.probed`` (an instance attribute over the
    method); returns the undo."""
    original = getattr(pipe, probe)

    def counted(*args, **kwargs):
        state.probed += 1
        return original(*args, **kwargs)

    object.__setattr__(pipe, probe, counted)

    def remove() -> None:
        if pipe.__dict__.get(probe) is counted:
            del pipe.__dict__[probe]

    return remove


def install_batched_branches(model: torch.nn.Module, pipe, probe: str | None, flag: str | None):
    """Run each step's two true-CFG calls as one batched call on ``model`` (``steps.batch_cfg``);
    returns the remover. Needs the pipeline spec's ``branch_probe`` or ``branch_flag``, so that
    every step of a call is batched or none is; the caller checks that one is given."""
    probing = probe is not None and callable(getattr(pipe, probe, None))
    flagged = None
    if not probing and flag is not None and hasattr(type(pipe), flag):
        def flagged() -> bool:
            return bool(getattr(pipe, flag))
    first_arg = next(iter(inspect.signature(model.forward).parameters))
    hook = _BatchedBranchesHook(probing, flagged, first_arg)
    registry = HookRegistry.check_if_exists_or_initialize(model)
    registry.register_hook(hook, BATCH_HOOK_NAME)
    unprobe = _count_probe(pipe, probe, hook.state) if probing else (lambda: None)

    pre = _record_caller_dtype(model, hook, first_arg)

    def remove() -> None:
        pre.remove()
        unprobe()
        registry.remove_hook(BATCH_HOOK_NAME, recurse=False)

    return remove
