"""What the block-sparse methods (local, topk, adaptive) share: fields, search space, applicability."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigError, check
from ..registry import Knob, Method
from ._common import DIT
from .dense import NoSparse, install

SPARSE_KERNELS = ("auto", "gather", "flex", "masked")


@dataclass(frozen=True)
class SparseRanges:
    ratio: tuple[float, float]
    block_size: tuple[int, ...]
    dense_steps: tuple[float, float]
    dense_layers: tuple[str, ...]  # comma-separated layer indices; "" = none


# Ratios bracket MindIE SD's starting points (0.6 for images, 0.8 for video). Block sizes
# include small ones because the demo models have only tens to hundreds of tokens; 128 is
# what real models and the GPU kernels use.
SPARSE_RANGES: dict[str, SparseRanges] = {
    "dit-image": SparseRanges((0.3, 0.9), (16, 64, 128), (0.0, 0.5), ("", "0", "0,-1")),
    "dit-video": SparseRanges((0.5, 0.95), (16, 64, 128), (0.0, 0.5), ("", "0", "0,-1")),
}
MIN_BLOCKS = 2  # one block is the whole sequence: nothing left to skip


@dataclass
class BlockSparseConfig(NoSparse):
    """What every block-sparse method shares: the ratio, the blocks, and when to stay dense.

    Tokens of the image or video grid are grouped into blocks of ``block_size`` tokens
    (tiles of the grid where the grid allows it). Every query block attends to the same
    number of key blocks, ``round((1 - ratio) * blocks)``, so the work falls with the
    ratio; the methods differ only in which key blocks they keep. Text tokens (Flux, SD3
    joint attention) always attend and are attended to densely; cross-attention is never
    sparsified.

    Attributes:
        ratio: the fraction of key blocks each query block skips. 0 is dense attention (the
            baseline output, bit for bit); MindIE SD suggests about 0.6 for images and 0.8
            for video as starting points. The ideal speed-up of attention is 1 / (1 - ratio).
        block_size: tokens per block. Larger blocks run faster kernels but choose coarser
            masks; 128 matches MindIE SD and the GPU kernels.
        keep_sink: every query block keeps the first key block (an attention sink); it
            counts towards the kept blocks.
        keep_recent: every query block keeps its own key block (the diagonal).
        dense_steps: the first ``dense_steps`` fraction of denoising steps attend densely;
            early steps lay out the image, so sparsifying them costs the most quality.
        dense_layers: attention layers (indices in forward order; negative from the end)
            that always attend densely. A comma-separated string ("0,-1") is accepted.
        query_group: consecutive query blocks (in block order) that share one set of key
            blocks, as in Sliding Tile Attention. Above 1 the gather kernel copies each set
            once per group and runs longer dense calls (faster, most of all on CPUs); the
            mask gets coarser on the query side. Ignored (1) unless it divides the block
            count and is at most the number of kept blocks.
        kernel: the block-sparse kernel: ``gather`` (kept blocks copied into a dense batch,
            then the dense backend; fastest here), ``flex`` (compiled FlexAttention),
            ``masked`` (the reference, no faster than dense) or ``auto`` (gather).
        backend: the dense kernel for dense layers, dense steps and gathered blocks.
    """

    ratio: float = 0.0
    block_size: int = 128
    keep_sink: bool = True
    keep_recent: bool = True
    dense_steps: float = 0.0
    dense_layers: list = field(default_factory=list)
    query_group: int = 1
    kernel: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.dense_layers, str):
            text = self.dense_layers.strip()
            try:
                self.dense_layers = [int(x) for x in text.split(",")] if text else []
            except ValueError:
                raise ConfigError(f"sparse.dense_layers: {self.dense_layers!r} must be integers separated by commas") from None
        elif isinstance(self.dense_layers, tuple):
            self.dense_layers = list(self.dense_layers)

    def validate(self) -> None:
        super().validate()
        check(0.0 <= self.ratio < 1.0, "sparse.ratio", self.ratio, "must be in [0, 1)")
        for name in ("block_size", "query_group"):
            v = getattr(self, name)
            check(isinstance(v, int) and v >= 1, f"sparse.{name}", v, "must be an integer >= 1")
        check(0.0 <= self.dense_steps <= 1.0, "sparse.dense_steps", self.dense_steps, "must be in [0, 1]")
        check(
            isinstance(self.dense_layers, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in self.dense_layers),
            "sparse.dense_layers",
            self.dense_layers,
            "must be a list of layer indices",
        )
        check(self.kernel in SPARSE_KERNELS, "sparse.kernel", self.kernel, f"must be one of {', '.join(SPARSE_KERNELS)}")


def ranges(ctx) -> SparseRanges:
    return SPARSE_RANGES.get(ctx.family, SPARSE_RANGES["dit-image"])


def block_sizes(ctx) -> list[int]:
    """The block sizes that leave at least two blocks at the model's token count (all when unknown)."""
    tokens = ctx.sparse_tokens
    return [b for b in ranges(ctx).block_size if tokens is None or tokens // b >= MIN_BLOCKS]


def applies(ctx) -> bool:
    """A DiT with a sparse layout (``sparse_tokens`` 0: none) and a block size that leaves blocks to skip."""
    return (ctx.family is None or ctx.family in DIT) and ctx.sparse_tokens != 0 and bool(block_sizes(ctx))


def suggest(trial, ctx) -> dict:
    r = ranges(ctx)
    return {
        "sparse.ratio": trial.suggest_float("sparse.ratio", *r.ratio),
        "sparse.block_size": trial.suggest_categorical("sparse.block_size", block_sizes(ctx)),
        "sparse.dense_steps": trial.suggest_float("sparse.dense_steps", *r.dense_steps, step=0.05),
        "sparse.dense_layers": trial.suggest_categorical("sparse.dense_layers", list(r.dense_layers)),
    }


def masked(mask):
    """The grid attention of a method that keeps the key blocks ``mask(cfg, q, k, layout, group)`` names.

    ``mask`` returns, per query block (or group of ``group`` query blocks), the indices of the
    key blocks it keeps, as ``accel.sparse.masks.topk_mask`` and ``pattern_mask`` do.
    """

    def grid(*args):
        from ..sparse.engine import masked_attention

        return masked_attention(mask, *args)

    return grid


def block_sparse_method(config: type, example, grid) -> Method:
    """The entry of a block-sparse method: shared installer, space and applicability; ``grid``
    is its grid attention (``masked(mask)`` for one mask for all heads), the entry's ``hook``."""
    return Method(section="sparse", name=config.method, config=config, install=install, suggest=suggest,
                  applies=applies, example=example, hook=grid,
                  knob=Knob("sparse.ratio", +1))  # a larger ratio skips more blocks
