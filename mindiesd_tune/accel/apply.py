"""apply(pipe, cfg) -> Handle: install an AccelConfig on a pipeline; Handle.remove() undoes it."""

from __future__ import annotations

from typing import Callable

from .attached import active_handle, attach, detach
from .config import AccelConfig


class AlreadyAppliedError(RuntimeError):
    pass


class NotRemovableError(RuntimeError):
    """``remove()`` of a handle whose install dropped original weights (``keep_original=False``).

    Raised before anything is taken off: the pipeline keeps running accelerated, as before the call.
    """


class Handle:
    """What ``apply`` installed on one pipeline.

    ``remove()`` restores the pipeline so that it produces bit-identical output to before, or,
    when the install dropped original weights (``keep_original=False`` with a precision cast
    or a quant scheme; ``removable`` is False), raises ``NotRemovableError`` naming them and
    takes nothing off;
    ``counters`` says how many block evaluations were computed and skipped,
    ``sparse_counters`` how many attention calls ran sparse and at what density.

    ``call_overrides`` are the generation settings the config overrides (the steps section sets
    ``num_inference_steps``), as ``AccelConfig.call_overrides()`` names them: pass them to every
    call, after your own settings; ``handle.generation(my_settings)`` returns that merge::

        out = pipe(prompt, **handle.generation(my_settings))

    With a profile, ``profile.call_kwargs()`` is the whole set of call settings (the profile's
    workload with these overrides on top).
    """

    def __init__(self, target, config: AccelConfig, keep_original: bool = True, mirror=None):
        # torch, diffusers and the hooks load with the first handle, not with `import mindiesd_tune`
        import torch

        from .cache import CacheCounters
        from .sparse import SparseCounters

        self.target = target
        # whether installers that replace weights (quant) keep the originals for remove()
        self.keep_original = keep_original
        # the pipeline, for installers that touch more than the denoiser; None for a bare model
        self.pipe = None if isinstance(target, torch.nn.Module) else target
        self.config = config
        # rank 0 of a rank group that repeats its meshed installs and removals (``apply``'s ``mirror``)
        self.mirror = mirror
        self.counters = CacheCounters()
        self.call_overrides: dict = {}
        self.sparse_counters = SparseCounters()
        self._undo: list[Callable[[], None]] = []
        self._model = None
        self.active = True

    def generation(self, settings: dict | None = None) -> dict:
        """``settings`` with this config's call overrides applied."""
        return {**(settings or {}), **self.call_overrides}

    def reset_state(self) -> None:
        """Forget all cached tensors, as the end of a pipeline call does; for hand-written loops."""
        if self._model is not None:
            from diffusers.hooks.hooks import HookRegistry

            HookRegistry.check_if_exists_or_initialize(self._model).reset_stateful_hooks(recurse=True)

    def stats(self) -> dict:
        return {**self.counters.as_dict(), **self.sparse_counters.as_dict()}

    def reset_stats(self) -> None:
        self.counters.reset()
        self.sparse_counters.reset()

    @property
    def removable(self) -> bool:
        """Whether ``remove()`` gives the pipeline back bit for bit (False: it refuses)."""
        return not self._gone()

    def _gone(self) -> list[str]:
        # installers that drop originals mark their undo with what it cannot restore
        return [g for undo in self._undo for g in getattr(undo, "gone", ())]

    def remove(self) -> None:
        if not self.active:
            return
        gone = self._gone()
        if gone:
            raise NotRemovableError("this handle cannot be removed, nothing was taken off: " + "; ".join(gone)
                                    + " (apply with keep_original=True to keep them)")
        while self._undo:
            self._undo.pop()()
        self.active = False
        detach(self.target, self)

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = ("active" if self.removable else "active, not removable") if self.active else "removed"
        return f"Handle({state}, {self.counters.as_dict()})"


def apply(pipe, config: AccelConfig | dict | None = None, keep_original: bool = True, mirror=None) -> Handle:
    """Install ``config`` on ``pipe`` (a diffusers pipeline or its denoiser module).

    ``keep_original`` (default True) keeps a reference to every tensor a precision cast or a
    quant scheme replaces, so ``remove()`` puts those very tensors back, bit for bit. Nothing is
    copied, but the originals stay in memory beside their replacements: a float32 denoiser
    cast to bfloat16 then holds 1.5 times its float32 weights instead of half, and a quantised
    one its float32 weights plus the quantised ones. ``keep_original=False`` drops them (their
    memory is freed); the handle is then not ``removable``, and ``remove()`` raises
    ``NotRemovableError`` without taking anything off. Configs that replace no weights are
    removable either way.

    ``mirror``: where this process leads a group of ranks that must install a mesh in step with it
    (``tuner.rankgroup.Leader``): the parallel section calls ``mirror.installing(config_dict)``
    before installing a mesh, ``mirror.removing()`` before taking it off, and sets
    ``mirror.meshed = False`` when its install fails. None (a deployment under torchrun, where
    every rank applies the profile itself): nothing is announced.
    """
    from ..compat.diffusers import resets_cache_at_call_end
    from .blocks import find_denoiser

    if config is None:
        config = AccelConfig()
    elif isinstance(config, dict):
        config = AccelConfig.from_dict(config)
    config.validate()
    if active_handle(pipe) is not None:
        raise AlreadyAppliedError("an AccelConfig is already applied to this pipeline; call handle.remove() first")
    model = find_denoiser(pipe)
    handle = Handle(pipe, config, keep_original, mirror)
    handle._model = model
    try:
        if handle.pipe is not None and not resets_cache_at_call_end(model):
            handle._undo.append(_reset_at_call_end(pipe, model))
        # every section's entry, in declared order; remove() undoes them in reverse
        for entry, section_config in config.entries():
            if entry.install is not None:
                handle._undo.append(entry.install(model, section_config, handle))
    except Exception:
        handle.remove()
        raise
    attach(pipe, handle)
    return handle


def _reset_at_call_end(pipe, model):
    """Clear hook state when a pipeline call ends, for denoisers without diffusers' CacheMixin.

    Pipelines call ``maybe_free_model_hooks()`` last; it resets the stateful hooks only of
    components that have ``_reset_stateful_cache``. An instance attribute wraps it for ours.
    """
    from diffusers.hooks.hooks import HookRegistry

    original = pipe.maybe_free_model_hooks

    def maybe_free_model_hooks(*args, **kwargs):
        HookRegistry.check_if_exists_or_initialize(model).reset_stateful_hooks(recurse=True)
        return original(*args, **kwargs)

    object.__setattr__(pipe, "maybe_free_model_hooks", maybe_free_model_hooks)

    def remove() -> None:
        if pipe.__dict__.get("maybe_free_model_hooks") is maybe_free_model_hooks:
            del pipe.__dict__["maybe_free_model_hooks"]

    return remove
