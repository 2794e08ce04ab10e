"""Block masks over a token grid: tiles of the grid as blocks, local windows, top-k and head-pattern masks.

Every mask keeps the same number of key blocks in every query-block row (what the gather
kernel needs): ``kept_blocks(ratio, blocks)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

# Ranks one axis far above the other (spatial vs temporal patterns): a block a frame away is
# farther than any block in the same frame.
_AXIS_DOMINANCE = 1.0e4
# Priorities of forced blocks in a row: the diagonal before the sink before any score.
_DIAGONAL = float("inf")
_SINK = 1.0e30


@dataclass(frozen=True)
class TokenLayout:
    """Where the grid tokens sit in an attention call's sequence.

    Attributes:
        grid: ``(height, width)`` for images or ``(frames, height, width)`` for video; the
            grid tokens are in row-major order of this shape.
        text_len: text tokens in the same sequence (joint attention), attended densely.
        text_first: the text tokens come before the grid tokens (Flux) or after them (SD3).
    """

    grid: tuple[int, ...]
    text_len: int = 0
    text_first: bool = True

    @property
    def grid_len(self) -> int:
        return math.prod(self.grid)

    @property
    def is_video(self) -> bool:
        return len(self.grid) == 3


def kept_blocks(ratio: float, blocks: int) -> int:
    """Key blocks kept per query block: ``1 - ratio`` of them, at least one."""
    return max(1, min(blocks, round((1.0 - ratio) * blocks)))


@dataclass(frozen=True)
class GridBlocks:
    """The grid cut into blocks of ``block_size`` tokens.

    Attributes:
        perm: grid token indices in block order (None when row-major order is kept);
            position ``i`` of the blocked sequence holds grid token ``perm[i]``.
        inverse: the inverse permutation.
        coords: ``(blocks, ndim)`` centroid of every block in grid coordinates.
        tile: the tile shape when the blocks are tiles of the grid, else None (row-major runs).
    """

    grid: tuple[int, ...]
    block_size: int
    perm: torch.Tensor | None
    inverse: torch.Tensor | None
    coords: torch.Tensor
    tile: tuple[int, ...] | None
    query_coords: torch.Tensor | None = None  # centres of query groups, when they differ

    @property
    def num_blocks(self) -> int:
        return self.coords.shape[0]


def tile_shape(grid: tuple[int, ...], block_size: int) -> tuple[int, ...] | None:
    """A tile of exactly ``block_size`` tokens that divides the grid: one frame thick when it
    can be, as square as possible across height and width. None when there is none."""
    best, best_key = None, None
    frames = grid[:-2]
    for tt in _divisors(frames[0]) if frames else [1]:
        for th in _divisors(grid[-2]):
            if block_size % (tt * th):
                continue
            tw = block_size // (tt * th)
            if grid[-1] % tw:
                continue
            key = (tt, abs(math.log(th / tw)))
            if best_key is None or key < best_key:
                best, best_key = ((tt,) if frames else ()) + (th, tw), key
    return best


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@lru_cache(maxsize=64)
def grid_blocks(grid: tuple[int, ...], block_size: int) -> GridBlocks:
    """Blocks of a grid: tiles when a tile of ``block_size`` divides it, else row-major runs."""
    n = math.prod(grid)
    coords = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in grid], indexing="ij"), -1)
    coords = coords.reshape(n, len(grid))
    tile = tile_shape(grid, block_size)
    perm = inverse = None
    if tile is not None:
        order = _tile_order(grid, tile)
        if not torch.equal(order, torch.arange(n)):  # tiles of whole rows keep row-major order
            perm = order
            inverse = torch.empty_like(perm)
            inverse[perm] = torch.arange(n)
            coords = coords[perm]
    blocks = -(-n // block_size)
    padded = torch.cat([coords, coords.new_zeros(blocks * block_size - n, len(grid))])
    counts = torch.full((blocks,), float(block_size))
    counts[-1] = n - (blocks - 1) * block_size
    centroids = padded.reshape(blocks, block_size, len(grid)).sum(1) / counts[:, None]
    return GridBlocks(grid, block_size, perm, inverse, centroids, tile)


def query_group(blocks: int, group: int, kept: int | None = None) -> int:
    """The group size a mask over ``blocks`` query blocks really uses: 1 unless ``group``
    divides the blocks and is at most ``kept`` (so every query block can keep its own)."""
    ok = group > 1 and blocks % group == 0 and (kept is None or group <= kept)
    return group if ok else 1


def _tile_order(grid: tuple[int, ...], tile: tuple[int, ...]) -> torch.Tensor:
    """Grid token indices tile by tile; tiles in raster order, except that 2x2 squares of
    tiles come one after another when the tile grid allows (so consecutive blocks form
    compact groups for ``query_group``)."""
    n = math.prod(grid)
    index = torch.arange(n).reshape(grid)
    tiles = [s // t for s, t in zip(grid, tile)]
    d = len(grid)
    if tiles[-1] % 2 == 0 and tiles[-2] % 2 == 0:
        # axes: [frame tiles, tt], rows/2, 2, th, cols/2, 2, tw
        lead = [tiles[0], tile[0]] if d == 3 else []
        shape = lead + [tiles[-2] // 2, 2, tile[-2], tiles[-1] // 2, 2, tile[-1]]
        o = len(lead)
        perm = ([0] if d == 3 else []) + [o, o + 3, o + 1, o + 4] + ([1] if d == 3 else []) + [o + 2, o + 5]
        return index.reshape(shape).permute(*perm).reshape(n)
    # split every axis into (tiles, within tile), then bring the tile axes to the front
    split = index.reshape([x for s, t in zip(tiles, tile) for x in (s, t)])
    return split.permute(*range(0, 2 * d, 2), *range(1, 2 * d, 2)).reshape(n)


def _select(priority: torch.Tensor, kept: int, keep_sink: bool, keep_recent: bool, group: int = 1) -> torch.Tensor:
    """Indices of the ``kept`` highest-priority key blocks per row (a row per group of
    ``group`` query blocks), forced blocks first; rows repeated to one per query block."""
    priority = priority.clone()
    if keep_sink:
        priority[..., 0] = _SINK
    if keep_recent:  # each group's own blocks
        rows = torch.arange(priority.shape[-2])
        for j in range(group):
            cols = rows * group + j
            ok = cols < priority.shape[-1]
            priority[..., rows[ok], cols[ok]] = _DIAGONAL
    idx = priority.topk(kept, dim=-1, sorted=False).indices
    return idx.repeat_interleave(group, dim=-2) if group > 1 else idx


def _distance(blocks: GridBlocks, spatial_weight: float = 1.0, temporal_weight: float = 1.0) -> torch.Tensor:
    c = blocks.coords
    qc = blocks.query_coords if blocks.query_coords is not None else c
    delta = (qc[:, None, :] - c[None, :, :]).abs()
    if c.shape[1] == 3:
        spatial = delta[..., 1:].square().sum(-1).sqrt()
        return temporal_weight * delta[..., 0] + spatial_weight * spatial
    return delta.square().sum(-1).sqrt() * spatial_weight


@lru_cache(maxsize=256)
def pattern_mask(
    grid: tuple[int, ...], block_size: int, ratio: float, pattern: str, keep_sink: bool, keep_recent: bool, group: int = 1
) -> torch.Tensor:
    """``(1, 1, blocks, kept)`` key-block indices of a fixed pattern.

    ``local``: the nearest blocks on the grid (isotropic); ``spatial``: the same frame
    first, then the nearest frames; ``temporal``: the same place in every frame first.
    On an image grid all three are the local window. With ``group`` > 1, each run of
    ``group`` consecutive query blocks shares the window around its centre.
    """
    blocks = grid_blocks(grid, block_size)
    kept = kept_blocks(ratio, blocks.num_blocks)
    group = query_group(blocks.num_blocks, group, kept)
    if group > 1:
        centres = blocks.coords.reshape(-1, group, blocks.coords.shape[1]).mean(1)
        blocks = GridBlocks(blocks.grid, block_size, None, None, blocks.coords, blocks.tile, centres)
    if pattern == "local" or len(grid) == 2:
        dist = _distance(blocks)
    elif pattern == "spatial":
        dist = _distance(blocks, temporal_weight=_AXIS_DOMINANCE)
    elif pattern == "temporal":
        dist = _distance(blocks, spatial_weight=_AXIS_DOMINANCE)
    else:
        raise ValueError(f"unknown block pattern {pattern!r}")
    # ties broken towards lower block indices, so the mask is the same on every run
    tie = torch.arange(blocks.num_blocks, dtype=torch.float64) * 1e-9
    priority = -(dist.double() + tie)
    idx = _select(priority, kept, keep_sink, keep_recent, group)
    return idx[None, None]


def block_pool(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """Mean of ``x`` (``B, H, S, D``) over each block of tokens -> ``(B, H, blocks, D)``."""
    B, H, S, D = x.shape
    blocks = -(-S // block_size)
    pad = blocks * block_size - S
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
    sums = x.reshape(B, H, blocks, block_size, D).sum(3)
    counts = torch.full((blocks, 1), float(block_size), dtype=x.dtype, device=x.device)
    counts[-1] = block_size - pad
    return sums / counts


def topk_mask(
    q: torch.Tensor, k: torch.Tensor, block_size: int, ratio: float, keep_sink: bool, keep_recent: bool, group: int = 1
) -> torch.Tensor:
    """``(B, H, blocks, kept)``: per query block the key blocks of highest pooled q.k score
    (per group of ``group`` query blocks when it divides the block count)."""
    kp = block_pool(k, block_size)
    kept = kept_blocks(ratio, kp.shape[2])
    group = query_group(kp.shape[2], group, kept)
    qp = block_pool(q, block_size)
    if group > 1:
        qp = qp.reshape(*qp.shape[:2], -1, group, qp.shape[-1]).mean(3)
    scores = torch.matmul(qp.float(), kp.float().transpose(-1, -2))
    return _select(scores, kept, keep_sink, keep_recent, group)


def probe_recall(
    q: torch.Tensor, k: torch.Tensor, block_size: int, masks: dict[str, torch.Tensor], probe_queries: int, scale: float | None = None
) -> dict[str, torch.Tensor]:
    """Per head, the fraction of sampled queries' attention mass each pattern mask keeps.

    ``q, k``: ``(B, H, S, D)`` in block order; ``masks``: name -> ``(1, 1, blocks, kept)``.
    Returns name -> ``(H,)`` recall, averaged over the batch and the sampled queries.
    """
    B, H, S, D = q.shape
    blocks = -(-S // block_size)
    picks = torch.linspace(0, S - 1, min(probe_queries, S), device=q.device).round().long()
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    probs = torch.softmax(torch.matmul(q[:, :, picks].float(), k.float().transpose(-1, -2)) * scale, dim=-1)
    pad = blocks * block_size - S
    if pad:
        probs = torch.nn.functional.pad(probs, (0, pad))
    mass = probs.reshape(B, H, len(picks), blocks, block_size).sum(-1)  # (B, H, P, blocks)
    rows = picks // block_size
    out = {}
    for name, idx in masks.items():
        keep = torch.zeros(blocks, blocks, dtype=mass.dtype, device=mass.device)
        keep.scatter_(-1, idx[0, 0].to(mass.device), 1.0)
        out[name] = (mass * keep[rows]).sum(-1).mean(dim=(0, 2))
    return out
