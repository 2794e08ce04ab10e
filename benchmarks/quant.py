"""Precision and quantisation schemes on the demo models: speed-up, weight bytes, peak memory and fidelity.

    python benchmarks/quant.py                                   # human table, demo-flux and demo-wan
    python benchmarks/quant.py --json                            # one JSON object per row
    python benchmarks/quant.py --models demo-flux mid-flux-random --repeats 3 --steps 4 --json

One row per scheme / precision / layer filter. The candidate is a copy of the pipeline with the
config installed as in deployment (``keep_original=False``; the time that takes is ``setup_s``);
baseline and candidate calls alternate in pairs (AB, BA, ...) after one warm-up pair, and
``speedup`` is the median of the per-pair ratios with their range as ``speedup_interval``, so
a busy machine slows both sides alike. ``weight_bytes_ratio`` is the linear weights (with
scales) of the components the config touches against the float32 baseline; on the CPU,
``peak_memory_ratio`` is the process's peak resident memory during the call, which holds both
pipelines, so there it says little and ``weight_bytes_ratio`` is the memory figure. PSNR and
SSIM are against the baseline output of the same prompt and seed (meaningless on
``mid-flux-random``, whose weights are random). Every row carries the CPU's flags (AMX,
AVX512-BF16, VNNI) or the GPU's name, and the load average when the run started.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from mindiesd_tune.accel import quant as Q  # noqa: E402
from mindiesd_tune.kernels import synchronize  # noqa: E402
from mindiesd_tune.metrics.latency import peak_memory_bytes, reset_peak_memory  # noqa: E402
from mindiesd_tune.models import load  # noqa: E402

fidelity = importlib.import_module("mindiesd_tune.metrics.fidelity")
PROMPTS = {"demo-wan": "a red circle on a blue background moving left"}
PROMPT = "a red circle on a blue background"
CPU_FLAGS = {"amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8", "avx512_bf16": "AVX512-BF16", "avx512_vnni": "AVX512-VNNI",
             "avx_vnni": "AVX-VNNI", "avx512f": "AVX512F"}
FILTER = {"skip_first_blocks": 1, "skip_last_blocks": 1, "skip_outside_blocks": True}


def machine(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"device": "cuda", "gpu": torch.cuda.get_device_name(device)}
    flags, name = set(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name") and not name:
                name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"device": device.type, "cpu": name, "cpu_flags": [v for k, v in CPU_FLAGS.items() if k in flags],
            "threads": torch.get_num_threads(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def configs(device: torch.device) -> list[tuple[str, Q.NoQuantConfig]]:
    """(filter label, config): precision alone, each scheme the device runs, and the layer filter."""
    sup = Q.supported(device)
    rows = [("-", Q.NoQuantConfig(precision={"denoiser": "bfloat16"})),
            ("-", Q.NoQuantConfig(precision={"denoiser": "float16"})),
            ("-", Q.NoQuantConfig(precision={c: "bfloat16" for c in Q.COMPONENTS}))]
    for scheme in sup.schemes:
        if scheme == "none":
            continue
        kind = Q.SCHEME_CONFIGS[scheme]
        extra = {"group_size": 64} if scheme == "w4a16" else {}
        # torchao's int4 and float8 kernels on CUDA take bfloat16 activations
        bf16 = {"precision": {"denoiser": "bfloat16"}} if scheme in ("w4a16", "fp8_w8a8", "fp8_w8a16") else {}
        rows.append(("none", kind(**extra, **bf16)))
        if scheme in ("w8a16", "w8a8"):
            rows.append(("none", kind(precision={"denoiser": "bfloat16"})))
        rows.append(("first1+last1+outside", kind(**FILTER, **extra, **bf16)))
    return rows


def touched(cfg) -> list[str]:
    return sorted(set(getattr(cfg, "components", ())) | set(cfg.precision))


class Caller:
    def __init__(self, loaded, pipe):
        self.loaded, self.pipe = loaded, pipe
        self.prompt = PROMPTS.get(loaded.name, PROMPT)

    def __call__(self):
        out = self.pipe(prompt=self.prompt, generator=torch.Generator("cpu").manual_seed(0), output_type="np", **self.loaded.generation)
        return (out.frames if self.loaded.is_video else out.images)[0]


def timed(fn, device):
    synchronize(device)
    reset_peak_memory(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - t0, peak_memory_bytes(device), out


def bench(loaded, label: str, cfg, repeats: int, device: torch.device) -> dict:
    base_call = Caller(loaded, loaded.pipe)
    pipe = copy.deepcopy(loaded.pipe)
    t0 = time.perf_counter()
    Q.install_quant(pipe, cfg, keep_original=False)
    setup = time.perf_counter() - t0
    cand_call = Caller(loaded, pipe)
    base_call(), cand_call()  # warm-up pair
    ratios, base_peaks, cand_peaks, base_s, cand_s = [], [], [], [], []
    base_out = cand_out = None
    for r in range(repeats):
        order = ("b", "c") if r % 2 == 0 else ("c", "b")
        t = {}
        for side in order:
            secs, peak, out = timed(base_call if side == "b" else cand_call, device)
            t[side] = secs
            if side == "b":
                base_out, _ = out, base_peaks.append(peak or 0)
            else:
                cand_out, _ = out, cand_peaks.append(peak or 0)
        ratios.append(t["b"] / t["c"])
        base_s.append(t["b"])
        cand_s.append(t["c"])
    before, after = Q.weight_bytes(loaded.pipe), Q.weight_bytes(pipe)
    comps = touched(cfg)
    wb_ratio = sum(after[c] for c in comps) / max(1, sum(before[c] for c in comps))
    del pipe
    return {
        "model": loaded.name, "scheme": cfg.scheme, "precision": cfg.precision or "load dtype",
        "components": list(getattr(cfg, "components", ())), "filter": label,
        "speedup": round(statistics.median(ratios), 3), "speedup_interval": [round(min(ratios), 3), round(max(ratios), 3)],
        "baseline_s": round(statistics.median(base_s), 3), "candidate_s": round(statistics.median(cand_s), 3),
        "pairs": repeats, "steps": loaded.generation.get("num_inference_steps"), "weight_bytes_ratio": round(wb_ratio, 3),
        "weight_bytes": {c: after[c] for c in comps}, "weight_bytes_float32": {c: before[c] for c in comps},
        "peak_memory_ratio": round(statistics.median(cand_peaks) / max(1, statistics.median(base_peaks)), 3),
        "psnr": round(fidelity.psnr(cand_out, base_out), 2), "ssim": round(fidelity.ssim(cand_out, base_out), 4),
        "setup_s": round(setup, 2),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["demo-flux", "demo-wan"])
    ap.add_argument("--repeats", type=int, default=3, help="interleaved pairs per row (after one warm-up pair)")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps per call (default: the model's own)")
    ap.add_argument("--only", nargs="*", default=None, help="keep rows whose scheme is listed (precision rows: 'none')")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    for name in args.models:
        loaded = load(name, device="cpu" if not torch.cuda.is_available() else "cuda")
        if args.steps:
            loaded.generation["num_inference_steps"] = args.steps
        device = next(loaded.pipe.transformer.parameters()).device
        info = machine(device)
        for label, cfg in configs(device):
            if args.only is not None and cfg.scheme not in args.only:
                continue
            row = {**bench(loaded, label, cfg, args.repeats, device), **info}
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"{row['model']:16} {row['scheme']:9} {str(row['precision']):60} {row['filter']:22} "
                      f"{row['speedup']:.2f}x [{row['speedup_interval'][0]:.2f}, {row['speedup_interval'][1]:.2f}] "
                      f"wb {row['weight_bytes_ratio']:.3f} mem {row['peak_memory_ratio']:.2f} "
                      f"psnr {row['psnr']:.1f} ssim {row['ssim']:.3f} setup {row['setup_s']:.1f}s", flush=True)


if __name__ == "__main__":
    main()
