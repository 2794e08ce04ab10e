"""sparse: adaptive, head-adaptive sparsity chosen by a probe (``accel.sparse``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import check
from ..registry import register_method
from ._block_sparse import BlockSparseConfig, block_sparse_method


@dataclass
class HeadAdaptiveSparseConfig(BlockSparseConfig):
    """Head-adaptive sparsity (RainFusion-like).

    A cheap probe at the first sparse step of every call attends ``probe_queries`` sampled
    queries to all keys and classifies each head by where its attention mass falls:
    *spatial* (within the same frame / near on the image), *temporal* (the same place in
    other frames; video only) or *full*. Spatial and temporal heads keep ``1 - ratio`` of
    the key blocks in their pattern; full heads stay dense, so the realised density is
    at least ``1 - ratio`` (reported in the handle's stats).

    Attributes:
        probe_queries: query tokens sampled per head for the probe; more is a surer
            classification for a slightly larger one-off cost.
        recall: a head takes a sparse pattern only if that pattern keeps at least this
            fraction of the probed attention mass; otherwise it stays dense.
    """

    method: ClassVar[str] = "adaptive"
    probe_queries: int = 64
    recall: float = 0.8

    def validate(self) -> None:
        super().validate()
        check(self.probe_queries >= 1, "sparse.probe_queries", self.probe_queries, "must be >= 1")
        check(0.0 <= self.recall <= 1.0, "sparse.recall", self.recall, "must be in [0, 1]")


def grid(*args):
    from ..sparse.engine import head_adaptive_attention

    return head_adaptive_attention(*args)


register_method(block_sparse_method(HeadAdaptiveSparseConfig, HeadAdaptiveSparseConfig(ratio=0.5, block_size=16, recall=0.0),
                                    grid))
