"""Device specifics (sync, memory, names) and the attention entry point with its backends per device."""

from .attention import (
    AttentionBackendError,
    BlockSparseMask,
    attention,
    dense_backends,
    resolve_backend,
    sparse_kernels,
)
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
    "AttentionBackendError",
    "BlockSparseMask",
    "attention",
    "dense_backends",
    "resolve_backend",
    "sparse_kernels",
    "default_device",
    "device_count",
    "device_name",
    "hardware_info",
    "npu_available",
    "peak_memory_bytes",
    "reset_peak_memory",
    "synchronize",
]
