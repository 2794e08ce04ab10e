"""Multi-device meshes: CFG parallel, Ulysses / Ring sequence parallel, tensor parallel, VAE parallel.

One ``DeviceMesh`` with axes ``cfg, ring, ulysses, tensor`` (``init_meshes``) on the device's
backend (gloo on the CPU, nccl on CUDA, hccl on Ascend through torch_npu), and
``install_parallel(pipe, ParallelConfig(...))`` in every rank, which returns the undo.
``valid_meshes`` lists the meshes a pipeline can run for a generation on N devices;
``supported(device)`` says which axes a device type offers. The method registry's
``parallel`` entry (``accel.methods.parallel``) installs a profile's mesh through it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports

# The config imports without torch (the registry reads profiles with it); the rest loads on use.
from .config import AXES, DENOISER_AXES, ParallelConfig, ParallelError

_LAZY = {
    "CommCounter": ".comm",
    "ParallelHandle": ".install",
    "check": ".install",
    "install_parallel": ".install",
    "supported": ".install",
    "valid_meshes": ".install",
    "Meshes": ".mesh",
    "backend_for": ".mesh",
    "ensure_process_group": ".mesh",
    "init_meshes": ".mesh",
}

if TYPE_CHECKING:
    from .comm import CommCounter
    from .install import ParallelHandle, check, install_parallel, supported, valid_meshes
    from .mesh import Meshes, backend_for, ensure_process_group, init_meshes


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)


__all__ = [
    "AXES",
    "DENOISER_AXES",
    "CommCounter",
    "Meshes",
    "ParallelConfig",
    "ParallelError",
    "ParallelHandle",
    "backend_for",
    "check",
    "ensure_process_group",
    "init_meshes",
    "install_parallel",
    "supported",
    "valid_meshes",
]
