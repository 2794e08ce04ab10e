"""Collectives the parallel hooks make, counted: bytes each rank receives per call."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class CommCounter:
    """Bytes this rank received through the mesh's collectives since the last reset()."""

    bytes: int = 0
    collectives: int = 0

    def reset(self) -> None:
        self.bytes = self.collectives = 0

    def add(self, nbytes: int) -> None:
        self.bytes += int(nbytes)
        self.collectives += 1


def map_tensors(obj, fn):
    """``obj`` (a tensor, or a dict, list, tuple or diffusers output holding tensors) with ``fn`` applied to each tensor."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return type(obj)(**{k: map_tensors(v, fn) for k, v in obj.items()}) if hasattr(obj, "to_tuple") else {
            k: map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    return obj


def settled(obj):
    """``obj`` with every tensor an asynchronous functional collective is still writing waited for.

    diffusers' context-parallel output gather returns ``funcol``'s ``AsyncCollectiveTensor``
    unwaited, so the denoiser's output would still be in flight when the pipeline makes its next
    denoiser call (true CFG's ``uncond`` pass): that call's all-to-alls then run on the same gloo
    group while the gather is outstanding, and a rank died of heap corruption there
    (``malloc(): unaligned tcache chunk detected``, in ``_all_to_all_single`` / ``_wait_tensor``).
    Waiting at the denoiser's boundary keeps every collective of the mesh waited on before the
    next one starts and before its buffer leaves the denoiser.
    """
    from torch.distributed._functional_collectives import AsyncCollectiveTensor

    return map_tensors(obj, lambda t: t.wait() if isinstance(t, AsyncCollectiveTensor) else t)


def all_gather(tensor: torch.Tensor, group, counter: CommCounter | None = None) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (same shape on all), in the group's rank order."""
    tensor = tensor.contiguous()
    size = dist.get_world_size(group)
    out = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(out, tensor, group=group)
    if counter is not None:
        counter.add(tensor.numel() * tensor.element_size() * (size - 1))
    return out


def all_reduce_(tensor: torch.Tensor, op, group, counter: CommCounter | None = None) -> torch.Tensor:
    dist.all_reduce(tensor, op=op, group=group)
    if counter is not None:
        counter.add(tensor.numel() * tensor.element_size() * (dist.get_world_size(group) - 1))
    return tensor
