"""A small stored study with every kind of trial, written to a run folder the way `tune` writes it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from PIL import Image

DISTRIBUTIONS = {
    "cache.method": CategoricalDistribution(["none", "first_block"]),
    "cache.threshold": FloatDistribution(0.01, 1.0, log=True),
    "cache.warmup_steps": IntDistribution(0, 4),
    "cache.max_cached_steps": CategoricalDistribution([-1, 4, 8, 12]),
    "sparse.method": CategoricalDistribution(["none", "local", "topk", "adaptive"]),
}
FLOOR = "psnr>=30"
# trial -> (threshold, warmup, max cached, latency, psnr, ssim); trial 0 is the baseline
COMPLETE = {
    0: (None, None, None, 1.0, math.inf, 1.0),
    1: (0.05, 2, -1, 0.7, 40.0, 0.98),
    2: (0.1, 2, -1, 0.5, 33.0, 0.95),
    3: (0.3, 2, -1, 0.3, 24.0, 0.85),  # fastest, but below the floor
    4: (0.08, 0, -1, 0.75, 35.0, 0.96),  # dominated by trial 1 on both metrics
    7: (0.2, 1, 4, 0.45, 31.0, 0.97),  # the profile: fastest above the floor
    8: (0.05, 2, -1, 0.7, 40.0, 0.98),  # a repeat of trial 1, answered from storage
    # dominated by trial 1 on both metrics: enough complete trials for parameter importances
    10: (0.06, 1, 8, 0.8, 37.0, 0.97),
    11: (0.07, 3, 12, 0.85, 36.0, 0.965),
    12: (0.04, 4, 4, 0.9, 38.0, 0.975),
}
DOMINATED = {4, 10, 11, 12}
FRONT = {0, 1, 2, 3, 7}  # non-dominated on latency and psnr or ssim, repeats folded into trial 1
CHOSEN = 7
FAIL_REASON = "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"


def _params(thr, warm, cached):
    if thr is None:
        return {"cache.method": "none", "sparse.method": "none"}
    return {"cache.method": "first_block", "cache.threshold": thr, "cache.warmup_steps": warm, "cache.max_cached_steps": cached,
            "sparse.method": "none"}


def build_study(video: bool = False) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="synthetic", directions=["minimize", "maximize"])
    attrs = {
        "model": {"name": "tiny-flux-random", "family": "dit-video" if video else "dit-image",
                  "pipeline": "WanPipeline" if video else "FluxPipeline", "fingerprint": "0123456789abcdef", "dtype": "float32"},
        "workload": {"prompts": ["a red circle on a blue background", "a white square"], "seeds": [0, 1],
                     "generation": {"height": 32, "width": 32, "num_inference_steps": 10}},
        "objective": "psnr",
        "floors": [FLOOR],
        "hardware": {"device": "cpu", "name": "x86_64", "count": 1, "torch": "2.14.1", "diffusers": "0.42.1"},
        "budget": "12 trials",
        "sampler": "tpe",
        "max_memory_bytes": None,
        "storage": "sqlite:///runs/synthetic/study.db",
        "created": "2026-11-25T20:00:00+00:00",
        "latency": {"warmup": 1, "repeats": 3},
    }
    for k, v in attrs.items():
        study.set_user_attr(k, v)
    for number in range(13):
        if number in COMPLETE:
            thr, warm, cached, lat, psnr, ssim = COMPLETE[number]
            params = _params(thr, warm, cached)
            user = {"latency_s": lat, "latency": {"median_s": lat, "peak_memory_bytes": 2**30},
                    "metrics": {"psnr": psnr, "ssim": ssim}, "counters": {"skipped_fraction": 0.0 if thr is None else 0.4}}
            if number == 8:
                user["repeat_of"] = 1
            # timed interleaved with the baseline: the speed-up and the spread of its per-round ratios
            user.update(speedup=1.0 / lat, speedup_iqr=0.04 / lat, baseline_latency={"median_s": 1.0})
            trial = optuna.trial.create_trial(params=params, distributions={k: DISTRIBUTIONS[k] for k in params},
                                              values=[lat, min(psnr, 100.0)], user_attrs=user,
                                              constraints={FLOOR: 30.0 - min(psnr, 100.0)})
        elif number in (5, 9):
            params = _params(0.9, 0, 12)
            trial = optuna.trial.create_trial(params=params, distributions={k: DISTRIBUTIONS[k] for k in params},
                                              state=optuna.trial.TrialState.FAIL, user_attrs={"fail_reason": FAIL_REASON})
        else:  # 6
            params = _params(0.5, 1, 8)
            trial = optuna.trial.create_trial(params=params, distributions={k: DISTRIBUTIONS[k] for k in params},
                                              state=optuna.trial.TrialState.PRUNED)
        study.add_trial(trial)
    return study


def write_samples(out: Path, video: bool = False) -> None:
    samples = out / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for number, (_thr, *_rest) in COMPLETE.items():
        if number == 8:
            continue  # a repeat saves no sample of its own
        if video:
            frames = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(4)]
            frames[0].save(samples / f"trial-{number:04d}.webp", save_all=True, append_images=frames[1:], duration=125, loop=0)
            strip = np.concatenate([np.asarray(f) for f in frames], axis=1)
            Image.fromarray(strip).save(samples / f"trial-{number:04d}.png")
        else:
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(samples / f"trial-{number:04d}.png")


def write_run(out: Path, video: bool = False):
    """The study written as `tune` writes a run: profile.yaml, trials.csv, report.html."""
    from mindiesd_tune.tuner import write_outputs

    write_samples(out, video)
    return write_outputs(build_study(video), out)
