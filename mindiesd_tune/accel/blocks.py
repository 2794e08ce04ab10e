"""Where the repeated blocks of each supported denoiser live, found through a table, not by guessing.

For every denoiser class: the ``nn.ModuleList`` attributes holding its blocks, in forward
order. For every block class: the names of the tensors its forward returns, in order,
so a hook can pass inputs through or add cached residuals by name.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

# denoiser class name -> ModuleList attributes, in the order forward() runs them
BLOCK_LISTS: dict[str, tuple[str, ...]] = {
    "FluxTransformer2DModel": ("transformer_blocks", "single_transformer_blocks"),
    "WanTransformer3DModel": ("blocks",),
}

# block class name -> names of the returned tensors, in order
BLOCK_RETURNS: dict[str, tuple[str, ...]] = {
    "FluxTransformerBlock": ("encoder_hidden_states", "hidden_states"),
    "FluxSingleTransformerBlock": ("encoder_hidden_states", "hidden_states"),
    "WanTransformerBlock": ("hidden_states",),
}


class UnsupportedModelError(ValueError):
    pass


def find_denoiser(pipe_or_model) -> torch.nn.Module:
    """The transformer (or UNet) of a pipeline; a bare model is returned as is."""
    if isinstance(pipe_or_model, torch.nn.Module):
        return pipe_or_model
    for name in ("transformer", "unet"):
        model = getattr(pipe_or_model, name, None)
        if isinstance(model, torch.nn.Module):
            return model
    raise UnsupportedModelError(f"{type(pipe_or_model).__name__} has no transformer or unet to accelerate")


@dataclass
class Block:
    """One repeated block with the signature and return layout the hooks need."""

    module: torch.nn.Module
    name: str
    returns: tuple[str, ...]
    signature: inspect.Signature

    def bind(self, args, kwargs) -> dict:
        bound = self.signature.bind(*args, **kwargs)
        return bound.arguments

    def pack(self, tensors: dict) -> tuple | torch.Tensor:
        """Arrange named tensors in this block's return order."""
        if len(self.returns) == 1:
            return tensors[self.returns[0]]
        return tuple(tensors[n] for n in self.returns)

    def unpack(self, output) -> dict:
        if len(self.returns) == 1:
            return {self.returns[0]: output}
        return dict(zip(self.returns, output))


def transformer_blocks(model: torch.nn.Module) -> list[Block]:
    """The model's repeated blocks in forward order; a clear error for unsupported classes."""
    cls = type(model).__name__
    if cls not in BLOCK_LISTS:
        raise UnsupportedModelError(
            f"{cls} is not supported for block-level acceleration (supported: {', '.join(sorted(BLOCK_LISTS))})"
        )
    blocks: list[Block] = []
    for attr in BLOCK_LISTS[cls]:
        for i, module in enumerate(getattr(model, attr)):
            bcls = type(module).__name__
            if bcls not in BLOCK_RETURNS:
                raise UnsupportedModelError(f"{cls}.{attr}[{i}] is a {bcls}, which has no entry in BLOCK_RETURNS")
            blocks.append(Block(module, f"{attr}.{i}", BLOCK_RETURNS[bcls], inspect.signature(module.forward)))
    if not blocks:
        raise UnsupportedModelError(f"{cls} has no blocks to accelerate")
    return blocks
