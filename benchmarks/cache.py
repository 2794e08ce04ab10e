"""Benchmark of the caching family on the demo models: speed-up against a baseline measured in the same run.

    python benchmarks/cache.py                       # human table, demo-flux and demo-wan
    python benchmarks/cache.py --json                # one JSON object per row
    python benchmarks/cache.py --models demo-flux --methods first_block block_cache --repeats 5

Every method runs at three settings. Latencies are medians of ``--repeats`` calls after
``--warmup`` calls; the baseline's samples are taken before and after the methods and their
median is the reference. Fidelity (PSNR, SSIM) is against the baseline output of the same
prompt and seed.

ideal_speedup is Amdahl's bound over the whole pipeline call: the skipped share of the
call's time is the skipped fraction of the cached units (blocks, attention modules, or
denoiser calls for step reduction) times those units' measured share of the baseline call
(``block_share``, ``attention_share``, ``denoiser_share``, timed with forward hooks in a
separate profiling call), times ``skip_weight`` for block methods: the skipped blocks' mean
time over all blocks' mean time (Flux's dual-stream blocks cost more than its single ones). ``efficiency`` = speedup / ideal_speedup; issue 4 asks >= 0.85
where >= 40% of the block evaluations are skipped (``check``).

The overhead rows run caching with nothing cached (threshold 0, and a threshold no step
meets, which also pays for the change measurement), interleaved call by call with the
baseline; issue 4 asks the latency to stay within 3% of the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from mindiesd_tune import accel  # noqa: E402
from mindiesd_tune.accel import methods as C  # noqa: E402
from mindiesd_tune.kernels import synchronize  # noqa: E402
from mindiesd_tune.metrics import fidelity  # noqa: E402
from mindiesd_tune.models import load  # noqa: E402

PROMPTS = {"demo-flux": "a red circle on a blue background", "demo-wan": "a red circle on a blue background moving left"}


def settings(stats, steps: int) -> dict[str, list]:
    """Three settings per method; thresholds from the model's own statistics."""
    p = stats.percentiles("first_block_residual_change")
    th = [p["p50"], p["p90"], 2 * p["p90"]]
    ratios = stats.mag_ratios
    return {
        "first_block": [C.FirstBlockCacheConfig(threshold=t, warmup_steps=2) for t in th],
        "block_cache": [C.BlockCacheConfig(block_start=1, step_start=2, step_interval=k) for k in (2, 3, 4)],
        "taylorseer": [C.TaylorSeerConfig(order=1, step_interval=3), C.TaylorSeerConfig(order=2, step_interval=3),
                       C.TaylorSeerConfig(order=2, step_interval=5)],
        "attention_cache": [C.AttentionCacheConfig(step_interval=k, step_start=2) for k in (2, 3, 4)],
        "step_reduction": [C.StepsConfig(num_inference_steps=steps // 2),
                           C.StepsConfig(num_inference_steps=steps // 2, scheduler="unipc"),
                           C.StepsConfig(num_inference_steps=max(2, steps // 4), scheduler="unipc")],
        "diffusers_first_block": [C.DiffusersFirstBlockCacheConfig(threshold=t) for t in th],
        "diffusers_taylorseer": [C.DiffusersTaylorSeerConfig(cache_interval=k, disable_cache_before_step=2) for k in (2, 3, 4)],
        "diffusers_mag": [C.DiffusersMagCacheConfig(threshold=t, max_skip_steps=3, mag_ratios=ratios) for t in (0.05, 0.15, 0.5)],
        "diffusers_pab": [C.DiffusersPyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=k, timestep_skip_start=0,
                                                                     timestep_skip_end=1000) for k in (2, 3, 4)],
        "diffusers_faster": [C.DiffusersFasterCacheConfig(spatial_attention_block_skip_range=k, timestep_skip_end=1000) for k in (2, 3, 4)],
    }


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


class Runner:
    def __init__(self, loaded, prompt: str, warmup: int, repeats: int, clock: str = "wall"):
        self.loaded, self.pipe, self.prompt = loaded, loaded.pipe, prompt
        self.warmup, self.repeats = warmup, repeats
        self.device = self.pipe.device
        self.clock = CLOCKS[clock]

    def call(self, overrides: dict | None = None):
        gen = {**self.loaded.generation, **(overrides or {})}
        out = self.pipe(prompt=self.prompt, generator=torch.Generator("cpu").manual_seed(0), output_type="np", **gen)
        return (out.frames if self.loaded.is_video else out.images)[0]

    def timed(self, overrides=None) -> tuple[float, object]:
        synchronize(self.device)
        t0 = self.clock()
        out = self.call(overrides)
        synchronize(self.device)
        return self.clock() - t0, out

    def samples(self, overrides=None, n=None) -> tuple[list[float], object]:
        for _ in range(self.warmup):
            self.call(overrides)
        times, out = [], None
        for _ in range(n or self.repeats):
            t, out = self.timed(overrides)
            times.append(t)
        return times, out


def shares(runner: Runner) -> dict[str, float]:
    """Share of one baseline call spent in the blocks, the attention modules and the denoiser."""
    model = accel.find_denoiser(runner.pipe)
    blocks = accel.transformer_blocks(model)
    acc = {"block": 0.0, "attention": 0.0, "denoiser": 0.0}
    per_block = [0.0] * len(blocks)
    handles = []

    def timer(kind, index=None):
        def pre(m, *a, **k):
            synchronize(runner.device)
            m._bench_t0 = runner.clock()

        def post(m, *a, **k):
            synchronize(runner.device)
            dt = runner.clock() - m._bench_t0
            acc[kind] += dt
            if index is not None:
                per_block[index] += dt

        return pre, post

    targets = [(b.module, "block", i) for i, b in enumerate(blocks)]
    targets += [(m, "attention", None) for b in blocks for _, m in b.attention_modules()] + [(model, "denoiser", None)]
    for m, kind, index in targets:
        pre, post = timer(kind, index)
        handles += [m.register_forward_pre_hook(pre, with_kwargs=True), m.register_forward_hook(post, with_kwargs=True)]
    try:
        runner.call()
        for k in acc:
            acc[k] = 0.0
        per_block[:] = [0.0] * len(blocks)
        total, _ = runner.timed()
    finally:
        for h in handles:
            h.remove()
    out = {f"{k}_share": v / total for k, v in acc.items()}
    out["block_times"] = per_block
    return out


def skipped_block_weight(cache, block_times: list[float]) -> float:
    """Mean time of the blocks a method skips over the mean time of all blocks.

    Blocks differ in cost (Flux's dual-stream blocks outweigh its single-stream ones), so a
    skipped fraction counted in blocks is turned into one of block time by this factor.
    """
    n = len(block_times)
    start, end = {
        "first_block": (1, n), "diffusers_first_block": (1, n),
        "block_cache": (getattr(cache, "block_start", 0), getattr(cache, "block_end", -1)),
        "taylorseer": (getattr(cache, "block_start", 0), getattr(cache, "block_end", -1)),
    }.get(C.method_of(cache).name, (0, n))
    end = n if end == -1 else end
    mid = block_times[start:end]
    return (sum(mid) / len(mid)) / (sum(block_times) / n) if mid and sum(block_times) else 1.0


def run_model(name: str, methods: list[str] | None, warmup: int, repeats: int, emit, clock: str = "wall") -> None:
    loaded = load(name, device="cpu")
    steps = loaded.generation["num_inference_steps"]
    runner = Runner(loaded, PROMPTS.get(name, "a red circle"), warmup, repeats, clock)
    with torch.inference_mode():
        stats = accel.step_statistics(loaded.pipe, runner.prompt, **loaded.generation)
        share = shares(runner)
        base_times, base_out = runner.samples()
        for method, cfgs in settings(stats, steps).items():
            if methods and method not in methods:
                continue
            for cache in cfgs:
                row = measure(runner, name, method, cache, base_out, share, steps)
                finish(row)
                emit(row)
                base_times.append(row.get("baseline_s", base_times[0]))
        base = statistics.median(base_times)
        if not methods or "overhead" in methods:
            for cache in (C.FirstBlockCacheConfig(threshold=0.0), C.FirstBlockCacheConfig(threshold=1e-9)):
                emit(overhead(runner, name, cache, repeats))
    print(f"# {name}: baseline {base:.3f}s (median of {len(base_times)}), " +
          ", ".join(f"{k} {v:.2f}" for k, v in share.items() if k.endswith("share")) +
          f"; first-block residual change p50 {stats.percentiles('first_block_residual_change')['p50']:.4f}",
          file=sys.stderr)


def measure(runner, model, method, cache, base_out, share, steps) -> dict:
    """Baseline and method calls alternate, so load drift on a shared machine hits both alike."""
    row = {"model": model, "method": method, "params": _params(cache)}
    try:
        handle = accel.apply(runner.pipe, accel.AccelConfig(**{C.method_of(cache).section: cache}))
    except Exception as e:  # a method this model does not support
        return {**row, "error": f"{type(e).__name__}: {e}"}
    base_times, times = [], []
    try:
        for _ in range(runner.warmup):
            runner.call(handle.call_overrides)
        for _ in range(runner.repeats):
            handle.reset_stats()
            t, out = runner.timed(handle.call_overrides)
            times.append(t)
            counters = handle.stats()
            handle.remove()
            base_times.append(runner.timed()[0])
            handle = accel.apply(runner.pipe, accel.AccelConfig(**{C.method_of(cache).section: cache}))
    finally:
        handle.remove()
    if method == "step_reduction":
        skipped, unit = 1 - handle_steps(cache, steps) / steps, "denoiser"
    elif counters["blocks_skipped"] or not counters["attention_skipped"]:
        skipped, unit = counters["skipped_fraction"], "block"
    else:
        skipped, unit = counters["skipped_fraction"], "attention"
    weight = skipped_block_weight(cache, share["block_times"]) if unit == "block" else 1.0
    fid = fidelity(out, base_out)
    return {**row, "latency_s": statistics.median(times), "baseline_s": statistics.median(base_times),
            "skipped_fraction": skipped, "unit": unit, "time_share": share[f"{unit}_share"], "skip_weight": weight,
            "psnr": fid["psnr"], "ssim": fid["ssim"]}


def handle_steps(cache, steps):
    return cache.num_inference_steps or steps


def finish(row: dict) -> None:
    if "error" in row:
        return
    row["speedup"] = row["baseline_s"] / row["latency_s"]
    skipped_time = row["skipped_fraction"] * row["skip_weight"] * row["time_share"]
    row["ideal_speedup"] = 1.0 / max(1e-9, 1.0 - skipped_time)
    row["efficiency"] = row["speedup"] / row["ideal_speedup"]
    applies = row["unit"] == "block" and row["skipped_fraction"] >= 0.4
    row["check"] = ("ok" if row["efficiency"] >= 0.85 else "LOW") if applies else "-"


def overhead(runner, model, cache, repeats) -> dict:
    """Caching installed, nothing cached: alternate baseline and cached calls, compare medians."""
    n = max(7, 3 * repeats)
    base, cached = [], []
    runner.call()
    handle = None
    try:
        for _ in range(n):
            t, base_out = runner.timed()
            base.append(t)
            handle = accel.apply(runner.pipe, accel.AccelConfig(**{C.method_of(cache).section: cache}))
            t, out = runner.timed()
            cached.append(t)
            counters = handle.stats()
            handle.remove()
    finally:
        if handle is not None:
            handle.remove()
    b, c = statistics.median(base), statistics.median(cached)
    fid = fidelity(out, base_out)
    ratio = c / b
    ratio_min = min(cached) / min(base)  # the least disturbed call of each, for a noisy machine
    return {"model": model, "method": "overhead:" + C.method_of(cache).name, "params": _params(cache), "latency_s": c, "baseline_s": b,
            "speedup": b / c, "skipped_fraction": counters["skipped_fraction"], "ideal_speedup": 1.0, "psnr": fid["psnr"],
            "ssim": fid["ssim"], "overhead": ratio - 1, "overhead_min": ratio_min - 1, "repeats": n,
            "check": "ok" if ratio <= 1.03 else "SLOW"}


def _params(cache) -> dict:
    import dataclasses

    out = {}
    for f in dataclasses.fields(cache):
        v = getattr(cache, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if v == default and f.name not in ("threshold", "step_interval", "cache_interval", "num_inference_steps"):
            continue  # the table shows what differs from the (neutral) defaults
        if f.name == "mag_ratios":
            v = f"[{len(v)} measured]"
        out[f.name] = float(f"{v:.4g}") if isinstance(v, float) else v
    return out


def _fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["demo-flux", "demo-wan"])
    ap.add_argument("--methods", nargs="+", default=None, help="subset of methods (and 'overhead')")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clock", choices=list(CLOCKS), default="wall",
                    help="wall: elapsed time (the product's measure); cpu: this process's CPU time, which a "
                         "shared, oversubscribed CPU machine disturbs far less (single-threaded CPU runs only)")
    ap.add_argument("--json", action="store_true", help="one JSON object per row")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the JSON rows to this file")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if not args.json:
        print(f"{'model':<10} {'method':<26} {'params':<40} {'lat s':>7} {'speedup':>7} {'skipped':>7} {'ideal':>6} {'eff':>5} "
              f"{'psnr':>6} {'ssim':>6} check")

    sink = args.json_out.open("w") if args.json_out else None

    def emit(row):
        if sink is not None:
            print(json.dumps(row, default=str), file=sink, flush=True)
        if args.json:
            print(json.dumps(row, default=str), flush=True)
            return
        if "error" in row:
            print(f"{row['model']:<10} {row['method']:<26} {'':<40} {row['error'][:80]}", flush=True)
            return
        params = ",".join(f"{k}={v}" for k, v in row["params"].items() if k != "mag_ratios")
        eff = row.get("efficiency", row.get("overhead"))
        print(f"{row['model']:<10} {row['method']:<26} {params[:40]:<40} {row['latency_s']:>7.3f} {row['speedup']:>7.2f} "
              f"{row['skipped_fraction']:>7.2f} {row['ideal_speedup']:>6.2f} {_fmt(eff, '>5.2f')} {row['psnr']:>6.1f} "
              f"{row['ssim']:>6.3f} {row.get('check', '-')}", flush=True)

    print(f"# clock {args.clock}, warmup {args.warmup}, repeats {args.repeats}, load average {os.getloadavg()}", file=sys.stderr)
    for name in args.models:
        run_model(name, args.methods, args.warmup, args.repeats, emit, args.clock)
    print(f"# load average {os.getloadavg()}", file=sys.stderr)


if __name__ == "__main__":
    main()
