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
