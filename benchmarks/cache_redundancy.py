"""How much step-to-step redundancy the demo models have, and what first-block caching makes of it.

    python benchmarks/cache_redundancy.py                     # demo-flux and demo-wan, human tables
    python benchmarks/cache_redundancy.py --control           # also the same architectures with random weights
    python benchmarks/cache_redundancy.py --json              # one JSON object per row

For each model, over ``--prompts`` held-out prompts at the model's default step count (and its
default guidance: demo-wan runs CFG, whose conditional and unconditional passes are two
branches), one baseline call per prompt records, per step, the relative L1 change since the
previous step of the first transformer block's output and of the transformer's output (the
measures first-block caching and TeaCache-style methods threshold on); the table prints their
mean over prompts and branches, step by step.

Then first-block caching runs at three thresholds taken from the model's own first-block
residual change (its 25th, 50th and 90th percentile), with baseline and cached calls
alternating (the speed-up is the ratio of their medians, over the first prompt), and reports
the skipped fraction of block evaluations and the PSNR of the cached output against the
baseline output of the same prompt and seed.

``--control`` repeats everything for the same architectures with seeded random weights, for
contrast: their numbers describe an untrained network (whose output barely depends on the
prompt), not a model anyone would serve, which is why the demo models are trained.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.cache import Runner, finish, measure, shares  # noqa: E402
from mindiesd_tune import accel  # noqa: E402
from mindiesd_tune.accel import methods as C  # noqa: E402
from mindiesd_tune.models import load, shapes  # noqa: E402


def _control(name: str):
    """The demo model's architecture and pipeline settings with seeded random weights."""
    from mindiesd_tune.models import builders

    loaded = load(name, device="cpu")
    if name == "demo-flux":
        loaded.pipe = builders.build_flux(builders.DEMO_FLUX_SIZE, seed=0)
    else:
        loaded.pipe = builders.build_wan(builders.DEMO_WAN_SIZE, seed=0)
    loaded.name = f"{name} (random weights)"
    return loaded


def per_step(stats_list) -> list[dict]:
    """Mean over prompts and CFG branches of each step's changes."""
    by_step: dict[int, dict[str, list[float]]] = {}
    for stats in stats_list:
        for r in stats.rows:
            slot = by_step.setdefault(r["step"], {"first_block_change": [], "output_change": []})
            for k in slot:
                if r.get(k) is not None:
                    slot[k].append(r[k])
    return [{"step": s, **{k: (float(np.mean(v)) if v else None) for k, v in d.items()}} for s, d in sorted(by_step.items())]


def run(loaded, n_prompts: int, warmup: int, repeats: int, emit) -> None:
    name = loaded.name
    prompts = [p for p, _ in shapes.heldout_prompts(n_prompts, video=loaded.is_video)]
    gen = loaded.generation
    with torch.inference_mode():
        stats = [accel.step_statistics(loaded.pipe, p, seed=i, **gen) for i, p in enumerate(prompts)]
        for row in per_step(stats):
            emit({"model": name, "part": "per_step", **row})
        merged = accel.StepStatistics([r for s in stats for r in s.rows])
        pct = merged.percentiles("first_block_residual_change")
        for measure_name in ("first_block_change", "output_change", "first_block_residual_change"):
            emit({"model": name, "part": "percentiles", "measure": measure_name, **merged.percentiles(measure_name)})
        runner = Runner(loaded, prompts[0], warmup, repeats)
        share = shares(runner)
        _, base_out = runner.samples(n=1)
        for q in ("p25", "p50", "p90"):
            cache = C.FirstBlockCacheConfig(threshold=float(pct[q]), warmup_steps=1)
            row = measure(runner, name, "first_block", cache, base_out, share, gen["num_inference_steps"])
            finish(row)
            emit({"model": name, "part": "first_block", "percentile": q, "threshold": cache.threshold,
                  **{k: row[k] for k in ("speedup", "ideal_speedup", "skipped_fraction", "psnr", "ssim", "latency_s", "baseline_s")}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["demo-flux", "demo-wan"])
    ap.add_argument("--prompts", type=int, default=4, help="held-out prompts for the per-step statistics")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--control", action="store_true", help="also run the same architectures with random weights")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    def emit(row: dict) -> None:
        if args.json:
            print(json.dumps(row), flush=True)
            return
        part = row["part"]
        if part == "per_step":
            if row["step"] == 0:
                print(f"\n{row['model']}: mean relative L1 change since the previous step\n"
                      f"{'step':>4} {'first block':>12} {'transformer':>12}")
            fb, out = row["first_block_change"], row["output_change"]
            print(f"{row['step']:>4} {'-' if fb is None else f'{fb:12.4f}':>12} {'-' if out is None else f'{out:12.4f}':>12}")
        elif part == "percentiles":
            ps = " ".join(f"{k}={row[k]:.4f}" for k in ("p10", "p25", "p50", "p75", "p90") if k in row)
            print(f"  {row['measure']:<28} {ps}")
        else:
            print(f"  first-block cache, threshold {row['threshold']:.4f} ({row['percentile']} of the residual change): "
                  f"{row['speedup']:.2f}x (ideal {row['ideal_speedup']:.2f}x), {row['skipped_fraction']:.0%} of blocks skipped, "
                  f"PSNR {row['psnr']:.1f} dB, SSIM {row['ssim']:.4f}")

    for name in args.models:
        models = [load(name, device="cpu")]
        if args.control:
            models.append(_control(name))
        for loaded in models:
            run(loaded, args.prompts, args.warmup, args.repeats, emit)
    if not args.json:
        print(f"\n(baseline and cached calls alternate; speed-ups are ratios of medians of {args.repeats}, "
              f"{torch.get_num_threads()} thread(s))")


if __name__ == "__main__":
    main()
