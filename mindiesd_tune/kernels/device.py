"""Device specifics behind one interface: which device, how to synchronise, how much memory."""

from __future__ import annotations

import os
import platform
import resource
import sys

import torch


def npu_available() -> bool:
    """True when torch_npu is importable and reports an Ascend device (never on this CI)."""
    try:
        import torch_npu  # noqa: F401
    except ImportError:
        return False
    return hasattr(torch, "npu") and torch.npu.is_available()


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if npu_available():
        return torch.device("npu")
    return torch.device("cpu")


def synchronize(device: torch.device | str) -> None:
    """Wait for queued kernels; the CPU runs eagerly and needs nothing."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "npu":
        torch.npu.synchronize(device)


def reset_peak_memory(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif device.type == "npu":
        torch.npu.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device | str) -> int | None:
    """Peak allocated device memory since the last reset; on the CPU the process's peak RSS."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    if device.type == "npu":
        return int(torch.npu.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "npu":
        return str(torch.npu.get_device_name(device))
    return platform.processor() or platform.machine() or "cpu"


def device_count(device: torch.device | str) -> int:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.device_count()
    if device.type == "npu":
        return torch.npu.device_count()
    return 1


def hardware_info(device: torch.device | str) -> dict:
    """What the profile records about the machine it was tuned on."""
    import diffusers

    device = torch.device(device)
    info = {
        "device": device.type,
        "name": device_name(device),
        "count": device_count(device),
        "torch": torch.__version__.split("+")[0],
        "diffusers": diffusers.__version__,
    }
    if device.type == "cpu":
        info["threads"] = torch.get_num_threads()
        info["cpus"] = os.cpu_count()
    return info
