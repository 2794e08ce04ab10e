"""A third-party sparse attention method in one file: ``sparse: {method: toy_prefix, ratio, ...}``.

Every query block keeps the first key blocks of the grid (``1 - ratio`` of them): a mask that
needs no data, to show what a sparse entry holds. Its config, search space, install and
removal are the block-sparse section's shared ones; the entry's own part is the mask.
Found through ``MINDIESD_TUNE_PLUGINS=toy_sparse_plugin`` or the ``mindiesd_tune.methods``
entry-point group.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch

from mindiesd_tune.accel.methods import BlockSparseConfig, block_sparse_method, masked, register_method
from mindiesd_tune.accel.sparse.masks import grid_blocks, kept_blocks


@dataclass
class ToyPrefixConfig(BlockSparseConfig):
    """Every query block attends to the first ``1 - ratio`` of the key blocks (and the text)."""

    method: ClassVar[str] = "toy_prefix"


def mask(cfg, q, k, layout, group):
    """``(1, 1, query blocks, kept)``: the kept key blocks' indices, the same for every query block."""
    blocks = grid_blocks(layout.grid, cfg.block_size).num_blocks
    kept = kept_blocks(cfg.ratio, blocks)
    return torch.arange(kept, device=q.device).expand(1, 1, blocks, kept)


register_method(block_sparse_method(ToyPrefixConfig, ToyPrefixConfig(ratio=0.5, block_size=16), masked(mask)))
