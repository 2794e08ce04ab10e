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
    "SD3Transformer2DModel": ("transformer_blocks",),
    "WanTransformer3DModel": ("blocks",),
    "HunyuanVideoTransformer3DModel": ("transformer_blocks", "single_transformer_blocks"),
    "CogVideoXTransformer3DModel": ("transformer_blocks",),
    "QwenImageTransformer2DModel": ("transformer_blocks",),
    "PixArtTransformer2DModel": ("transformer_blocks",),
}

# block class name -> names of the returned tensors, in order. A returned None (SD3's last
# block drops the text stream) is passed through as the input of the same name.
BLOCK_RETURNS: dict[str, tuple[str, ...]] = {
    "FluxTransformerBlock": ("encoder_hidden_states", "hidden_states"),
    "FluxSingleTransformerBlock": ("encoder_hidden_states", "hidden_states"),
    "JointTransformerBlock": ("encoder_hidden_states", "hidden_states"),
    "WanTransformerBlock": ("hidden_states",),
    "HunyuanVideoTransformerBlock": ("hidden_states", "encoder_hidden_states"),
    "HunyuanVideoSingleTransformerBlock": ("hidden_states", "encoder_hidden_states"),
    "HunyuanVideoTokenReplaceTransformerBlock": ("hidden_states", "encoder_hidden_states"),
    "HunyuanVideoTokenReplaceSingleTransformerBlock": ("hidden_states", "encoder_hidden_states"),
    "CogVideoXBlock": ("hidden_states", "encoder_hidden_states"),
    "QwenImageTransformerBlock": ("encoder_hidden_states", "hidden_states"),
    "BasicTransformerBlock": ("hidden_states",),
}

# block class name -> its self-attention submodules (what the attention cache reuses)
BLOCK_ATTENTION: dict[str, tuple[str, ...]] = {
    "FluxTransformerBlock": ("attn",),
    "FluxSingleTransformerBlock": ("attn",),
    "JointTransformerBlock": ("attn", "attn2"),
    "WanTransformerBlock": ("attn1",),
    "HunyuanVideoTransformerBlock": ("attn",),
    "HunyuanVideoSingleTransformerBlock": ("attn",),
    "HunyuanVideoTokenReplaceTransformerBlock": ("attn",),
    "HunyuanVideoTokenReplaceSingleTransformerBlock": ("attn",),
    "CogVideoXBlock": ("attn1",),
    "QwenImageTransformerBlock": ("attn",),
    "BasicTransformerBlock": ("attn1",),
}

# UNets are not a chain of blocks (skip connections join the down and up paths); the
# cache methods that understand that (DeepCache) find their blocks through this table.
UNET_BLOCKS: dict[str, tuple[str, str, str]] = {
    "UNet2DConditionModel": ("down_blocks", "mid_block", "up_blocks"),
}


# denoiser class -> (ModuleList attribute, attention attributes of each block) whose self-
# attention sparse attention may replace, in forward order. Cross-attention (Wan's attn2)
# is left out on purpose; an attribute that is None (SD3's optional attn2) is skipped.
ATTENTION_LAYERS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "FluxTransformer2DModel": (("transformer_blocks", ("attn",)), ("single_transformer_blocks", ("attn",))),
    "WanTransformer3DModel": (("blocks", ("attn1",)),),
    "SD3Transformer2DModel": (("transformer_blocks", ("attn", "attn2")),),
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

    def attention_modules(self) -> list[tuple[str, torch.nn.Module]]:
        """The block's self-attention submodules that exist in this instance (SD3's attn2 is optional)."""
        names = BLOCK_ATTENTION.get(type(self.module).__name__, ())
        found = [(f"{self.name}.{n}", getattr(self.module, n, None)) for n in names]
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
    cls = type(model).__name__
    if cls not in BLOCK_LISTS:
        hint = " (a UNet: use cache.method deepcache)" if cls in UNET_BLOCKS else ""
        raise UnsupportedModelError(
            f"{cls} is not supported for block-level acceleration{hint} "
            f"(supported: {', '.join(sorted(BLOCK_LISTS))})"
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


def attention_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """``(name, attention module)`` of the model's self-attention layers, in forward order."""
    cls = type(model).__name__
    if cls not in ATTENTION_LAYERS:
        raise UnsupportedModelError(
            f"{cls} has no attention-layer table (supported: {', '.join(sorted(ATTENTION_LAYERS))})"
        )
    found = []
    for blocks_attr, attn_attrs in ATTENTION_LAYERS[cls]:
        for i, block in enumerate(getattr(model, blocks_attr)):
            for attn_attr in attn_attrs:
                module = getattr(block, attn_attr, None)
                if module is not None:
                    found.append((f"{blocks_attr}.{i}.{attn_attr}", module))
    return found
