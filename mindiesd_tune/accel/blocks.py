"""Where the repeated blocks of a denoiser live, read from its spec in the model registry (``accel.specs``).

The spec gives the ``nn.ModuleList`` attributes holding the blocks, in forward order, and
for every block class the names of the tensors its forward returns, in order, so a hook can
pass inputs through or add cached residuals by name.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from .specs import SparseSpec, UNetSpec, UnsupportedModelError, find_spec, registered_denoisers


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
    attention: tuple[str, ...] = ()  # self-attention submodule names, from the block's spec

    def bind(self, args, kwargs) -> dict:
        bound = self.signature.bind(*args, **kwargs)
        return bound.arguments

    def attention_modules(self) -> list[tuple[str, torch.nn.Module]]:
        """The block's self-attention submodules that exist in this instance (SD3's attn2 is optional)."""
        found = [(f"{self.name}.{n}", getattr(self.module, n, None)) for n in self.attention]
        return [(n, m) for n, m in found if isinstance(m, torch.nn.Module)]

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
    spec = find_spec(model)
    if spec is None or not spec.block_lists:
        hint = " (a UNet: use cache.method deepcache)" if spec is not None and spec.unet is not None else ""
        supported = [name for name, s in registered_denoisers().items() if s.block_lists]
        raise UnsupportedModelError(
            f"{type(model).__name__} is not supported for block-level acceleration{hint} (supported: {', '.join(supported)})"
        )
    blocks: list[Block] = []
    for attr in spec.block_lists:
        for i, module in enumerate(getattr(model, attr)):
            block = spec.block_spec(module)
            if block is None:
                raise UnsupportedModelError(
                    f"{type(model).__name__}.{attr}[{i}] is a {type(module).__name__}, which the {spec.name} spec does not list"
                )
            blocks.append(Block(module, f"{attr}.{i}", block.returns, inspect.signature(module.forward), block.attention))
    if not blocks:
        raise UnsupportedModelError(f"{type(model).__name__} has no blocks to accelerate")
    return blocks


def unet_structure(model: torch.nn.Module) -> UNetSpec:
    """Where a UNet keeps its down path, middle block and up path; an error for other classes."""
    spec = find_spec(model)
    if spec is None or spec.unet is None:
        supported = [name for name, s in registered_denoisers().items() if s.unet is not None]
        raise UnsupportedModelError(
            f"deepcache needs a UNet; {type(model).__name__} is not one (supported: {', '.join(supported)})"
        )
    return spec.unet


def sparse_spec(model: torch.nn.Module) -> SparseSpec:
    """The sparse-attention layout of the model's spec; an error where sparse cannot go."""
    spec = find_spec(model)
    if spec is None or spec.sparse is None:
        supported = [name for name, s in registered_denoisers().items() if s.sparse is not None]
        raise UnsupportedModelError(
            f"{type(model).__name__} is not supported for sparse attention (supported: {', '.join(supported)})"
        )
    return spec.sparse


def attention_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """``(name, attention module)`` of the self-attention layers sparse attention may replace, in forward order."""
    found = []
    for blocks_attr, attn_attrs in sparse_spec(model).layers:
        for i, block in enumerate(getattr(model, blocks_attr)):
            for attn_attr in attn_attrs:
                module = getattr(block, attn_attr, None)
                if module is not None:
                    found.append((f"{blocks_attr}.{i}.{attn_attr}", module))
    return found
