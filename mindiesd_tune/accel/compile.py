"""Regional torch.compile: compile each repeated block, which keeps compile time low."""

from __future__ import annotations

import torch

from .blocks import transformer_blocks
from .config import CompileConfig


def apply_compile(model: torch.nn.Module, cfg: CompileConfig):
    """Compile the model's blocks in place; returns a function that restores eager execution."""
    if cfg.mode == "none":
        return lambda: None
    blocks = [b.module for b in transformer_blocks(model)]
    for block in blocks:
        block.compile(mode=None if cfg.mode == "default" else cfg.mode, dynamic=cfg.dynamic)

    def remove() -> None:
        for block in blocks:
            block._compiled_call_impl = None

    return remove
