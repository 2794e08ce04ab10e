"""apply_profile: install a frozen profile's acceleration on a freshly loaded pipeline."""

from __future__ import annotations

import warnings
from pathlib import Path

from . import accel
from .profile import Profile, load_profile


class ProfileMismatchError(RuntimeError):
    pass


def apply_profile(pipe, profile: str | Path | dict | Profile, strict: bool = False) -> accel.Handle:
    """Apply ``profile`` (a path, a mapping or a Profile) to ``pipe``; returns the handle.

    The pipeline's class is checked against the one the profile was tuned on; a mismatch
    warns (raises with ``strict=True``). Call the pipeline with ``profile.call_kwargs()``
    to use the generation settings the profile was measured with.
    """
    prof = load_profile(profile)
    expected = prof.model.get("pipeline")
    actual = type(pipe).__name__
    if expected and expected != actual:
        msg = f"profile was tuned on a {expected}, this pipeline is a {actual}"
        if strict:
            raise ProfileMismatchError(msg)
        warnings.warn(msg, stacklevel=2)
    return accel.apply(pipe, prof.accel)
