"""mindiesd-tune: find the fastest acceleration settings for a diffusion model and deploy them.

    from mindiesd_tune import apply_profile
    handle = apply_profile(pipe, "runs/demo-flux/profile.yaml")
"""

from .accel import AccelConfig, Handle, apply
from .deploy import ProfileMismatchError, apply_profile
from .profile import Profile, ProfileError, load_profile

__version__ = "0.1.0"

__all__ = [
    "AccelConfig",
    "Handle",
    "Profile",
    "ProfileError",
    "ProfileMismatchError",
    "__version__",
    "apply",
    "apply_profile",
    "load_profile",
]
