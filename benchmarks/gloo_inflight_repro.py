"""Minimal reproduction (torch alone): a gloo collective left in flight while others run corrupts the heap.

    python benchmarks/gloo_inflight_repro.py --overlap     # the gather left in flight, as it was
    python benchmarks/gloo_inflight_repro.py               # the same collectives, each waited

Two CPU ranks on gloo repeat what a Flux step under Ulysses did before the mesh waited for
its output (``accel.parallel.comm.settled``): diffusers' context-parallel plan all-gathers the
denoiser's output with ``funcol.all_gather_tensor`` and returns it unwaited (an
``AsyncCollectiveTensor``), and the pipeline's next denoiser call (true CFG's ``uncond`` pass)
runs its all-to-alls, each waited (``_all_to_all_single`` / ``_wait_tensor``), on the same
process group before the first output is used. With ``--overlap`` the gather stays in flight
across the all-to-alls, as it did; without it, it is waited first.

The fault is rare and timing-dependent. Measured on torch 2.14.1 (AMD EPYC, 2 cores shared
with other work, glibc's heap checks on), three runs with the gather in flight (two of them of
a first form of this script, holding the gather's input in a variable to the round's end): one killed
rank 0 with SIGABRT, ``malloc(): unaligned fastbin chunk detected``, after about 6,000 rounds
(the other rank: "there are still 1 unwaited collective calls", as in the benchmark's crash);
the other two ran 20,000 rounds each without a fault. Waited (first form), one run of 20,000 rounds was
clean. So the crash is reproduced with torch alone, once in about 46,000 overlapped rounds,
but too rarely to show by counting that waiting removes it: the mesh waits because then no two
collectives are ever in flight together, which is the only state in which the crash was seen.
A crash exits 1 with one line naming the rank and its signal.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

MALLOC_DEBUG = "/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"


def _rank(rank: int, port: int, rounds: int, overlap: bool) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed._functional_collectives as funcol

    warnings.simplefilter("ignore", FutureWarning)  # all_gather_tensor's deprecation, as diffusers calls it
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    group = dist.group.WORLD
    for i in range(rounds):
        # the denoiser's output gather along the sequence: a view of the buffer, not waited
        output = funcol.all_gather_tensor(torch.full((1, 128, 64), float(rank)), 1, group)
        if not overlap:
            output = output.wait()
        for _ in range(6):  # the next call's Ulysses all-to-alls, each waited
            qkv = torch.randn(2, 64, 1, 2, 16)
            moved = funcol.all_to_all_single(qkv.flatten(), None, None, group).reshape(qkv.shape)
            if isinstance(moved, funcol.AsyncCollectiveTensor):
                moved.wait()
        got = output * 1.0  # first use: waits for the gather if it is still in flight
        assert got[0, :128].eq(0).all() and got[0, 128:].eq(1).all(), f"round {i}: the gather's buffer was overwritten"
    dist.destroy_process_group()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--overlap", action="store_true", help="leave the gather in flight across the all-to-alls")
    ap.add_argument("--rounds", type=int, default=20000)
    ap.add_argument("--no-malloc-check", action="store_true")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    import torch.multiprocessing as mp

    from mindiesd_tune.accel.parallel.watch import RankDied, free_port, join_ranks

    if not args.no_malloc_check and os.path.exists(MALLOC_DEBUG):  # the spawned ranks inherit it
        os.environ.update(LD_PRELOAD=MALLOC_DEBUG, GLIBC_TUNABLES="glibc.malloc.check=3", MALLOC_CHECK_="3")
    started = time.perf_counter()
    ctx = mp.start_processes(_rank, args=(free_port(), args.rounds, args.overlap), nprocs=2, join=False,
                             start_method="spawn")
    try:
        join_ranks(ctx, args.timeout)
    except RankDied as e:
        print(f"gloo_inflight_repro: {e} after {time.perf_counter() - started:.0f} s", file=sys.stderr)
        return 1
    print(f"{args.rounds} rounds {'with the gather in flight' if args.overlap else 'waited'}: "
          f"no fault in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
