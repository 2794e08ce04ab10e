"""Multi-device meshes: CFG parallel, Ulysses / Ring sequence parallel, tensor parallel, VAE parallel.

One ``DeviceMesh`` with axes ``cfg, ring, ulysses, tensor`` (``init_meshes``) on the device's
backend (gloo on the CPU, nccl on CUDA, hccl on Ascend through torch_npu), and
``install_parallel(pipe, ParallelConfig(...))`` in every rank, which returns the undo.
``valid_meshes`` lists the meshes a pipeline can run for a generation on N devices;
``supported(device)`` says which axes a device type offers.
"""

from .comm import CommCounter
from .config import AXES, DENOISER_AXES, ParallelConfig, ParallelError
from .install import ParallelHandle, check, install_parallel, supported, valid_meshes
from .mesh import Meshes, backend_for, ensure_process_group, init_meshes

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
