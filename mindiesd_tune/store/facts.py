"""What a stored profile is matched on: the machine, the library versions and the workload.

All of it is read without a model call: the CPU from /proc/cpuinfo (or platform), the devices
from torch, the versions from the installed packages' metadata.
"""

from __future__ import annotations

import functools
import hashlib
import math
import platform
from typing import Any

from .db import VERSION_KEYS, WORKLOAD_KEYS


@functools.lru_cache(maxsize=1)
def cpu_facts() -> tuple[str | None, str | None]:
    """(the CPU's model name, a 16-hex-digit hash of its sorted flags) of this machine."""
    model, flags = None, None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "cpu model") and model is None:
                    model = value.strip() or None
                elif key in ("flags", "Features") and flags is None:
                    flags = value.split()
                if model is not None and flags is not None:
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or None
    digest = hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16] if flags else None
    return model, digest


def installed_versions() -> dict[str, str | None]:
    """The installed versions of torch, diffusers, torchao and torch_npu (None: not installed).

    torch's local suffix (``+cu121``) is dropped, as ``kernels.hardware_info`` records it.
    """
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for key in VERSION_KEYS:
        try:
            v = version(key.replace("_", "-"))
        except PackageNotFoundError:
            try:
                v = version(key)
            except PackageNotFoundError:
                v = None
        out[key] = v.split("+")[0] if (v and key == "torch") else v
    return out


def machine_hash(device: str, device_name: str | None, device_count: int | None, cpu_model: str | None,
                 cpu_flags: str | None) -> str:
    text = "|".join(str(x) for x in (device, device_name, device_count, cpu_model, cpu_flags))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def here(device) -> dict[str, Any]:
    """This machine's facts for a pipeline on ``device``: the row fields lookup matches on."""
    from ..kernels import hardware_info

    hw = hardware_info(device)
    cpu_model, cpu_flags = cpu_facts()
    facts = {"device": hw["device"], "device_name": hw.get("name"), "device_count": hw.get("count"),
             "cpu_model": cpu_model, "cpu_flags": cpu_flags}
    facts["machine"] = machine_hash(**facts)
    return facts


def normalise_workload(workload: Any) -> dict[str, Any]:
    """A workload as the store keeps it: the five call settings, None where not said.

    Takes the pipeline call's keywords (``num_inference_steps``) or the command line's names
    (``steps``, ``frames``, ``guidance``), or a ``workload.WorkloadOptions``.
    """
    from ..workload import OPTION_KEYS, WorkloadOptions

    if workload is None:
        return dict.fromkeys(WORKLOAD_KEYS)
    if isinstance(workload, WorkloadOptions):
        workload = workload.generation()
    if not isinstance(workload, dict):
        from ..errors import UserError

        raise UserError(f"workload {workload!r}: give a mapping such as {{'height': 1024, 'num_inference_steps': 28}}")
    out = dict.fromkeys(WORKLOAD_KEYS)
    for key, value in workload.items():
        key = OPTION_KEYS.get(key, key)
        if key in out:
            out[key] = value
    if out["guidance_scale"] is not None:
        out["guidance_scale"] = float(out["guidance_scale"])
    return out


def workload_difference(wanted: dict[str, Any], stored: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, wanted, stored) for every workload setting both say and that differs."""
    return [(k, wanted.get(k), stored.get(k)) for k in WORKLOAD_KEYS
            if wanted.get(k) is not None and stored.get(k) is not None and wanted[k] != stored[k]]


def workload_distance(wanted: dict[str, Any], stored: dict[str, Any]) -> float:
    """How far apart two workloads are: the sum of log ratios of pixels, frames and steps, plus
    the guidance difference; settings one side leaves unsaid count as equal. Work grows with the
    pixels, frames and steps, so a ratio is the distance that matters for what a profile skips."""
    def log_ratio(a, b):
        return abs(math.log(a / b)) if a and b else 0.0

    d = 0.0
    pw = (wanted.get("height") or 0) * (wanted.get("width") or 0)
    ps = (stored.get("height") or 0) * (stored.get("width") or 0)
    d += log_ratio(pw, ps)
    d += log_ratio(wanted.get("num_frames"), stored.get("num_frames"))
    d += log_ratio(wanted.get("num_inference_steps"), stored.get("num_inference_steps"))
    gw, gs = wanted.get("guidance_scale"), stored.get("guidance_scale")
    if gw is not None and gs is not None:
        d += abs(gw - gs) / 10.0
    return d


LABELS = {"height": "height", "width": "width", "num_frames": "frames", "num_inference_steps": "steps",
          "guidance_scale": "guidance"}


def pipe_device(pipe):
    """The device a pipeline runs on: its own ``device``, else its denoiser's parameters'."""
    import torch

    from .. import accel

    device = getattr(pipe, "device", None)
    if device is None:
        params = next(iter(accel.find_denoiser(pipe).parameters()), None)
        device = params.device if params is not None else "cpu"
    return torch.device(device)
