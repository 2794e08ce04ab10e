"""A denoiser class diffusers has never heard of, made known to mindiesd-tune by one spec.

The example of docs/architecture.md ("Model registry"). Importing this module registers the
spec, so it also works as a plugin: ``MINDIESD_TUNE_PLUGINS=toy_denoiser`` (with this folder
on the path) makes worker processes and the CLI know the class too.
"""

from __future__ import annotations

import torch
from torch import nn

from mindiesd_tune.accel.specs import BlockSpec, DenoiserSpec, register_denoiser


class ToyAttention(nn.Module):
    """Single-head self-attention over the token axis."""

    def __init__(self, dim: int):
        super().__init__()
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.out(torch.nn.functional.scaled_dot_product_attention(q, k, v))


class ToyBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm, self.attn = nn.LayerNorm(dim), ToyAttention(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, hidden_states, temb):
        hidden_states = hidden_states + self.attn(self.norm(hidden_states) + temb[:, None])
        return hidden_states + self.mlp(hidden_states)


class ToyDenoiser(nn.Module):
    """Tokens in, noise prediction out, through a chain of ``ToyBlock``s in ``self.blocks``."""

    def __init__(self, channels: int = 4, dim: int = 16, depth: int = 4):
        super().__init__()
        self.proj_in, self.time = nn.Linear(channels, dim), nn.Linear(1, dim)
        self.blocks = nn.ModuleList(ToyBlock(dim) for _ in range(depth))
        self.proj_out = nn.Linear(dim, channels)

    def forward(self, hidden_states, timestep):
        temb = self.time(timestep.float()[:, None] / 1000)
        x = self.proj_in(hidden_states)
        for block in self.blocks:
            x = block(x, temb)
        return self.proj_out(x)


# everything the cache methods need: where the blocks are, what they return, their attention
SPEC = register_denoiser(DenoiserSpec(
    name="ToyDenoiser",
    family="dit-image",
    block_lists=("blocks",),
    block_types={"ToyBlock": BlockSpec(returns=("hidden_states",), attention=("attn",))},
))


@torch.inference_mode()
def denoise(model: nn.Module, steps: int = 8, seed: int = 0) -> torch.Tensor:
    """A plain Euler loop over 16 tokens, batch 2."""
    x = torch.randn(2, 16, 4, generator=torch.Generator().manual_seed(seed))
    for k in range(steps):
        t = torch.full((2,), 999.0 * (1 - k / steps))
        x = x - model(x, t) / steps
    return x
