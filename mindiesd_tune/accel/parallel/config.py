"""The mesh a pipeline call spans: one degree per axis, their product the world size."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from ..config import ConfigError

# The axes of the denoiser's DeviceMesh, outermost first: CFG branches are independent
# calls, so they go furthest apart (across nodes first); tensor parallelism talks the most,
# so it stays innermost (within a node).
DENOISER_AXES = ("cfg", "ring", "ulysses", "tensor")
AXES = (*DENOISER_AXES, "vae")


class ParallelError(ConfigError):
    """A mesh that cannot run here: the message is one line naming the degree and the shape."""


@dataclass
class ParallelConfig:
    """Multi-device mesh degrees.

    Attributes:
        cfg: conditional and unconditional CFG passes on different devices (1 or 2).
        ring: Ring attention sequence parallelism (key/value blocks passed around the group;
            needs an attention kernel returning the log-sum-exp, none exists on the CPU).
        ulysses: Ulysses sequence parallelism (all-to-all from sequence to attention heads);
            must divide the heads and the sequence.
        tensor: tensor parallelism (weights sharded, diffusers' ``_tp_plan``); CUDA only.
        vae: the VAE decode split into this many row strips, one per device, gathered on
            every device. It reuses the denoiser's devices (the decode runs after the
            denoising), so it must divide ``world_size`` instead of multiplying it.
        vae_halo: latent rows each strip decodes beyond its own on either side, so that
            its convolutions see their neighbourhood (the strips are re-synchronised at
            every normalisation and attention layer, so a few rows are enough).
    """

    cfg: int = 1
    ring: int = 1
    ulysses: int = 1
    tensor: int = 1
    vae: int = 1
    vae_halo: int = 2

    @property
    def world_size(self) -> int:
        """Devices one call uses: the product of the denoiser's degrees."""
        return self.cfg * self.ring * self.ulysses * self.tensor

    @property
    def is_neutral(self) -> bool:
        return self.world_size == 1 and self.vae == 1

    @property
    def sequence(self) -> int:
        """The sequence-parallel degree (Ulysses x Ring)."""
        return self.ring * self.ulysses

    @property
    def mesh(self) -> str:
        """The mesh's name (``describe()``): what a study samples as its ``parallel.mesh`` parameter."""
        return self.describe()

    def degrees(self) -> dict[str, int]:
        return {a: getattr(self, a) for a in AXES}

    def describe(self) -> str:
        """``cfg2xulysses2`` (the degrees above 1), ``single`` for the neutral mesh."""
        parts = [f"{a}{d}" for a, d in self.degrees().items() if d > 1]
        return "x".join(parts) or "single"

    @classmethod
    def parse(cls, name: str) -> "ParallelConfig":
        """The mesh ``describe()`` names (``cfg2xulysses2``, ``single``)."""
        if name == "single":
            return cls()
        degrees = {}
        for part in str(name).split("x"):
            m = re.fullmatch(r"([a-z]+)(\d+)", part)
            if m is None or m.group(1) not in AXES or m.group(1) in degrees:
                raise ParallelError(f"parallel mesh {name!r}: not a mesh name (axes {', '.join(AXES)}, e.g. cfg2xulysses2)")
            degrees[m.group(1)] = int(m.group(2))
        return cls(**degrees).validate()

    def validate(self) -> "ParallelConfig":
        for name in (*AXES, "vae_halo"):
            v = getattr(self, name)
            low = 0 if name == "vae_halo" else 1
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ParallelError(f"parallel.{name}={v!r}: must be an integer >= {low}")
        if self.cfg not in (1, 2):
            raise ParallelError(f"parallel.cfg={self.cfg}: must be 1 or 2 (a conditional and an unconditional pass)")
        if self.world_size % self.vae:
            raise ParallelError(f"parallel.vae={self.vae}: must divide the world size {self.world_size}")
        return self

    @classmethod
    def from_dict(cls, data: dict | None) -> "ParallelConfig":
        data = dict(data or {})
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ParallelError(f"parallel: unknown key(s) {', '.join(unknown)} (known: {', '.join((*AXES, 'vae_halo'))})")
        return cls(**data).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
