"""Regional torch.compile on the demo models, alone and on top of the calibrated step schedule.

    python benchmarks/compile.py                        # demo-flux and demo-wan, human table
    python benchmarks/compile.py --models demo-flux --rounds 15 --json

Rows, each a speed-up of B over A from interleaved rounds in one run (A, B, then B, A, ...;
each round's two calls back to back), with the tuner's speed-up of the per-round ratios
(``metrics.speed_interval``) and its 95% interval:

- ``compile``: eager blocks (A) against compiled ones (B);
- ``schedule``: the baseline against the ``schedule`` preset (budget 0.35, warm-up 2, the mask
  placed on this model's measured residual distances, as a study's preset is);
- ``schedule+compile``: the baseline against the schedule with compiled blocks;
- ``compile on schedule``: the schedule against the schedule with compiled blocks, the gain
  compile adds to the cache setting a study would otherwise pick.

Every configuration is applied and removed around each of its calls, as the tuner does, so the
compiled graphs are built once (the first call, reported as ``compile_s``: that call's time
less an eager call's) and reused. ``psnr`` is the compiled output's against the eager output of
the same configuration. On the CPU inductor builds C++ kernels; without a C++ compiler the
compile rows are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from mindiesd_tune import accel  # noqa: E402
from mindiesd_tune.accel.methods import compile as compile_entry  # noqa: E402
from mindiesd_tune.accel.methods import schedule as schedule_entry  # noqa: E402
from mindiesd_tune.metrics.fidelity import psnr  # noqa: E402
from mindiesd_tune.metrics.latency import compare_interleaved  # noqa: E402
from mindiesd_tune.models import load  # noqa: E402
from mindiesd_tune.models.prompts import default_prompts  # noqa: E402
from mindiesd_tune.search_spaces import describe  # noqa: E402

COMPILE = {"compile": {"mode": "default"}}


def schedule_preset(loaded, prompt: str) -> dict:
    """The ``schedule`` preset's config on this model, its mask placed as a study places it."""
    stats = accel.step_statistics(loaded.pipe, prompt, seed=0, **loaded.generation)
    ctx = describe(loaded.pipe, loaded.generation, stats)
    budget, warmup = schedule_entry.PRESET_BUDGET, schedule_entry.PRESET_WARMUP
    steps = schedule_entry.mask(ctx, budget, warmup)
    return {"cache": {"method": "schedule", "compute_steps": steps, "budget": budget, "warmup_steps": warmup}}


def run_model(name: str, rounds: int) -> list[dict]:
    loaded = load(name, device="cpu")
    pipe, gen = loaded.pipe, loaded.generation
    prompt = default_prompts(builtin=True, video=loaded.is_video)[0]  # a study's first prompt, its calibration's

    def call():
        out = pipe(prompt=prompt, generator=torch.Generator().manual_seed(0), output_type="np", **gen)
        return (out.frames if loaded.is_video else out.images)[0]

    def under(config):
        """A call with ``config`` applied around it (None: the baseline)."""
        if config is None:
            return call

        def fn():
            with accel.apply(pipe, config):
                return call()

        return fn

    schedule = schedule_preset(loaded, prompt)
    both = {**schedule, **COMPILE}
    rows = []
    with torch.inference_mode():
        eager = {None: call(), "schedule": under(schedule)()}
        first_s, first_psnr = {}, {}  # the compiling first call: its time, its output against eager
        for key, config, reference in (("compile", COMPILE, eager[None]), ("schedule+compile", both, eager["schedule"])):
            torch._dynamo.reset()
            t0 = time.perf_counter()
            first = under(config)()
            first_s[key] = time.perf_counter() - t0
            first_psnr[key] = psnr(first, reference)
        t0 = time.perf_counter()
        call()
        eager_s = time.perf_counter() - t0
        for label, a, b, key in (("compile", None, COMPILE, "compile"),
                                 ("schedule", None, schedule, None),
                                 ("schedule+compile", None, both, "schedule+compile"),
                                 ("compile on schedule", schedule, both, "schedule+compile")):
            cmp, _, _ = compare_interleaved(under(a), under(b), warmup=1, repeats=rounds)
            rows.append({
                "model": name, "row": label, "speedup": round(cmp.speedup, 3),
                "low": round(cmp.speedup_low, 3), "high": round(cmp.speedup_high, 3), "rounds": rounds,
                "a_s": round(cmp.baseline.median_s, 4), "b_s": round(cmp.candidate.median_s, 4),
                "compile_s": round(first_s[key] - eager_s, 1) if key else None,
                "psnr": round(first_psnr[key], 1) if key else None,
                "steps": len(schedule["cache"]["compute_steps"]), "of_steps": gen["num_inference_steps"],
            })
    torch._dynamo.reset()
    return rows


def model_rounds_args(doc: str) -> argparse.Namespace:
    """``--models``, ``--rounds`` and ``--json``, the options of the benchmarks that time A against B
    on the demo models in interleaved rounds (this one and ``batch_cfg.py``)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["demo-flux", "demo-wan"])
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds per row")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return args


def main() -> None:
    args = model_rounds_args(__doc__)
    if not compile_entry.has_compiler("cpu"):
        print("no C++ compiler: inductor cannot build CPU kernels here, nothing to measure", file=sys.stderr)
        raise SystemExit(2)
    rows = [r for m in args.models for r in run_model(m, args.rounds)]
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return
    print(f"regional torch.compile, {torch.get_num_threads()} threads, {args.rounds} interleaved rounds per row")
    print(f"{'model':10s} {'row':20s} {'speed-up [95%]':>22s} {'A s':>7s} {'B s':>7s} {'compile s':>9s} {'psnr':>6s}")
    for r in rows:
        extra = f"{r['compile_s']:9.1f} {r['psnr']:6.1f}" if r["compile_s"] is not None else f"{'-':>9s} {'-':>6s}"
        print(f"{r['model']:10s} {r['row']:20s} {r['speedup']:6.2f}x [{r['low']:.2f}-{r['high']:.2f}]"
              f"{'':>6s} {r['a_s']:7.3f} {r['b_s']:7.3f} {extra}")
    print(f"schedule: {rows[1]['steps']} of {rows[1]['of_steps']} steps computed (the study's preset)")


if __name__ == "__main__":
    main()
