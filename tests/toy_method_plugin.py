"""A third-party acceleration method in one file: the toy ``cache: {method: toy_gain, gain}``.

It scales the denoiser's output by ``1 + gain`` (no speed-up; it exists to show what a
method module holds). Found through ``MINDIESD_TUNE_PLUGINS=toy_method_plugin``, or an
entry point of the group ``mindiesd_tune.methods`` in a package's pyproject.toml.
"""

from dataclasses import dataclass
from typing import ClassVar

from mindiesd_tune.accel.config import check
from mindiesd_tune.accel.methods import Method, register_method


@dataclass
class ToyGainConfig:
    """Scale the denoiser's prediction.

    Attributes:
        gain: the output is multiplied by ``1 + gain``; 0 changes nothing (the baseline).
    """

    method: ClassVar[str] = "toy_gain"
    gain: float = 0.0

    def validate(self) -> None:
        check(-1.0 < self.gain < 1.0, "cache.gain", self.gain, "must be in (-1, 1)")


def install(model, cfg, handle):
    """A forward hook on the denoiser; the returned function removes it."""

    def scale(module, args, output):
        if isinstance(output, tuple):
            return (output[0] * (1 + cfg.gain),) + output[1:]
        output.sample = output.sample * (1 + cfg.gain)
        return output

    hook = model.register_forward_hook(scale)
    return hook.remove


def suggest(trial, ctx) -> dict:
    return {"cache.gain": trial.suggest_float("cache.gain", -0.1, 0.1)}


register_method(Method(
    section="cache", name="toy_gain", config=ToyGainConfig, install=install, suggest=suggest,
    applies=lambda ctx: ctx.family in (None, "dit-image", "dit-video"),
    presets=lambda ctx: [{"cache.method": "toy_gain", "cache.gain": 0.05}],
    example=ToyGainConfig(gain=0.05),
    show=lambda cfg: f"toy_gain: output x{1 + cfg.gain:.3g}",
))
