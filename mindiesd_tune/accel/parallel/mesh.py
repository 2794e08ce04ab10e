"""The process group and the DeviceMesh a ParallelConfig runs on."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from .config import DENOISER_AXES, ParallelConfig, ParallelError

logger = logging.getLogger(__name__)

BACKENDS = {"cpu": "gloo", "cuda": "nccl", "npu": "hccl"}


def backend_for(device) -> str:
    """The collective backend of a device type: gloo (CPU), nccl (CUDA), hccl (Ascend, via torch_npu)."""
    kind = torch.device(device).type
    if kind == "npu" and importlib.util.find_spec("torch_npu") is None:
        raise ParallelError("parallel on npu: torch_npu is not installed (it provides the hccl backend)")
    try:
        return BACKENDS[kind]
    except KeyError:
        raise ParallelError(f"parallel: no collective backend for device type {kind!r} (known: {', '.join(BACKENDS)})") from None


def ensure_process_group(device) -> None:
    """Join the process group torchrun (or the caller) described in the environment, once."""
    if dist.is_initialized():
        return
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ParallelError("parallel: no process group; start the ranks with torchrun (RANK/WORLD_SIZE unset)")
    if torch.device(device).type == "npu":
        import torch_npu  # noqa: F401  (registers hccl)
    dist.init_process_group(backend_for(device))


@dataclass
class Meshes:
    """The denoiser's mesh (axes ``cfg, ring, ulysses, tensor``) and the decode mesh.

    The VAE decode runs after the denoising on the same devices, so its strips split the
    world a second way: ``decode`` has axes ``("vae_replica", "vae")``.
    """

    config: ParallelConfig
    device: torch.device
    denoiser: DeviceMesh
    decode: DeviceMesh

    def group(self, axis: str):
        """The process group of one axis (``cfg``, ``ring``, ``ulysses``, ``tensor`` or ``vae``)."""
        if axis == "vae":
            return self.decode.get_group("vae")
        return self.denoiser.get_group(axis)

    def local_rank(self, axis: str) -> int:
        return (self.decode if axis == "vae" else self.denoiser).get_local_rank(axis)

    def sequence_mesh(self) -> DeviceMesh:
        """The ``(ring, ulysses)`` sub-mesh, as diffusers' ContextParallelConfig expects it."""
        return self.denoiser["ring", "ulysses"]


# Each new DeviceMesh makes process groups (sockets and threads with gloo): the meshes of one
# config are made once per process group and reused, as a study installs a mesh for every
# timed round. Every rank installs the same configs in the same order, so they agree.
_MADE: dict[tuple, Meshes] = {}


def init_meshes(config: ParallelConfig, device="cpu") -> Meshes:
    """Build the meshes of ``config`` on ``device``'s backend; the world size must equal the mesh's."""
    config.validate()
    key = (tuple(config.degrees().items()), str(torch.device(device)), id(dist.group.WORLD) if dist.is_initialized() else None)
    if key in _MADE:
        return dataclasses.replace(_MADE[key], config=config)
    meshes = _init_meshes(config, device)
    _MADE[(*key[:2], id(dist.group.WORLD))] = meshes
    return meshes


def _init_meshes(config: ParallelConfig, device) -> Meshes:
    device = torch.device(device)
    ensure_process_group(device)
    world = dist.get_world_size()
    if config.world_size != world:
        raise ParallelError(
            f"parallel mesh {config.describe()} needs {config.world_size} ranks, the process group has {world}"
        )
    if device.type != "cpu" and device.index is None:
        # one device per rank, as torchrun's LOCAL_RANK numbers them
        device = torch.device(device.type, int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    shape = tuple(getattr(config, a) for a in DENOISER_AXES)
    denoiser = init_device_mesh(device.type, shape, mesh_dim_names=DENOISER_AXES)
    decode = init_device_mesh(device.type, (world // config.vae, config.vae), mesh_dim_names=("vae_replica", "vae"))
    logger.debug("rank %d: meshes %s and decode %s", dist.get_rank(), denoiser, decode)
    return Meshes(config, device, denoiser, decode)
