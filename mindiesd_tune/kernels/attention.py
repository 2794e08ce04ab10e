"""One attention entry point for the whole accel library: dense backends per device, block-sparse kernels.

``attention(q, k, v)`` takes tensors in the SDPA layout ``(batch, heads, tokens, head_dim)``.

Dense backends (``backend=``), each a small handler in a registry:

- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention``; every device, the default.
- ``flash_attn``: Dao's flash-attn (``flash_attn_func``); CUDA, fp16/bf16, when installed.
- ``sage``: SageAttention (``sageattn``, INT8 Q.K); CUDA, fp16/bf16, when installed.
- ``npu``: ``torch_npu.npu_fusion_attention`` on Ascend (import-guarded; it cannot run on a
  machine without an Ascend device, so it is untested here).
- ``auto``: the best installed one for the tensors' device (flash_attn, else sdpa on CUDA;
  npu on Ascend; sdpa on the CPU).

Block-sparse attention (``block_mask=BlockSparseMask``): every query block attends to the
key blocks its row lists, plus optional ``dense_kv`` tokens (e.g. text) that every query sees.
Kernels (``sparse_kernel=``):

- ``gather``: copy each query block's kept key/value blocks into a dense batch and run the
  dense backend on it. Needs the same number of kept blocks in every row (the masks of
  ``accel.sparse`` are built that way); runs on any device and any dense backend.
- ``flex``: compiled FlexAttention with a ``BlockMask`` (``dynamic=False``: torch 2.14's CPU
  inductor failed to recompile for a new length under dynamic shapes).
- ``masked``: SDPA with the mask expanded to tokens; exact but no faster than dense, the
  reference the others are tested against.
- ``auto``: ``gather``.

Asking for a backend that is not installed, or that does not run on the tensors' device, is
an ``AttentionBackendError`` that says what is available.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


class AttentionBackendError(RuntimeError):
    """The requested attention backend is missing or cannot run these tensors."""


# --------------------------------------------------------------------------- dense backends


@dataclass(frozen=True)
class DenseBackend:
    """A dense attention kernel: ``run(q, k, v, scale) -> out``, all ``(B, H, S, D)``."""

    name: str
    run: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float | None], torch.Tensor]
    # (device, dtype) -> None when usable, else the reason it is not
    unusable: Callable[[torch.device, torch.dtype], str | None]


_DENSE: dict[str, DenseBackend] = {}


def register_dense_backend(backend: DenseBackend) -> DenseBackend:
    _DENSE[backend.name] = backend
    return backend


def dense_backends() -> list[str]:
    return sorted(_DENSE) + ["auto"]


def _sdpa(q, k, v, scale=None, attn_mask=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _cuda_half(name: str, module: str, pip: str):
    def unusable(device, dtype):
        if not _importable(module):
            return f"{name} is not installed (pip install {pip})"
        if device.type != "cuda":
            return f"{name} runs on CUDA only, the tensors are on {device.type}"
        if dtype not in (torch.float16, torch.bfloat16):
            return f"{name} needs float16 or bfloat16 tensors, got {dtype}"
        return None

    return unusable


def _flash_attn(q, k, v, scale=None):
    from flash_attn import flash_attn_func

    # flash-attn wants (B, S, H, D)
    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale)
    return out.transpose(1, 2)


def _sage(q, k, v, scale=None):
    from sageattention import sageattn

    return sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=scale)


def _npu_unusable(device, dtype):
    if not _importable("torch_npu"):
        return "npu needs torch_npu (Ascend), which is not installed"
    if device.type != "npu":
        return f"npu runs on Ascend devices only, the tensors are on {device.type}"
    return None


def _npu(q, k, v, scale=None):
    import torch_npu

    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    # npu_fusion_attention returns (out, softmax_max, softmax_sum, softmax_out, seed, offset, numels)
    return torch_npu.npu_fusion_attention(q, k, v, q.shape[1], "BNSD", scale=scale, keep_prob=1.0)[0]


register_dense_backend(DenseBackend("sdpa", _sdpa, lambda device, dtype: None))
register_dense_backend(DenseBackend("flash_attn", _flash_attn, _cuda_half("flash_attn", "flash_attn", "flash-attn")))
register_dense_backend(DenseBackend("sage", _sage, _cuda_half("sage", "sageattention", "sageattention")))
register_dense_backend(DenseBackend("npu", _npu, _npu_unusable))


def resolve_backend(name: str, device: torch.device | str, dtype: torch.dtype = torch.float32) -> DenseBackend:
    """The dense backend called ``name`` for tensors on ``device``; a clear error when it cannot run."""
    device = torch.device(device)
    if name == "auto":
        order = {"cuda": ("flash_attn", "sdpa"), "npu": ("npu", "sdpa")}.get(device.type, ("sdpa",))
        for candidate in order:
            if _DENSE[candidate].unusable(device, dtype) is None:
                return _DENSE[candidate]
        return _DENSE["sdpa"]
    if name not in _DENSE:
        raise AttentionBackendError(f"unknown attention backend {name!r} (known: {', '.join(dense_backends())})")
    backend = _DENSE[name]
    why = backend.unusable(device, dtype)
    if why is not None:
        usable = [n for n, b in sorted(_DENSE.items()) if b.unusable(device, dtype) is None]
        raise AttentionBackendError(f"attention backend {name!r} is unavailable: {why} (usable here: {', '.join(usable)})")
    return backend


# --------------------------------------------------------------------------- block-sparse masks


@dataclass
class BlockSparseMask:
    """Which key blocks every query block attends to, the same count in every row.

    Attributes:
        indices: ``(B or 1, H or 1, query_blocks, kept)`` long tensor of key-block indices.
            Rows list distinct blocks; order does not matter.
        block_size: tokens per block, the same for queries and keys.
        kv_len: the true number of key tokens (the last block may be partial).
        group: consecutive query blocks ``[j * group, (j + 1) * group)`` have the same row
            (a promise of the mask's builder); the gather kernel then gathers once per group.
    """

    indices: torch.Tensor
    block_size: int
    kv_len: int
    group: int = 1

    @property
    def kv_blocks(self) -> int:
        return -(-self.kv_len // self.block_size)

    @property
    def kept(self) -> int:
        return self.indices.shape[-1]

    @property
    def density(self) -> float:
        """Fraction of (query block, key block) pairs computed."""
        return self.kept / self.kv_blocks

    def to_bool(self) -> torch.Tensor:
        """``(B|1, H|1, query_blocks, kv_blocks)`` bool, True where a block pair is computed."""
        out = torch.zeros(*self.indices.shape[:-1], self.kv_blocks, dtype=torch.bool, device=self.indices.device)
        return out.scatter_(-1, self.indices, True)

    def token_mask(self, q_len: int) -> torch.Tensor:
        """``(B|1, H|1, q_len, kv_len)`` bool token mask (for the reference kernel and tests)."""
        bs = self.block_size
        m = self.to_bool().repeat_interleave(bs, dim=-2).repeat_interleave(bs, dim=-1)
        return m[..., :q_len, : self.kv_len]


# --------------------------------------------------------------------------- the entry point


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    block_mask: BlockSparseMask | None = None,
    dense_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    backend: str = "sdpa",
    sparse_kernel: str = "auto",
    scale: float | None = None,
) -> torch.Tensor:
    """Attention of ``q`` over ``k, v`` (all ``(B, H, S, D)``), dense or block-sparse.

    With ``block_mask`` the query blocks attend only to their kept key blocks, and to every
    token of ``dense_kv`` (keys, values of shape ``(B, H, T, D)``) when given.
    """
    dense = resolve_backend(backend, q.device, q.dtype)
    if block_mask is None:
        if dense_kv is not None:
            k, v = torch.cat([dense_kv[0], k], dim=2), torch.cat([dense_kv[1], v], dim=2)
        return dense.run(q, k, v, scale)
    kernel = _SPARSE_KERNELS.get(sparse_kernel)
    if kernel is None:
        raise AttentionBackendError(
            f"unknown block-sparse kernel {sparse_kernel!r} (known: {', '.join(sorted(_SPARSE_KERNELS))})"
        )
    return kernel(q, k, v, block_mask, dense_kv, dense, scale)


def sparse_kernels() -> list[str]:
    return sorted(_SPARSE_KERNELS)


# --------------------------------------------------------------------------- gather kernel

# Bytes of gathered keys+values per chunk of query blocks, per thread. Small chunks keep each
# row's keys and values in cache while the attention call streams them once per query tile:
# 1 thread, 16k tokens, ratio 0.75, 2 MB chunks ran the gather kernel at 69-85% of the ideal
# speed-up over two runs where 16-64 MB chunks ran it at 67-69% (docs/sparse-attention.md);
# with 2 threads the chunk size made no difference. Each chunk costs
# two parallel regions, so on an oversubscribed CPU (every region waits for a descheduled
# thread) larger chunks win instead: raise this there.
GATHER_CHUNK_BYTES = 2 << 20

# Gather buffers reused from call to call: fresh large allocations cost page faults on every
# call (measured: an allocating index_select took 7x as long as one into a reused buffer).
_WORKSPACE: dict[tuple, torch.Tensor] = {}


def _workspace(like: torch.Tensor, slot: int, numel: int) -> torch.Tensor:
    # a buffer made under inference_mode is an inference tensor, which cannot be written outside it
    key = (like.device, like.dtype, slot, torch.is_inference_mode_enabled())
    buf = _WORKSPACE.get(key)
    if buf is None or buf.numel() < numel:
        buf = _WORKSPACE[key] = like.new_empty(numel)
    return buf[:numel]


def _pad_to(x: torch.Tensor, length: int) -> torch.Tensor:
    if x.shape[2] == length:
        return x
    return F.pad(x, (0, 0, 0, length - x.shape[2]))


def _gather_kernel(q, k, v, mask: BlockSparseMask, dense_kv, dense: DenseBackend, scale):
    B, H, S, D = q.shape
    bs, kept = mask.block_size, mask.kept
    qb_n, kb_n = -(-S // bs), mask.kv_blocks
    if mask.indices.shape[-2] != qb_n:
        raise ValueError(f"block mask has {mask.indices.shape[-2]} query blocks, the queries make {qb_n}")
    BH = B * H
    # query blocks that share their row run as one longer query: one gather, one bigger call
    g = mask.group if qb_n % mask.group == 0 else 1
    rows_n, qbs = qb_n // g, g * bs
    q = _pad_to(q, qb_n * bs).reshape(BH * rows_n, qbs, D)
    kf = _pad_to(k, kb_n * bs).reshape(BH * kb_n, bs * D)
    vf = _pad_to(v, kb_n * bs).reshape(BH * kb_n, bs * D)
    idx = mask.indices.expand(B, H, qb_n, kept).reshape(BH, qb_n, kept)[:, ::g]
    rows_idx = (idx + torch.arange(BH, device=idx.device).view(BH, 1, 1) * kb_n).reshape(BH * rows_n, kept)
    T = 0 if dense_kv is None else dense_kv[0].shape[2]
    partial = mask.kv_len % bs  # valid tokens in a partial last key block, 0 if none
    per_row = (T + kept * bs) * D * q.element_size() * 2
    chunk = max(1, min(BH * rows_n, GATHER_CHUNK_BYTES * max(1, torch.get_num_threads()) // per_row))
    wk = _workspace(q, 0, chunk * (T + kept * bs) * D).view(chunk, T + kept * bs, D)
    wv = _workspace(q, 1, chunk * (T + kept * bs) * D).view(chunk, T + kept * bs, D)
    out = q.new_empty(BH * rows_n, qbs, D)
    if dense_kv is not None:
        tk = dense_kv[0].expand(B, H, T, D).reshape(BH, T, D)
        tv = dense_kv[1].expand(B, H, T, D).reshape(BH, T, D)
    for start in range(0, BH * rows_n, chunk):
        n = min(chunk, BH * rows_n - start)
        rows = rows_idx[start : start + n]
        ck, cv = wk[:n], wv[:n]
        if T:
            heads = torch.arange(start, start + n, device=q.device) // rows_n
            ck[:, :T] = tk[heads]
            cv[:, :T] = tv[heads]
        flat = rows.reshape(-1)
        if T:
            ck[:, T:] = kf.index_select(0, flat).view(n, kept * bs, D)
            cv[:, T:] = vf.index_select(0, flat).view(n, kept * bs, D)
        else:  # straight into the reused buffers: a fresh allocation per call costs page faults
            torch.index_select(kf, 0, flat, out=wk.view(-1, bs * D)[: n * kept])
            torch.index_select(vf, 0, flat, out=wv.view(-1, bs * D)[: n * kept])
        bias = None
        if partial:
            is_last = (rows % kb_n) == kb_n - 1  # (n, kept)
            if bool(is_last.any()):
                pad = torch.zeros(bs, dtype=torch.bool, device=q.device)
                pad[partial:] = True
                masked = (is_last.unsqueeze(-1) & pad).reshape(n, kept * bs)
                bias = torch.zeros(n, 1, T + kept * bs, dtype=q.dtype, device=q.device)
                bias[:, 0, T:].masked_fill_(masked, float("-inf"))
        qc = q[start : start + n].unsqueeze(0)
        if bias is None:
            res = dense.run(qc, ck.unsqueeze(0), cv.unsqueeze(0), scale)
        else:  # only SDPA takes an additive mask; the partial last block is rare (odd sizes)
            res = _sdpa(qc, ck.unsqueeze(0), cv.unsqueeze(0), scale, attn_mask=bias.unsqueeze(0))
        out[start : start + n] = res[0]
    return out.view(B, H, qb_n * bs, D)[:, :, :S]


# --------------------------------------------------------------------------- flex kernel

_FLEX = {}


def _compiled_flex():
    if "fn" not in _FLEX:
        from torch.nn.attention.flex_attention import flex_attention

        _FLEX["fn"] = torch.compile(flex_attention, dynamic=False)
    return _FLEX["fn"]


def flex_block_mask(mask: BlockSparseMask, q_len: int, prefix: int = 0, kv_total: int | None = None):
    """The FlexAttention ``BlockMask`` equal to ``mask``, after ``prefix`` dense key tokens.

    The prefix is padded to whole blocks that every query block keeps; padding tokens and
    the tail of a partial last block are masked per token.
    """
    from torch.nn.attention.flex_attention import BlockMask

    bs, kv_len = mask.block_size, mask.kv_len
    pb = -(-prefix // bs)
    kb_n = pb + mask.kv_blocks
    idx = mask.indices.to(torch.int32) + pb
    if pb:
        head = torch.arange(pb, dtype=torch.int32, device=idx.device).expand(*idx.shape[:-1], pb)
        idx = torch.cat([head, idx], dim=-1)
    kept = idx.shape[-1]
    # rows padded to kv_blocks columns; only the first `kept` are read
    full_idx = torch.zeros(*idx.shape[:-1], kb_n, dtype=torch.int32, device=idx.device)
    full_idx[..., :kept] = idx.sort(-1).values
    counts = torch.full(idx.shape[:-1], kept, dtype=torch.int32, device=idx.device)
    start, end = pb * bs, pb * bs + kv_len

    def mask_mod(b, h, q_idx, kv_idx):
        return (kv_idx < prefix) | ((kv_idx >= start) & (kv_idx < end))

    return BlockMask.from_kv_blocks(counts, full_idx, BLOCK_SIZE=bs, mask_mod=mask_mod, seq_lengths=(q_len, kv_total or end))


def _flex_kernel(q, k, v, mask: BlockSparseMask, dense_kv, dense: DenseBackend, scale):
    fn = _compiled_flex()
    T = 0 if dense_kv is None else dense_kv[0].shape[2]
    if T:  # CPU flex has no return_lse to merge a separate softmax: put the dense tokens in front
        Tp = -(-T // mask.block_size) * mask.block_size
        k = torch.cat([_pad_to(dense_kv[0].expand(*k.shape[:2], -1, -1), Tp), _pad_to(k, mask.kv_blocks * mask.block_size)], dim=2)
        v = torch.cat([_pad_to(dense_kv[1].expand(*v.shape[:2], -1, -1), Tp), _pad_to(v, mask.kv_blocks * mask.block_size)], dim=2)
    return fn(q, k, v, block_mask=flex_block_mask(mask, q.shape[2], T, k.shape[2]), scale=scale)


# --------------------------------------------------------------------------- reference kernel


def _masked_kernel(q, k, v, mask: BlockSparseMask, dense_kv, dense: DenseBackend, scale):
    tm = mask.token_mask(q.shape[2])
    if dense_kv is not None:
        T = dense_kv[0].shape[2]
        k, v = torch.cat([dense_kv[0], k], dim=2), torch.cat([dense_kv[1], v], dim=2)
        tm = torch.cat([tm.new_ones(*tm.shape[:-1], T), tm], dim=-1)
    return _sdpa(q, k, v, scale, attn_mask=tm)


_SPARSE_KERNELS = {"gather": _gather_kernel, "flex": _flex_kernel, "masked": _masked_kernel, "auto": _gather_kernel}


__all__ = [
    "AttentionBackendError",
    "BlockSparseMask",
    "DenseBackend",
    "attention",
    "dense_backends",
    "flex_block_mask",
    "register_dense_backend",
    "resolve_backend",
    "sparse_kernels",
]
