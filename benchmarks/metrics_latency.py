"""Baseline against a first-block-cache candidate, interleaved in one run: latency, stage split, memory, quality.

    python benchmarks/metrics_latency.py [--model demo-flux] [--threshold 0.1] [--repeats 5] [--json]

One row per side (baseline, candidate): median and IQR of the whole call, the medians of text
encoding, denoising and decoding, peak memory, the speed-up as a ratio of interleaved medians,
and the candidate's PSNR/SSIM (and demo-clip CLIP score for demo models) against the baseline.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from mindiesd_tune import accel  # noqa: E402
from mindiesd_tune.metrics import compare_interleaved, default_clip_model, measure_stages, score_outputs  # noqa: E402
from mindiesd_tune.models import load  # noqa: E402

PROMPT = "a red circle on a blue background"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo-flux")
    ap.add_argument("--threshold", type=float, default=0.1, help="first-block cache threshold of the candidate")
    ap.add_argument("--steps", type=int, default=None, help="override num_inference_steps")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default=None)
    ap.add_argument("--json", action="store_true", help="one JSON object per row")
    args = ap.parse_args()

    loaded = load(args.model, device=args.device)
    pipe, device = loaded.pipe, loaded.pipe.device
    gen = dict(loaded.generation)
    if args.steps:
        gen["num_inference_steps"] = args.steps
    cfg = accel.AccelConfig.from_dict({"cache": {"method": "first_block", "threshold": args.threshold}})

    def call():
        out = pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(0), output_type="np", **gen)
        return (out.frames if loaded.is_video else out.images)[0]

    with torch.inference_mode():
        cmp, base_out, cand_out = compare_interleaved(
            call, call, device, args.warmup, args.repeats, candidate_setup=lambda: accel.apply(pipe, cfg).remove
        )
        stages = {"baseline": measure_stages(pipe, call, device, 0, args.repeats)[0]}
        handle = accel.apply(pipe, cfg)
        try:
            stages["candidate"] = measure_stages(pipe, call, device, 0, args.repeats)[0]
        finally:
            handle.remove()

    clip = default_clip_model(args.model)
    metrics = ["psnr", "ssim"]
    quality = score_outputs([cand_out], metrics, reference=[base_out]).values
    if clip:
        quality["clip"] = score_outputs([cand_out], ["clip"], prompts=[PROMPT], clip_model=clip, device=str(device)).values["clip"]
        quality["clip_baseline"] = score_outputs([base_out], ["clip"], prompts=[PROMPT], clip_model=clip, device=str(device)).values["clip"]

    rows = []
    for side, lat in (("baseline", cmp.baseline), ("candidate", cmp.candidate)):
        st = stages[side]
        rows.append({
            "model": args.model,
            "device": device.type,
            "side": side,
            "config": "none" if side == "baseline" else f"first_block threshold={args.threshold}",
            "repeats": lat.repeats,
            "median_s": round(lat.median_s, 4),
            "iqr_s": round(lat.iqr_s, 4),
            "text_encode_s": round(st["text_encode_s"].median_s, 4),
            "denoise_s": round(st["denoise_s"].median_s, 4),
            "decode_s": round(st["decode_s"].median_s, 4),
            "other_s": round(st["other_s"].median_s, 4),
            "peak_memory_mb": round(lat.peak_memory_bytes / 2**20, 1) if lat.peak_memory_bytes else None,
            "speedup": 1.0 if side == "baseline" else round(cmp.speedup, 3),
            "speedup_iqr": 0.0 if side == "baseline" else round(cmp.speedup_iqr, 3),
            **({k: (round(v, 4) if isinstance(v, float) and v != float("inf") else str(v)) for k, v in quality.items()} if side == "candidate" else {}),
        })
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return
    cols = ["side", "median_s", "iqr_s", "text_encode_s", "denoise_s", "decode_s", "other_s", "peak_memory_mb", "speedup"]
    print(f"{args.model} on {device.type}, {args.repeats} interleaved repeats, candidate: {rows[1]['config']}")
    print("  ".join(f"{c:>14s}" for c in cols))
    for r in rows:
        print("  ".join(f"{str(r[c]):>14s}" for c in cols))
    print("candidate quality: " + ", ".join(f"{k} {v}" for k, v in rows[1].items() if k in quality))


if __name__ == "__main__":
    main()
