"""Where ``apply`` keeps its Handle on the pipeline it accelerated: one attribute, named here only.

``apply`` refuses a second config on a pipeline that carries an active handle, and
``step_statistics`` refuses to measure one (it measures the baseline).
"""

from __future__ import annotations

from typing import Any

ATTR = "_mindiesd_accel_handle"


def active_handle(target) -> Any:
    """The active Handle ``apply`` left on ``target`` (a pipeline or a denoiser), or None."""
    handle = getattr(target, ATTR, None)
    return handle if handle is not None and handle.active else None


def attach(target, handle) -> None:
    setattr(target, ATTR, handle)


def detach(target, handle) -> None:
    """Take ``handle`` off ``target`` (a newer handle put there since stays)."""
    if getattr(target, ATTR, None) is handle:
        delattr(target, ATTR)
