"""sparse: local, local windows over the token grid (``accel.sparse``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..registry import register_method
from ._block_sparse import BlockSparseConfig, block_sparse_method, masked


@dataclass
class LocalWindowConfig(BlockSparseConfig):
    """Local windows over the token grid (sliding-window / neighbourhood attention).

    Every query block keeps the key blocks nearest to it on the grid: a 2D neighbourhood
    for images, a 3D one (frames x height x width) for video. Windows are shifted at the
    grid's edges rather than cut, so every block keeps the same count. No data-dependent
    work: the mask is built once per grid and reused.
    """

    method: ClassVar[str] = "local"


def mask(cfg, q, k, layout, group):
    from ..sparse.masks import pattern_mask

    return pattern_mask(layout.grid, cfg.block_size, cfg.ratio, "local", cfg.keep_sink, cfg.keep_recent, group).to(q.device)


register_method(block_sparse_method(LocalWindowConfig, LocalWindowConfig(ratio=0.5, block_size=16), masked(mask)))
