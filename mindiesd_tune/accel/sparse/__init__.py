"""Block-sparse attention: local windows, dynamic top-k and head-adaptive masks, installed by swapping processors."""

from .engine import CallContext, SparseAttention, SparseCounters
from .install import LAYOUTS, dense_step_count, install_sparse
from .masks import GridBlocks, TokenLayout, grid_blocks, kept_blocks, pattern_mask, probe_recall, query_group, tile_shape, topk_mask
from .processors import PROCESSORS

__all__ = [
    "LAYOUTS",
    "PROCESSORS",
    "CallContext",
    "GridBlocks",
    "SparseAttention",
    "SparseCounters",
    "TokenLayout",
    "dense_step_count",
    "grid_blocks",
    "install_sparse",
    "kept_blocks",
    "pattern_mask",
    "probe_recall",
    "query_group",
    "tile_shape",
    "topk_mask",
]
