"""parallel: multi-device mesh degrees; only degree 1 (one device) so far."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import check
from .registry import Method, register_method


@dataclass
class ParallelConfig:
    """Multi-device mesh degrees; their product is the number of devices one call uses.

    Attributes:
        cfg: split the conditional and unconditional CFG passes over 2 devices (1 or 2).
        ulysses: Ulysses sequence parallelism (all-to-all over attention heads).
        ring: Ring attention sequence parallelism (P2P over key/value blocks).
    """

    cfg: int = 1
    ulysses: int = 1
    ring: int = 1

    @property
    def world_size(self) -> int:
        return self.cfg * self.ulysses * self.ring

    def validate(self) -> None:
        for name in ("cfg", "ulysses", "ring"):
            v = getattr(self, name)
            check(isinstance(v, int) and v >= 1, f"parallel.{name}", v, "must be an integer >= 1")
        check(self.cfg in (1, 2), "parallel.cfg", self.cfg, "must be 1 or 2")
        check(self.world_size == 1, "parallel", dataclasses.asdict(self), "multi-device meshes are not available yet; use degree 1")


register_method(Method(section="parallel", name="mesh", config=ParallelConfig))
