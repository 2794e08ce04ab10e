"""Run a function in N CPU ranks (gloo, one thread each) and collect what each returns.

``run_ranks(fn, world, *args)`` spawns ``world`` processes with ``torch.multiprocessing``;
rank r calls ``fn(rank, world, *args)`` inside an initialised process group and its return
value (tensors, numbers) comes back in a list indexed by rank. A rank that raises fails the
call with its traceback.
"""

from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mindiesd_tune.accel.parallel.watch import RankDied, free_port, join_ranks


def _entry(rank, world, port, folder, fn, args):
    os.environ.update(HF_HUB_OFFLINE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = fn(rank, world, *args)
        torch.save(result, os.path.join(folder, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_ranks(fn, world: int, *args, timeout: float = 600) -> list:
    """``[fn(0, world, *args), ..., fn(world - 1, world, *args)]``, each in its own process; a rank
    that dies or raises fails the call at once (its traceback, or its exit signal, in the error),
    and ranks still running after ``timeout`` seconds are killed and the call fails."""
    with tempfile.TemporaryDirectory() as folder:
        ctx = mp.start_processes(_entry, args=(world, free_port(), folder, fn, args), nprocs=world,
                                 join=False, start_method="spawn")
        try:
            join_ranks(ctx, timeout)
        except RankDied as e:
            raise RuntimeError(f"{e}\n{e.details}" if e.details else str(e)) from None
        return [torch.load(os.path.join(folder, f"{r}.pt"), weights_only=False) for r in range(world)]
