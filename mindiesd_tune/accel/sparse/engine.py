"""The attention one processor runs: dense, or block-sparse over the grid with text kept dense.

Which key blocks a sparse method keeps is its registry entry's ``hook`` (the grid attention,
``masked_attention`` with its mask or ``head_adaptive_attention``); this module asks the
registry for it and imports no method.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from ...kernels.attention import BlockSparseMask, attention
from ..registry import method_of
from .masks import TokenLayout, grid_blocks, kept_blocks, pattern_mask, probe_recall, query_group


@dataclass
class SparseCounters:
    """What the sparse attention did since apply() or the last reset().

    ``sparse_density`` is the fraction of (query block, key block) pairs of the grid that
    sparse calls computed, over all heads (dense heads of the adaptive method count fully).
    """

    attention_sparse_calls: int = 0
    attention_dense_calls: int = 0
    kept_block_pairs: int = 0
    total_block_pairs: int = 0
    heads_spatial: int = 0
    heads_temporal: int = 0
    heads_full: int = 0

    def reset(self) -> None:
        self.__init__()

    @property
    def sparse_density(self) -> float:
        return self.kept_block_pairs / self.total_block_pairs if self.total_block_pairs else 1.0

    def as_dict(self) -> dict:
        return {**asdict(self), "sparse_density": self.sparse_density}


@dataclass
class CallContext:
    """What the denoiser's forward tells its attention processors: the token layout and
    whether this step attends densely. Set by a pre-forward hook, read by the processors."""

    layout: TokenLayout | None = None
    dense_step: bool = False


class SparseAttention:
    """Attention for one install: ``__call__(q, k, v, layer)`` with ``(B, H, S, D)`` tensors."""

    def __init__(self, cfg, context: CallContext, counters: SparseCounters, dense_layers: set[int]):
        self.cfg, self.context, self.counters, self.dense_layers = cfg, context, counters, dense_layers
        # the entry's grid attention; None for dense attention on a chosen backend
        self.grid = method_of(cfg).hook

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int) -> torch.Tensor:
        cfg, layout = self.cfg, self.context.layout
        if layout is not None and layout.text_len and q.shape[2] == layout.grid_len:
            layout = replace(layout, text_len=0)  # an image-only attention beside a joint one (SD3 attn2)
        sparse = (
            self.grid is not None
            and cfg.ratio > 0
            and not self.context.dense_step
            and layer not in self.dense_layers
            and layout is not None
            and layout.grid_len + layout.text_len == q.shape[2] == k.shape[2]
        )
        if sparse:
            blocks = grid_blocks(layout.grid, cfg.block_size)
            sparse = kept_blocks(cfg.ratio, blocks.num_blocks) < blocks.num_blocks
        if not sparse:  # exactly the call the unaccelerated processors make
            self.counters.attention_dense_calls += 1
            return attention(q, k, v, backend=cfg.backend)
        self.counters.attention_sparse_calls += 1
        return self._sparse(q, k, v, layout)

    # ---- the sparse path
    def _sparse(self, q, k, v, layout: TokenLayout) -> torch.Tensor:
        cfg = self.cfg
        T, N = layout.text_len, layout.grid_len
        grid = slice(T, T + N) if layout.text_first else slice(0, N)
        text = slice(0, T) if layout.text_first else slice(N, N + T)
        blocks = grid_blocks(layout.grid, cfg.block_size)
        qg, kg, vg = q[:, :, grid], k[:, :, grid], v[:, :, grid]
        if blocks.perm is not None:
            perm = blocks.perm.to(q.device)
            qg, kg, vg = qg[:, :, perm], kg[:, :, perm], vg[:, :, perm]
        dense_kv = (k[:, :, text], v[:, :, text]) if T else None

        out_g = self._grid_attention(qg, kg, vg, dense_kv, layout)
        if blocks.inverse is not None:
            out_g = out_g[:, :, blocks.inverse.to(q.device)]
        if not T:
            return out_g
        # text queries attend to every token
        out_t = attention(q[:, :, text], k, v, backend=cfg.backend)
        return torch.cat([out_t, out_g] if layout.text_first else [out_g, out_t], dim=2)

    def _grid_attention(self, qg, kg, vg, dense_kv, layout: TokenLayout) -> torch.Tensor:
        return self.grid(self, qg, kg, vg, dense_kv, layout)

    def _count(self, kept_per_row: int, total_per_row: int, rows: int) -> None:
        self.counters.kept_block_pairs += kept_per_row * rows
        self.counters.total_block_pairs += total_per_row * rows


def _plan(cfg, layout: TokenLayout) -> tuple[int, int, int]:
    """(blocks of the grid, key blocks each query block keeps, query blocks sharing one set)."""
    num_blocks = grid_blocks(layout.grid, cfg.block_size).num_blocks
    kept = kept_blocks(cfg.ratio, num_blocks)
    return num_blocks, kept, query_group(num_blocks, cfg.query_group, kept)


def masked_attention(mask, attend: SparseAttention, qg, kg, vg, dense_kv, layout: TokenLayout) -> torch.Tensor:
    """Grid attention with one mask for every head: ``mask(cfg, q, k, layout, group)`` gives the
    kept key blocks of each query block (``masks.topk_mask``, ``masks.pattern_mask``)."""
    cfg = attend.cfg
    bs, H, N = cfg.block_size, qg.shape[1], qg.shape[2]
    num_blocks, kept, group = _plan(cfg, layout)
    idx = mask(cfg, qg, kg, layout, group)
    attend._count(kept * H, num_blocks * H, num_blocks)
    return attention(qg, kg, vg, block_mask=BlockSparseMask(idx, bs, N, group), dense_kv=dense_kv, backend=cfg.backend,
                     sparse_kernel=cfg.kernel)


def head_adaptive_attention(attend: SparseAttention, qg, kg, vg, dense_kv, layout: TokenLayout) -> torch.Tensor:
    """Grid attention whose heads each take the pattern a probe finds keeps their mass (or stay dense)."""
    cfg, counters = attend.cfg, attend.counters
    bs, H = cfg.block_size, qg.shape[1]
    num_blocks, kept, group = _plan(cfg, layout)
    run = dict(dense_kv=dense_kv, backend=cfg.backend, sparse_kernel=cfg.kernel)
    names = ("spatial", "temporal") if layout.is_video else ("spatial",)
    masks = {
        n: pattern_mask(layout.grid, bs, cfg.ratio, n, cfg.keep_sink, cfg.keep_recent, group).to(qg.device) for n in names
    }
    recall = probe_recall(qg, kg, bs, masks, cfg.probe_queries)
    stacked = torch.stack([recall[n] for n in names])  # (patterns, H)
    best = stacked.argmax(0)
    ok = stacked.max(0).values >= cfg.recall
    out = torch.empty_like(qg)
    groups = {n: torch.nonzero(ok & (best == i)).flatten() for i, n in enumerate(names)}
    groups["full"] = torch.nonzero(~ok).flatten()
    kept_pairs = 0
    for name, heads in groups.items():
        if heads.numel() == 0:
            continue
        setattr(counters, f"heads_{name}", getattr(counters, f"heads_{name}") + heads.numel())
        sub = lambda x: x.index_select(1, heads)  # noqa: E731, B023  (used within this iteration)
        dkv = run["dense_kv"]
        sub_run = {**run, "dense_kv": None if dkv is None else (sub(dkv[0]), sub(dkv[1]))}
        if name == "full":
            res = attention(sub(qg), sub(kg), sub(vg), dense_kv=sub_run["dense_kv"], backend=cfg.backend)
            kept_pairs += num_blocks * heads.numel()
        else:
            mask = BlockSparseMask(masks[name], bs, qg.shape[2], group)
            res = attention(sub(qg), sub(kg), sub(vg), block_mask=mask, **sub_run)
            kept_pairs += kept * heads.numel()
        out.index_copy_(1, heads, res)
    attend._count(kept_pairs, num_blocks * H, num_blocks)
    return out
