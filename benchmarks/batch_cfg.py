"""Batched CFG calls (``steps.batch_cfg``) on the demo models, alone and beside the schedule and bf16.

    python benchmarks/batch_cfg.py                       # demo-flux and demo-wan, human table
    python benchmarks/batch_cfg.py --models demo-flux --rounds 15 --json

Rows, each a speed-up of B over A from interleaved rounds in one run (the tuner's
``compare_interleaved``: A, B, then B, A, ...), with the speed-up of the per-round ratios and
its 95% interval:

- ``batch_cfg``: the baseline (two denoiser calls per step) against one batched call per step;
- ``on schedule+bf16``: the ``schedule`` preset's mask with a bfloat16 denoiser, against the
  same with batched calls: the gain batching adds to the setting a study picks.

``psnr`` is B's output against A's, same prompt and seed: batching changes nothing but the
kernels' rounding. demo-flux runs true CFG (``true_cfg_scale`` 4 with an empty negative
prompt), demo-wan classifier-free guidance; both call the denoiser once per branch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.compile import model_rounds_args, schedule_preset  # noqa: E402
from mindiesd_tune import accel  # noqa: E402
from mindiesd_tune.metrics.fidelity import psnr  # noqa: E402
from mindiesd_tune.metrics.latency import compare_interleaved  # noqa: E402
from mindiesd_tune.models import load  # noqa: E402
from mindiesd_tune.models.prompts import default_prompts  # noqa: E402

BATCH = {"steps": {"batch_cfg": True}}
BF16 = {"quant": {"scheme": "none", "precision": {"denoiser": "bfloat16"}}}


def run_model(name: str, rounds: int) -> list[dict]:
    loaded = load(name, device="cpu")
    pipe, gen = loaded.pipe, loaded.generation
    prompt = default_prompts(builtin=True, video=loaded.is_video)[0]

    def call():
        out = pipe(prompt=prompt, generator=torch.Generator().manual_seed(0), output_type="np", **gen)
        return (out.frames if loaded.is_video else out.images)[0]

    def under(config):
        def fn():
            with accel.apply(pipe, accel.AccelConfig.from_dict(config)):
                return call()

        return fn

    picked = {**schedule_preset(loaded, prompt), **BF16}
    rows = []
    with torch.inference_mode():
        for label, a, b in (("batch_cfg", {}, BATCH), ("on schedule+bf16", picked, {**picked, **BATCH})):
            fidelity = psnr(under(b)(), under(a)())
            cmp, _, _ = compare_interleaved(under(a), under(b), warmup=1, repeats=rounds)
            rows.append({"model": name, "row": label, "speedup": round(cmp.speedup, 3), "low": round(cmp.speedup_low, 3),
                         "high": round(cmp.speedup_high, 3), "rounds": rounds, "a_s": round(cmp.baseline.median_s, 4),
                         "b_s": round(cmp.candidate.median_s, 4), "psnr": round(fidelity, 1)})
    return rows


def main() -> None:
    args = model_rounds_args(__doc__)
    rows = [r for m in args.models for r in run_model(m, args.rounds)]
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return
    print(f"batched CFG calls, {torch.get_num_threads()} threads, {args.rounds} interleaved rounds per row")
    print(f"{'model':10s} {'row':18s} {'speed-up [95%]':>22s} {'A s':>7s} {'B s':>7s} {'psnr':>6s}")
    for r in rows:
        print(f"{r['model']:10s} {r['row']:18s} {r['speedup']:6.2f}x [{r['low']:.2f}-{r['high']:.2f}]"
              f"{'':>6s} {r['a_s']:7.3f} {r['b_s']:7.3f} {r['psnr']:6.1f}")


if __name__ == "__main__":
    main()
