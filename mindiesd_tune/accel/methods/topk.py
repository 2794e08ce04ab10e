"""sparse: topk, dynamic top-k key blocks per query block (``accel.sparse``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..registry import register_method
from ._block_sparse import BlockSparseConfig, block_sparse_method, masked


@dataclass
class TopKSparseConfig(BlockSparseConfig):
    """Dynamic top-k blocks (SpargeAttn / MInference style).

    At every call the queries and keys are mean-pooled per block; each query block keeps
    the key blocks with the highest pooled q.k scores (``1 - ratio`` of them), per head.
    Follows the content, at the cost of one small (blocks x blocks) score matrix per call.
    """

    method: ClassVar[str] = "topk"


def mask(cfg, q, k, layout, group):
    from ..sparse.masks import topk_mask

    return topk_mask(q, k, cfg.block_size, cfg.ratio, cfg.keep_sink, cfg.keep_recent, group)


register_method(block_sparse_method(TopKSparseConfig, TopKSparseConfig(ratio=0.5, block_size=16), masked(mask)))
