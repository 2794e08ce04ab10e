"""A fake evaluator for tuner tests: deterministic latency/quality from the config, no model.

``model="fake"`` behaves; ``model="fake-faulty"`` fails on purpose by ``cache.warmup_steps``:
1 raises, 3 kills the process, 4 returns NaN; ``model="fake-hang"`` never finishes a trial (a
machine that dies mid-trial, once the test kills it).
"""

import os
import time

import numpy as np

from mindiesd_tune.metrics import LatencyStats
from mindiesd_tune.tuner.evaluator import TrialPrunedEarly, TrialResult, to_uint8


class FakeEvaluator:
    def __init__(self, faulty: bool, hang: bool = False):
        self.faulty = faulty
        self.hang = hang

    def evaluate(self, config, constraints=None, margin=None):
        time.sleep(3600 if self.hang else 0.01)
        cache = config.cache
        thr = getattr(cache, "threshold", 0.0)
        warm = getattr(cache, "warmup_steps", 0)
        if self.faulty and cache.method != "none":
            if warm == 1:
                raise RuntimeError("boom")
            if warm == 3:
                os._exit(3)
        latency = 1.0 / (1.0 + 3.0 * min(thr, 1.0)) + 0.02 * warm
        psnr = float("inf") if cache.method == "none" else 60.0 - 80.0 * min(thr, 1.0) + warm
        out = np.full((4, 4, 3), 0.5, dtype=np.float32)
        if self.faulty and cache.method != "none" and warm == 4:
            out[0, 0, 0] = np.nan
        stats = LatencyStats(latency, 0.0, latency, [latency], 1000)
        metrics = {"psnr": psnr, "ssim": 1.0 if cache.method == "none" else max(0.0, 1.0 - thr / 2)}
        if constraints is not None and margin is not None:
            for f in constraints.floors:
                if f.breaks_by(metrics[f.metric], margin, {"psnr": float("inf"), "ssim": 1.0}.get(f.metric)):
                    raise TrialPrunedEarly(f"first prompt misses {f}", {"latency": stats.as_dict(), "metrics": metrics,
                                                                         "counters": {}, "sample": to_uint8(out)})
        return TrialResult(stats, metrics, {"skipped_fraction": min(thr, 1.0)}, [out], 0.01)


def make_fake(spec):
    info = {
        "model": {"name": spec.model, "family": "dit-image", "pipeline": "FakePipeline", "fingerprint": "f" * 16},
        "workload": {"prompts": ["p"], "seeds": [0], "generation": {"height": 4, "width": 4, "num_inference_steps": 4}},
        "hardware": {"device": "cpu", "name": "fake", "count": 1, "torch": "x", "diffusers": "x"},
        "baseline_metrics": {"psnr": float("inf"), "ssim": 1.0},
        "baseline_seconds": 0.0,
        "is_video": False,
    }
    return FakeEvaluator(spec.model == "fake-faulty", hang=spec.model == "fake-hang"), info
