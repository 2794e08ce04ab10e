"""Block-sparse attention: local windows, dynamic top-k and head-adaptive masks, installed by swapping processors."""

from .engine import CallContext, SparseAttention, SparseCounters
from .install import dense_step_count, install_sparse, sparse_token_count
from .masks import (
    GridBlocks,
    TokenLayout,
    grid_blocks,
    kept_blocks,
    pattern_mask,
    probe_recall,
    query_group,
    tile_shape,
    topk_mask,
)
from .processors import FluxSparseAttnProcessor, JointSparseAttnProcessor, SparseProcessor, WanSparseAttnProcessor

__all__ = [
    "CallContext",
    "FluxSparseAttnProcessor",
    "JointSparseAttnProcessor",
    "SparseProcessor",
    "WanSparseAttnProcessor",
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
    "sparse_token_count",
    "tile_shape",
    "topk_mask",
]
