"""Which linear layers of a component a scheme quantises (the layer filter)."""

from __future__ import annotations

import logging

import torch

from ...errors import UserError

logger = logging.getLogger(__name__)


def _block_of(model: torch.nn.Module, cfg) -> tuple[dict[int, int], int] | None:
    """id(linear) -> index of the repeated block holding it, and the block count; None for a model without a block list."""
    from ..blocks import transformer_blocks
    from ..specs import UnsupportedModelError

    try:
        blocks = transformer_blocks(model)
    except UnsupportedModelError as e:
        if cfg.skip_first_blocks or cfg.skip_last_blocks or cfg.skip_outside_blocks:
            raise UserError(f"quant: the block filter (skip_first_blocks, skip_last_blocks, skip_outside_blocks) needs the model's blocks: {e}") from None
        return None
    where = {id(m): i for i, b in enumerate(blocks) for m in b.module.modules()}
    return where, len(blocks)


def select_linears(module: torch.nn.Module, cfg, component: str) -> list[tuple[str, torch.nn.Linear]]:
    """The ``nn.Linear`` layers of ``module`` that ``cfg`` quantises, as ``(qualified name, layer)``.

    The block filter (first/last blocks, layers outside the blocks) applies to the denoiser;
    ``min_features`` and the int4 group size to every component.
    """
    blocks = _block_of(module, cfg) if component == "denoiser" else None
    group = getattr(cfg, "group_size", None)
    chosen = []
    for name, layer in module.named_modules():
        if not isinstance(layer, torch.nn.Linear):
            continue
        if blocks is not None:
            where, n = blocks
            index = where.get(id(layer))
            if index is None:
                if cfg.skip_outside_blocks:
                    continue
            elif index < cfg.skip_first_blocks or index >= n - cfg.skip_last_blocks:
                continue
        if min(layer.in_features, layer.out_features) < cfg.min_features:
            continue
        if group is not None and layer.in_features % group:
            logger.debug("%s stays in float: group size %d does not divide its %d input features", name, group, layer.in_features)
            continue
        chosen.append((name, layer))
    return chosen
