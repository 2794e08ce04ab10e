"""mindiesd-tune: find the fastest acceleration settings for a diffusion model and deploy them.

    from mindiesd_tune import apply_profile
    handle = apply_profile(pipe, "runs/demo-flux/profile.yaml")
"""

from .accel import AccelConfig, Handle, apply
from .deploy import Mismatch, ProfileMismatchError, ProfileMismatchWarning, apply_profile, check_profile
from .profile import Profile, ProfileError, load_profile

__version__ = "0.1.0"

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
