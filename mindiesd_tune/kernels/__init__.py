"""Device specifics (sync, memory, names) and, later, attention backends per device."""

from .device import (
    default_device,
    device_count,
    device_name,
    hardware_info,
    npu_available,
    peak_memory_bytes,
    reset_peak_memory,
    synchronize,
)

__all__ = [
    "default_device",
    "device_count",
    "device_name",
    "hardware_info",
    "npu_available",
    "peak_memory_bytes",
    "reset_peak_memory",
    "synchronize",
]
