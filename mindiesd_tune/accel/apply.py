"""apply(pipe, cfg) -> Handle: install an AccelConfig on a pipeline; Handle.remove() undoes it."""

from __future__ import annotations

from typing import Callable

from .blocks import find_denoiser
from .cache import CacheCounters, install_cache
from .compile import apply_compile
from .config import AccelConfig

_ATTR = "_mindiesd_accel_handle"


class AlreadyAppliedError(RuntimeError):
    pass


class Handle:
    """What ``apply`` installed on one pipeline.

    ``remove()`` restores the pipeline so that it produces bit-identical output to before;
    ``counters`` says how many block evaluations were computed and skipped.
    """

    def __init__(self, target, config: AccelConfig):
        self.target = target
        self.config = config
        self.counters = CacheCounters()
        self._undo: list[Callable[[], None]] = []
        self.active = True

    def stats(self) -> dict:
        return self.counters.as_dict()

    def reset_stats(self) -> None:
        self.counters.reset()

    def remove(self) -> None:
        if not self.active:
            return
        while self._undo:
            self._undo.pop()()
        self.active = False
        if getattr(self.target, _ATTR, None) is self:
            delattr(self.target, _ATTR)

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"Handle({state}, {self.counters.as_dict()})"


def apply(pipe, config: AccelConfig | dict | None = None) -> Handle:
    """Install ``config`` on ``pipe`` (a diffusers pipeline or its denoiser module)."""
    if config is None:
        config = AccelConfig()
    elif isinstance(config, dict):
        config = AccelConfig.from_dict(config)
    config.validate()
    existing = getattr(pipe, _ATTR, None)
    if existing is not None and existing.active:
        raise AlreadyAppliedError("an AccelConfig is already applied to this pipeline; call handle.remove() first")
    model = find_denoiser(pipe)
    handle = Handle(pipe, config)
    try:
        handle._undo.append(install_cache(model, config.cache, handle.counters))
        handle._undo.append(apply_compile(model, config.compile))
    except Exception:
        handle.remove()
        raise
    setattr(pipe, _ATTR, handle)
    return handle
