"""Worker factories for studies whose cache search is restricted to one calibrated method."""

from mindiesd_tune.tuner.worker import build_evaluator


def mag_only(spec):
    """tiny-flux-random's real evaluator, its cache methods restricted to diffusers' MagCache."""
    ev, info = build_evaluator(spec)
    info["space"]["methods"] = ["diffusers_mag"]
    return ev, info
