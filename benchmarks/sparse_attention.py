"""Block-sparse attention against dense SDPA: the kernel at 4k and 16k tokens, and demo-wan end to end.

    python benchmarks/sparse_attention.py            # human table
    python benchmarks/sparse_attention.py --json     # one JSON object per row

Kernel rows: one attention call (batch 1, 4 heads, head dim 64, blocks of 128 tokens) over a
square image grid, with local-window masks (method ``local+KERNEL``) and top-k masks
(``topk+gather``, mask computation included); ``/g4`` marks masks where 4 consecutive query
blocks share their key blocks (``query_group=4``). Queries and keys vary smoothly over the grid,
as in a trained DiT, so ``rel_error`` (||sparse - dense|| / ||dense||) means something.
Dense and sparse calls alternate and each time is the median of the repeats, so a busy
machine slows both alike. ``ideal_speedup`` is 1 / (1 - ratio).

End-to-end rows (``e2e/METHOD``): demo-wan generating a larger video than its default (so
attention dominates), dense against sparse in the same process, same prompt and seed;
``rel_error`` compares the frames, ``psnr`` is given beside it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from mindiesd_tune.accel.sparse.masks import grid_blocks, kept_blocks, pattern_mask, query_group, topk_mask  # noqa: E402
from mindiesd_tune.kernels.attention import BlockSparseMask, attention  # noqa: E402

kattn = importlib.import_module("mindiesd_tune.kernels.attention")  # the module; the package exports a function of that name


def smooth_qkv(side: int, heads: int = 4, dim: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    coords = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(-1, 2).float()
    freqs = torch.randn(2, dim // 2, generator=g) * 0.15
    base = torch.cat([torch.sin(coords @ freqs), torch.cos(coords @ freqs)], -1) * 2.5
    noise = lambda: 0.5 * torch.randn(heads, base.shape[0], dim, generator=g)  # noqa: E731
    return (base + noise())[None], (base + noise())[None], torch.randn(1, heads, base.shape[0], dim, generator=g)


CLOCK = time.perf_counter


def alternate(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, calls interleaved round-robin after one warm-up each."""
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            t = CLOCK()
            fn()
            times[name].append(CLOCK() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def kernel_rows(tokens_list, ratios, kernels, repeats: int, block_size: int = 128):
    for tokens in tokens_list:
        side = int(round(tokens**0.5))
        assert side * side == tokens, "tokens must be a square number"
        grid = (side, side)
        q, k, v = smooth_qkv(side)
        blocks = grid_blocks(grid, block_size)
        if blocks.perm is not None:  # the engine works in block order; so does the benchmark
            q, k, v = (x[:, :, blocks.perm] for x in (q, k, v))
        dense = F.scaled_dot_product_attention(q, k, v)
        for ratio in ratios:
            for method in kernels:
                mask_kind, kernel = method.split("+")
                mask_kind, _, g = mask_kind.partition("/g")
                group = int(g or 1)

                def run(mask_kind=mask_kind, kernel=kernel, ratio=ratio, group=group):
                    if mask_kind == "topk":
                        idx = topk_mask(q, k, block_size, ratio, True, True, group)
                    else:
                        idx = pattern_mask(grid, block_size, ratio, "local", True, True, group)
                    # the group the mask really has (1 when it does not divide the blocks or exceeds the kept count)
                    eff = query_group(blocks.num_blocks, group, kept_blocks(ratio, blocks.num_blocks))
                    mask = BlockSparseMask(idx, block_size, tokens, eff)
                    return attention(q, k, v, block_mask=mask, sparse_kernel=kernel)

                out = run()
                t = alternate({"dense": lambda: F.scaled_dot_product_attention(q, k, v), "sparse": run}, repeats)
                yield _row(method, tokens, ratio, t, ((out - dense).norm() / dense.norm()).item())


def _row(method: str, tokens: int, ratio: float, t: dict, rel_error: float) -> dict:
    """One table row from the alternating medians ``t`` (seconds) of the dense and sparse calls."""
    return {
        "method": method,
        "tokens": tokens,
        "ratio": ratio,
        "dense_ms": round(t["dense"] * 1e3, 1),
        "sparse_ms": round(t["sparse"] * 1e3, 1),
        "speedup": round(t["dense"] / t["sparse"], 2),
        "ideal_speedup": round(1 / (1 - ratio), 2),
        "rel_error": round(rel_error, 4),
    }


def e2e_rows(methods, ratio: float, repeats: int, block_size: int, gen: dict, group: int = 1):
    import numpy as np

    from mindiesd_tune.accel import AccelConfig, apply
    from mindiesd_tune.accel.methods import get_method
    from mindiesd_tune.metrics import psnr
    from mindiesd_tune.models import load

    loaded = load("demo-wan", device="cpu")
    settings = {**loaded.generation, **gen}

    def generate():
        out = loaded.pipe(prompt="a red circle moving right", generator=torch.Generator().manual_seed(0), output_type="np", **settings)
        return out.frames[0]

    x = loaded.pipe.transformer.config.patch_size
    tokens = ((settings["num_frames"] - 1) // loaded.pipe.vae_scale_factor_temporal + 1) // x[0] * (
        settings["height"] // loaded.pipe.vae_scale_factor_spatial // x[1]
    ) * (settings["width"] // loaded.pipe.vae_scale_factor_spatial // x[2])
    base = generate()
    for method in methods:
        cfg = AccelConfig(sparse=get_method("sparse", method).config(ratio=ratio, block_size=block_size, query_group=group))

        def sparse_call(cfg=cfg):
            with apply(loaded.pipe, cfg):
                return generate()

        out = sparse_call()
        t = alternate({"dense": generate, "sparse": sparse_call}, repeats)
        rel = float(np.linalg.norm(out - base) / np.linalg.norm(base))
        yield {**_row(f"e2e/{method}", tokens, ratio, t, rel), "psnr": round(psnr(out, base), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="one JSON object per row")
    p.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384])
    p.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.75, 0.9])
    p.add_argument(
        "--kernels",
        nargs="+",
        default=["local+gather", "local/g4+gather", "local+flex", "topk+gather", "topk/g4+gather"],
        help="MASK[/gGROUP]+KERNEL: mask local or topk, query_group GROUP, kernel gather, flex or masked",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk-mb", type=float, default=None,
                   help="gathered keys+values per chunk of the gather kernel, MB (default: kernels.attention.GATHER_CHUNK_BYTES)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time, steadier on a shared machine (use with --threads 1)",
    )
    p.add_argument("--e2e", nargs="*", default=["local", "topk", "adaptive"], help="sparse methods run on demo-wan ('' to skip)")
    p.add_argument("--e2e-ratio", type=float, default=0.75)
    p.add_argument("--e2e-size", type=int, nargs=3, default=[17, 128, 128], metavar=("FRAMES", "HEIGHT", "WIDTH"))
    p.add_argument("--e2e-steps", type=int, default=4)
    p.add_argument("--e2e-block-size", type=int, default=128)
    p.add_argument("--e2e-query-group", type=int, default=1)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.chunk_mb:
        kattn.GATHER_CHUNK_BYTES = int(args.chunk_mb * (1 << 20))
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    header = ("method", "tokens", "ratio", "dense_ms", "sparse_ms", "speedup", "ideal_speedup", "rel_error")
    if not args.json:
        load = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"
        print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock, load average {load}, "
              f"gather chunk {kattn.GATHER_CHUNK_BYTES / (1 << 20):g} MB")
        print(" ".join(f"{h:>14}" for h in header) + "   % of ideal")

    def emit(row):
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            extra = f"   {100 * row['speedup'] / row['ideal_speedup']:5.1f}%" + (f"   psnr {row['psnr']}" if "psnr" in row else "")
            print(" ".join(f"{row[h]!s:>14}" for h in header) + extra, flush=True)

    for row in kernel_rows(args.tokens, args.ratios, args.kernels, args.repeats):
        emit(row)
    methods = [m for m in args.e2e if m]
    if methods:
        frames, height, width = args.e2e_size
        gen = {"num_frames": frames, "height": height, "width": width, "num_inference_steps": args.e2e_steps}
        for row in e2e_rows(methods, args.e2e_ratio, max(1, args.repeats - 1), args.e2e_block_size, gen, args.e2e_query_group):
            emit(row)


if __name__ == "__main__":
    main()
