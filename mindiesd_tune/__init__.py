"""mindiesd-tune: find the fastest acceleration settings for a diffusion model and deploy them.

    from mindiesd_tune import apply_profile
    handle = apply_profile(pipe, "runs/demo-flux/profile.yaml")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

# Exports resolve on first use, so `mindiesd-tune --help`, `validate`, `show` and `diff` (which
# import this package first) start without torch and diffusers.
_EXPORTS = {
    "AccelConfig": ".accel",
    "Handle": ".accel",
    "apply": ".accel",
    "Mismatch": ".deploy",
    "ProfileMismatchError": ".deploy",
    "ProfileMismatchWarning": ".deploy",
    "apply_profile": ".deploy",
    "check_profile": ".deploy",
    "Profile": ".profile",
    "ProfileError": ".profile",
    "load_profile": ".profile",
}

if TYPE_CHECKING:
    from .accel import AccelConfig, Handle, apply
    from .deploy import Mismatch, ProfileMismatchError, ProfileMismatchWarning, apply_profile, check_profile
    from .profile import Profile, ProfileError, load_profile


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)


__all__ = [
    "AccelConfig",
    "Handle",
    "Mismatch",
    "Profile",
    "ProfileError",
    "ProfileMismatchError",
    "ProfileMismatchWarning",
    "__version__",
    "apply",
    "apply_profile",
    "check_profile",
    "load_profile",
]
