"""Multi-device meshes on the CPU: N gloo ranks against one process, demo-flux (true CFG) and demo-wan.

    python benchmarks/parallel.py            # human table
    python benchmarks/parallel.py --json     # one JSON object per row

Processes stay up for the whole run: the rank group (``--world`` ranks, one thread each),
one process with one thread, and one process with all the threads the group uses (the
same-hardware baseline). Rounds are interleaved (base, same-hardware base, each mesh; the
order reversed every other round) and every time is the median over rounds of rank 0's
wall time for the whole pipeline call, so load from other work touches every side alike.

Columns: ``speedup`` over the same-hardware baseline (the tuner's speed-up of the per-round
ratios, ``metrics.speed_interval``, with ``speedup_low``/``speedup_high`` its 95% interval),
``speedup_1t`` over one thread (likewise),
``ideal_speedup`` over one thread from the stage shares of the one-thread call
(``measure_stages``: the denoiser's share split by ``cfg x ulysses x ring``, the decode's by
``vae``, the rest serial), ``of_ideal`` = speedup_1t / ideal_speedup, ``psnr`` of rank 0's
image against the one-process image, ``comm_bytes_per_step``: bytes rank 0 received per
denoising step (the hooks' gathers and diffusers' context-parallel all-to-alls / gathers).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

MESHES = ({"cfg": 2}, {"ulysses": 2}, {"cfg": 2, "vae": 2})
PROMPT = "a red circle on a blue background"


class _Bytes:
    bytes = 0


def _count_diffusers_collectives(counter: _Bytes) -> None:
    """Count the bytes diffusers' context-parallel collectives bring to this rank (instrumentation only)."""
    import torch.distributed as dist
    import torch.distributed._functional_collectives as funcol

    a2a, gather = funcol.all_to_all_single, funcol.all_gather_tensor

    def size(group) -> int:
        return dist.get_world_size(group if isinstance(group, dist.ProcessGroup) else getattr(group, "get_group", lambda: None)())

    def all_to_all_single(t, output_split_sizes, input_split_sizes, group, *args, **kwargs):
        n = size(group)
        counter.bytes += t.numel() * t.element_size() * (n - 1) // n
        return a2a(t, output_split_sizes, input_split_sizes, group, *args, **kwargs)

    def all_gather_tensor(t, gather_dim, group, *args, **kwargs):
        counter.bytes += t.numel() * t.element_size() * (size(group) - 1)
        return gather(t, gather_dim, group, *args, **kwargs)

    funcol.all_to_all_single, funcol.all_gather_tensor = all_to_all_single, all_gather_tensor


def _worker(*args) -> None:
    from mindiesd_tune.accel.parallel.launch import broken_group

    try:
        _serve(*args)
    except Exception as e:
        if broken_group(e):  # a peer died mid-collective: the parent names it; a traceback would bury that
            os._exit(1)
        raise


