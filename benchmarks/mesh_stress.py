"""Stress the meshes over gloo: hundreds of meshed pipeline calls in 2 CPU ranks, under the allocator's checks.

    python benchmarks/mesh_stress.py --calls 500            # both demo models, every mesh
    python benchmarks/mesh_stress.py --calls 50 --json      # one JSON object at the end

Each rank loads demo-flux and demo-wan and runs the same plan: the meshes the library offers
on 2 CPU ranks (``cfg2``, ``ulysses2``, ``cfg2xvae2``), each with and without a first-block
cache whose change metric is reduced across the ranks sharing a call, round robin over the
models and meshes. Every call installs its mesh (and cache) and takes it off again, as a
study's timed rounds and ``benchmarks/parallel.py`` do, so the install, the hooks and the
removal are exercised as often as the collectives. Each output is compared bit for bit with
the first output of the same model and mesh: a buffer written by a collective after it was
freed or reused shows up as a crash or as an output that differs.

The ranks run under glibc's heap checks (``libc_malloc_debug`` with ``glibc.malloc.check=3``)
and Python's debug allocator unless ``--no-malloc-check``; ``--distributed-debug`` adds
``TORCH_DISTRIBUTED_DEBUG=DETAIL`` (every collective checked for agreement across the ranks).
``--count-bytes`` wraps torch's functional collectives with ``benchmarks/parallel.py``'s byte
counter, so that it is stressed too. ``--in-flight`` takes off the hook that waits for
diffusers' output gather (``accel.parallel.context.wait_for_output``), as the mesh was before
issue 31's fix, to see whether the crash comes back.

A rank that dies ends the run at once with one line naming it, its exit signal or code and the
call it was in; the other rank is stopped and nothing is left behind (exit status 1).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

MODELS = ("demo-flux", "demo-wan")
MESHES = ("cfg2", "ulysses2", "cfg2xvae2")
PROMPT = "a red circle on a blue background"
MALLOC_DEBUG = "/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"


def plan(models, meshes, calls: int, cached: bool = True) -> list[tuple[str, str, bool]]:
    """``calls`` (model, mesh, cached) triples, round robin so every pairing recurs throughout the run."""
    pairs = [(m, mesh, c) for mesh in meshes for c in ((False, True) if cached else (False,)) for m in models]
    return list(itertools.islice(itertools.cycle(pairs), calls))


def _rank(rank: int, world: int, port: int, folder: str, opts: dict) -> None:
    import torch
    import torch.distributed as dist

    from mindiesd_tune.accel.parallel.watch import PhaseLog

    os.environ.update(HF_HUB_OFFLINE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    phase = PhaseLog(folder, rank)
    phase.set("joining the group")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = _calls(rank, opts, phase)
        phase.set("done")
        Path(folder, f"result-{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def _calls(rank: int, opts: dict, phase) -> dict:
    import torch

    from mindiesd_tune.accel import AccelConfig, FirstBlockCacheConfig, apply
    from mindiesd_tune.accel.parallel import ParallelConfig, install_parallel
    from mindiesd_tune.models import load

    if opts["count_bytes"]:
        from benchmarks.parallel import _Bytes, _count_diffusers_collectives

        _count_diffusers_collectives(_Bytes())
    phase.set("loading the models")
    loaded = {m: load(m, device="cpu") for m in opts["models"]}
    refs, differing, done = {}, [], 0
    started = time.perf_counter()
    for i, (model, mesh, cached) in enumerate(plan(opts["models"], opts["meshes"], opts["calls"], opts["cached"])):
        lm = loaded[model]
        name = f"{mesh}+cache" if cached else mesh
        phase.set(f"call {i + 1}/{opts['calls']}: {model} {name}")
        cache = apply(lm.pipe, AccelConfig(cache=FirstBlockCacheConfig(threshold=0.3))) if cached else None
        undo = install_parallel(lm.pipe, ParallelConfig.parse(mesh))
        if opts.get("in_flight"):
            _leave_output_in_flight(lm.pipe.transformer)
        try:
            gen = {**lm.generation, "num_inference_steps": opts["steps"]}
            out = lm.pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(0), output_type="pt", **gen)
            image = (out.frames if lm.is_video else out.images)[0].clone()
        finally:
            undo()
            if cache is not None:
                cache.remove()
        key = (model, name)
        if key not in refs:
            refs[key] = image
        elif not torch.equal(image, refs[key]):
            differing.append(f"{i + 1}: {model} {name}")
        done += 1
    return {"rank": rank, "calls": done, "differing": differing, "seconds": time.perf_counter() - started}


def _leave_output_in_flight(model) -> None:
    """Take off the hook that waits for diffusers' output gather: the mesh as it was before the
    fix, to measure how often the crash comes back."""
    from mindiesd_tune.accel.parallel.context import wait_for_output

    for key, hook in list(model._forward_hooks.items()):
        if hook is wait_for_output:
            del model._forward_hooks[key]


def _debug_env(opts: dict) -> dict[str, str]:
    env = {}
    if opts["malloc_check"]:
        env["PYTHONMALLOC"] = "debug"
        if os.path.exists(MALLOC_DEBUG):  # glibc >= 2.34 checks the heap only through this library
            env.update(LD_PRELOAD=MALLOC_DEBUG, GLIBC_TUNABLES="glibc.malloc.check=3")
        env["MALLOC_CHECK_"] = "3"
    if opts["distributed_debug"]:
        env["TORCH_DISTRIBUTED_DEBUG"] = "DETAIL"
    return env


def stress(opts: dict, timeout: float) -> dict:
    """Run the plan in 2 ranks -> rank 0's result, with both ranks' call counts; raises RankDied."""
    import torch.multiprocessing as mp

    from mindiesd_tune.accel.parallel.watch import free_port, join_ranks

    env = _debug_env(opts)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the spawned ranks start under the checks; this process does not
    try:
        with tempfile.TemporaryDirectory(prefix="mesh-stress-") as folder:
            ctx = mp.start_processes(_rank, args=(2, free_port(), folder, opts), nprocs=2, join=False,
                                     start_method="spawn")
            join_ranks(ctx, timeout, folder)
            results = [json.loads(Path(folder, f"result-{r}.json").read_text()) for r in range(2)]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {**results[0], "calls_per_rank": [r["calls"] for r in results],
            "differing": sorted({d for r in results for d in r["differing"]}), "env": env}


def main() -> int:
    from mindiesd_tune.accel.parallel.watch import RankDied

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=500, help="meshed pipeline calls in each rank")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--meshes", nargs="+", default=list(MESHES))
    ap.add_argument("--no-cache", action="store_true", help="leave out the cached calls")
    ap.add_argument("--no-malloc-check", action="store_true")
    ap.add_argument("--distributed-debug", action="store_true", help="TORCH_DISTRIBUTED_DEBUG=DETAIL in the ranks")
    ap.add_argument("--count-bytes", action="store_true", help="wrap funcol with benchmarks/parallel.py's byte counter")
    ap.add_argument("--in-flight", action="store_true",
                    help="leave diffusers' output gather in flight, as before the fix (to measure the crash)")
    ap.add_argument("--timeout", type=float, default=7200.0, help="seconds before the run is taken for hung")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    opts = {"models": args.models, "meshes": args.meshes, "calls": args.calls, "steps": args.steps,
            "cached": not args.no_cache, "malloc_check": not args.no_malloc_check,
            "distributed_debug": args.distributed_debug, "count_bytes": args.count_bytes, "in_flight": args.in_flight}
    try:
        result = stress(opts, args.timeout)
    except RankDied as e:
        print(f"mesh_stress: {e}", file=sys.stderr)
        return 1
    from benchmarks.parallel import _cpu_name

    row = {**{k: v for k, v in opts.items()}, **result, "faults": len(result["differing"]), "cpu": _cpu_name()}
    if args.json:
        print(json.dumps(row))
    else:
        print(f"{row['calls']} meshed calls in each of 2 ranks ({', '.join(args.models)}; {', '.join(args.meshes)}"
              f"{', each with and without a cache' if opts['cached'] else ''}) in {row['seconds']:.0f} s: "
              f"{row['faults']} differing outputs, no crash; checks: {' '.join(f'{k}={v}' for k, v in row['env'].items())}")
        for d in row["differing"]:
            print(f"  differs from the first call of its kind: call {d}")
    return 1 if row["differing"] else 0


if __name__ == "__main__":
    sys.exit(main())
