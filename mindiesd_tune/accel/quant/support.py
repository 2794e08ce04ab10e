"""Which precisions and schemes a device can run, and the one-line refusal of the rest.

float8 needs CUDA compute capability >= 8.9 (Ada, Hopper and later); recent Ascend NPUs have
it too, but only the int schemes are mapped to torch_npu so far. int4
weight-only is offered where torchao has an int4 kernel for the device: on CUDA its
``tile_packed_to_4d`` layout (tinygemm, bfloat16 activations, capability >= 8.0); on the CPU,
torchao 0.18 has none (its ``plain`` and ``preshuffled`` layouts need the separate ``mslk``
package and run on CUDA, ``plain_int32`` refuses the CPU, ``tile_packed_to_4d`` is CUDA only),
so the CPU is not offered w4a16. bfloat16 and float16 are offered on every device, also on a
CPU without native bfloat16 instructions, since the tuner measures rather than assumes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import UserError
from ..registry import method_names
from .config import PRECISIONS, SCHEMES

# the schemes accel/quant/npu.py maps to torch_npu's kernels; every other runs on torchao only
NPU_SCHEMES = ("none", "w8a16", "w8a8", "w4a16")


class QuantUnsupportedError(UserError):
    """A scheme or precision the device cannot run; the message names both."""


@dataclass(frozen=True)
class Support:
    """What one device runs: ``precisions`` and ``schemes`` (``none`` always), with the reason for each scheme left out."""

    device: str
    precisions: tuple[str, ...]
    schemes: tuple[str, ...]
    missing: dict

    def why_not(self, scheme: str) -> str | None:
        return self.missing.get(scheme)


def _cuda_capability(device: torch.device) -> tuple[int, int] | None:
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(device)


def device_type(device: torch.device | str) -> str:
    # "npu" is a torch device type only once torch_npu is imported; support is still asked without it
    return device.type if isinstance(device, torch.device) else str(device).split(":")[0]


def device_label(device: torch.device | str) -> str:
    """``cpu (Intel Xeon ...)``, ``cuda (NVIDIA H100)``: how refusals name the device."""
    from ...kernels.device import device_name

    kind = device_type(device)
    try:
        name = device_name(device)
    except Exception:  # a device that is not there: the type alone still names it
        name = ""
    return f"{kind} ({name})" if name and name != kind else kind


def supported(device: torch.device | str) -> Support:
    """The precisions and schemes ``device`` can run. torchao (or torch_npu) being installed is checked at install."""
    kind = device_type(device)
    missing: dict[str, str] = {}
    # the built-in schemes and every one a registry entry adds (a plugin's)
    known = tuple(dict.fromkeys((*SCHEMES, *method_names("quant"))))
    if kind == "npu":
        # float8 runs on recent Ascend chips, but accel/quant/npu.py maps only the int schemes so far
        missing["fp8_w8a16"] = missing["fp8_w8a8"] = "no torch_npu mapping for float8 yet (w8a16, w8a8, w4a16 have one)"
        for scheme in known:
            if scheme not in NPU_SCHEMES:
                missing.setdefault(scheme, "no torch_npu mapping (w8a16, w8a8, w4a16 have one)")
    elif kind == "cuda":
        cap = _cuda_capability(torch.device(device))
        if cap is None or cap < (8, 9):
            why = f"float8 needs CUDA compute capability >= 8.9 (this device: {cap[0]}.{cap[1]})" if cap else "no CUDA device"
            missing["fp8_w8a16"] = missing["fp8_w8a8"] = why
        if cap is None or cap < (8, 0):
            missing["w4a16"] = "torchao's int4 weight-only kernel (tinygemm) needs CUDA compute capability >= 8.0"
    else:
        missing["fp8_w8a16"] = missing["fp8_w8a8"] = "float8 needs CUDA compute capability >= 8.9"
        missing["w4a16"] = f"torchao has no int4 weight-only kernel for the {kind}"
    schemes = tuple(s for s in known if s not in missing)
    return Support(kind, PRECISIONS, schemes, missing)


def check_supported(cfg, device: torch.device | str) -> None:
    """Raise QuantUnsupportedError (one line naming scheme and device) unless ``device`` runs ``cfg``."""
    if not cfg.quantises:
        return
    sup = supported(device)
    if cfg.scheme not in sup.schemes:
        raise QuantUnsupportedError(
            f"quant.scheme {cfg.scheme} cannot run on {device_label(device)}: {sup.why_not(cfg.scheme)}"
        )