def _serve(index, role, world, port, threads, models, steps, inbox, outbox, phase_dir):
    """role "rank": rank ``index`` of the group; "base": one process with ``threads`` threads."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(threads)
    from mindiesd_tune.accel.parallel import ParallelConfig, install_parallel
    from mindiesd_tune.accel.parallel.watch import PhaseLog
    from mindiesd_tune.metrics.latency import measure_stages
    from mindiesd_tune.models import load

    phase = PhaseLog(phase_dir, _name(role, index, threads))
    diffusers_bytes = _Bytes()
    if role == "rank":
        import torch.distributed as dist

        phase.set("joining the group")
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(index), WORLD_SIZE=str(world))
        dist.init_process_group("gloo", rank=index, world_size=world)
        _count_diffusers_collectives(diffusers_bytes)
    phase.set("loading the models")
    loaded = {m: load(m, device="cpu") for m in models}
    outbox.put(("ready", None))
    while (msg := inbox.get()) is not None:
        kind, model, degrees = msg
        phase.set(f"{kind} {model} {ParallelConfig(**(degrees or {})).describe()}")
        lm = loaded[model]
        gen = {**lm.generation, "num_inference_steps": steps}

        def call(lm=lm, gen=gen):
            out = lm.pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(0), output_type="np", **gen)
            return (out.frames if lm.is_video else out.images)[0]

        if kind == "stages":
            stats, image = measure_stages(lm.pipe, call, repeats=3)
            outbox.put(("stages", ({k: v.median_s for k, v in stats.items()}, image)))
            phase.set("waiting for the next call")
            continue
        undo = install_parallel(lm.pipe, ParallelConfig(**degrees)) if degrees else None
        diffusers_bytes.bytes = 0
        t0 = time.perf_counter()
        image = call()
        seconds = time.perf_counter() - t0
        comm = diffusers_bytes.bytes + (undo.comm.bytes if undo is not None else 0)
        if undo is not None:
            undo()
        outbox.put(("time", (seconds, comm, image if index == 0 else None)))
        phase.set("waiting for the next call")


def _psnr(a, b) -> float:
    from mindiesd_tune.metrics.fidelity import psnr

    return float(psnr(a, b))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ideal(stages: dict, degrees: dict) -> float:
    """Amdahl over the one-thread call: the denoiser split by cfg x sequence, the decode by vae."""
    total = stages["total_s"]
    split = degrees.get("cfg", 1) * degrees.get("ulysses", 1) * degrees.get("ring", 1) * degrees.get("tensor", 1)
    parallel = stages["denoise_s"] / split + stages["decode_s"] / degrees.get("vae", 1)
    return total / (total - stages["denoise_s"] - stages["decode_s"] + parallel)


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "unknown")


def _name(role: str, index: int, threads: int) -> str:
    return f"rank{index}" if role == "rank" else f"base{threads}t"


def _label(name: str) -> str:
    return f"rank {name[4:]}" if name.startswith("rank") else f"the {name[4:-1]}-thread baseline process"


class _Fleet:
    """The benchmark's processes, each answering on its own queue.

    Every wait for an answer is bounded and checks that all the processes are alive: a rank that
    dies leaves the other blocked in a collective, so waiting on the survivor alone would never
    end. ``close`` leaves no process behind (nor a zombie).
    """

    def __init__(self, args, phase_dir: str):
        ctx = mp.get_context("spawn")
        port, self.phase_dir = _free_port(), phase_dir
        self.procs, self.queues = {}, {}
        roles = [("rank", r, 1) for r in range(args.world)] + [("base", 0, 1), ("base", 1, args.world)]
        for role, index, threads in roles:
            name = _name(role, index, threads)
            inbox, outbox = ctx.Queue(), ctx.Queue()
            p = ctx.Process(target=_worker, name=name, args=(index, role, args.world, port, threads, args.models,
                                                             args.steps, inbox, outbox, phase_dir))
            p.start()
            self.procs[name], self.queues[name] = p, (inbox, outbox)

    def ask(self, names: list[str], msg, timeout: float) -> list:
        for n in names:
            self.queues[n][0].put(msg)
        return [self.answer(n, timeout)[1] for n in names]

    def answer(self, name: str, timeout: float):
        from mindiesd_tune.accel.parallel.watch import RankDied, read_phase

        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.queues[name][1].get(timeout=0.5)
            except queue.Empty:
                pass
            # a rank killed by a signal is the cause; one that then exited (its collective broken) the effect
            dead = sorted((p.exitcode, n) for n, p in self.procs.items() if p.exitcode is not None)
            if dead:
                code, who = min(dead, key=lambda d: (d[0] >= 0, d[1]))
                raise RankDied.of(who, code, read_phase(self.phase_dir, who), label=_label(who))
            if time.monotonic() > deadline:
                raise RankDied(f"{_label(name)} did not answer within {timeout:.0f} s "
                               f"(last phase: {read_phase(self.phase_dir, name)})")

    def close(self, failed: bool) -> None:
        from mindiesd_tune.accel.parallel.watch import kill_all

        if not failed:
            for inbox, _ in self.queues.values():
                inbox.put(None)
            for p in self.procs.values():
                p.join(timeout=30)
        kill_all(self.procs.values())
        for inbox, outbox in self.queues.values():
            inbox.cancel_join_thread()  # a dead reader must not hold this process at exit
            inbox.close()
            outbox.close()


def _measure(args, fleet: _Fleet) -> list[dict]:
    """Every model's rounds: the baselines and each mesh interleaved -> one row per mesh."""
    from mindiesd_tune.accel.parallel import ParallelConfig

    for name in fleet.procs:
        assert fleet.answer(name, 600)[0] == "ready"
    ranks = [f"rank{r}" for r in range(args.world)]
    rows = []
    for model in args.models:
        stages, single_image = fleet.ask(["base1t"], ("stages", model, None), 1200)[0]
        meshes = [ParallelConfig(**d) for d in MESHES]
        sides = {"base1t": [], f"base{args.world}t": [], **{m.describe(): [] for m in meshes}}
        comm, images = {}, {}
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for side in order:
                if side.startswith("base"):
                    sides[side].append(fleet.ask([side], ("time", model, None), 1200)[0][0])
                    continue
                mesh = next(m for m in meshes if m.describe() == side)
                if mesh.world_size != args.world:
                    continue
                got = fleet.ask(ranks, ("time", model, {k: v for k, v in mesh.degrees().items() if v > 1}), 1200)
                sides[side].append(got[0][0])
                comm[side], images[side] = got[0][1], got[0][2]
        rows += _rows(args, model, stages, single_image, meshes, sides, comm, images)
    return rows


def _rows(args, model, stages, single_image, meshes, sides, comm, images) -> list[dict]:
    from mindiesd_tune.metrics import speed_interval

    base1, base_n = statistics.median(sides["base1t"]), statistics.median(sides[f"base{args.world}t"])
    rows = []
    for mesh in meshes:
        times = sides[mesh.describe()]
        if not times:
            continue
        degrees = {k: v for k, v in mesh.degrees().items() if v > 1}
        ideal = _ideal(stages, degrees)
        # per round: the baselines and the mesh ran back to back, so their ratio is paired
        speed = speed_interval([b / m for b, m in zip(sides[f"base{args.world}t"], times)])
        speed_1t = speed_interval([b / m for b, m in zip(sides["base1t"], times)])
        rows.append({
            "model": model, "mesh": mesh.describe(), "world_size": args.world, "seconds": statistics.median(times),
            "speedup": speed[0], "speedup_low": speed[1], "speedup_high": speed[2],
            "speedup_1t": speed_1t[0], "speedup_1t_low": speed_1t[1], "speedup_1t_high": speed_1t[2],
            "ideal_speedup": ideal,
            "of_ideal": speed_1t[0] / ideal, "psnr": _psnr(images[mesh.describe()], single_image),
            "comm_bytes_per_step": comm[mesh.describe()] / args.steps,
            "base_1t_s": base1, f"base_{args.world}t_s": base_n,
            "denoise_share": stages["denoise_s"] / stages["total_s"], "rounds": args.rounds,
        })
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="one JSON object per row")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the JSON rows to this file")
    ap.add_argument("--world", type=int, default=2, help="ranks in the group, one thread each")
    ap.add_argument("--models", nargs="+", default=["demo-flux", "demo-wan"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--phase-dir", type=Path, default=None,
                    help="where each process notes its pid and phase (default: a temporary folder)")
    args = ap.parse_args()
    from mindiesd_tune.accel.parallel.watch import RankDied

    with tempfile.TemporaryDirectory(prefix="parallel-bench-") as tmp:
        fleet, failed = _Fleet(args, str(args.phase_dir or tmp)), True
        try:
            load_before = os.getloadavg()
            rows = _measure(args, fleet)
            failed = False
        except RankDied as e:
            print(f"benchmarks/parallel.py: {e}", file=sys.stderr)
            return 1
        finally:
            fleet.close(failed)
    meta = {"cpu": _cpu_name(), "load_avg_before": load_before, "load_avg_after": os.getloadavg(), "steps": args.steps}
    for row in rows:
        row.update(meta)
    _report(args, rows)
    return 0


def _report(args, rows: list[dict]) -> None:
    if args.json_out:
        args.json_out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return
    print(f"{'model':10} {'mesh':12} {'speedup':>8} {'95% interval':>13} {'1-thread':>8} {'ideal':>6} {'of_ideal':>8} "
          f"{'psnr':>7} {'comm/step':>10}")
    for r in rows:
        span = f"{r['speedup_low']:.2f}-{r['speedup_high']:.2f}"
        print(f"{r['model']:10} {r['mesh']:12} {r['speedup']:8.2f} {span:>13} {r['speedup_1t']:8.2f} {r['ideal_speedup']:6.2f} "
              f"{r['of_ideal']:8.2f} {r['psnr']:7.1f} {r['comm_bytes_per_step']:10.0f}")
    if rows:
        print(f"cpu: {rows[0]['cpu']}; load average before {rows[0]['load_avg_before']}, after {rows[0]['load_avg_after']}")


if __name__ == "__main__":
    sys.exit(main())
