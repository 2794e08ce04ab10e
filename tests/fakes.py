"""A fake evaluator for tuner tests: deterministic latency/quality from the config, no model.

``model="fake"`` behaves: the baseline takes 1 s, timed interleaved with every trial, and a
speed-up's interval is ±2% of it (±1% once confirmed); ``model="fake-flat"`` is a model nothing
speeds up: every setting is within timing noise of the baseline. ``model="fake-faulty"`` fails on purpose by ``cache.warmup_steps``:
1 raises, 3 kills the process, 4 returns NaN. ``model="fake-fast"`` is ``fake`` a thousand times
faster (trials of about a millisecond, as a small model on a fast GPU); ``model="fake-hang"`` never
finishes a trial (a machine that dies mid-trial, once the test kills it).
"""

import os
import time

import numpy as np

from mindiesd_tune.metrics import Comparison, LatencyStats
from mindiesd_tune.tuner.evaluator import TrialPrunedEarly, TrialResult, to_uint8


class FakeEvaluator:
    def __init__(self, faulty: bool, scale: float = 1.0, hang: bool = False, flat: bool = False):
        self.faulty = faulty
        self.scale = scale
        self.hang = hang
        self.flat = flat
        self.confirmed = []  # the configs confirm() re-measured

    def _latency(self, cache) -> float:
        if self.flat:  # within 1% of the baseline either way: noise, not a speed-up
            return self.scale * (0.99 if cache.method != "none" else 1.0)
        thr, warm = getattr(cache, "threshold", 0.0), getattr(cache, "warmup_steps", 0)
        return (1.0 / (1.0 + 3.0 * min(thr, 1.0)) + 0.02 * warm) * self.scale

    def _comparison(self, latency: float, spread: float, rounds: int) -> Comparison:
        speedup = self.scale / latency
        width = 0.05 if self.flat else spread  # the flat model's interval straddles 1.0
        base = LatencyStats(self.scale, 0.0, self.scale, [self.scale] * rounds, 1000, self.scale)
        cand = LatencyStats(latency, 0.0, latency, [latency] * rounds, 1000, latency)
        return Comparison(base, cand, speedup, 0.0, speedup * (1 - width), speedup * (1 + width), [speedup] * rounds)

    def confirm(self, config, repeats, precision=None, max_s=None, prior_ratios=None):
        self.confirmed.append(config)
        return self._comparison(self._latency(config.cache), 0.01, 2 * repeats)

    def versus(self, reference, config, repeats, precision=None, max_s=None):
        """``config`` against ``reference``: the ratio of their latencies, ±1%."""
        ref = self._latency(reference.cache)
        cmp = self._comparison(self._latency(config.cache) * self.scale / ref, 0.01, 2 * repeats)
        return Comparison(LatencyStats(ref, 0.0, ref, [ref] * 2 * repeats), cmp.candidate, cmp.speedup, 0.0,
                          cmp.speedup_low, cmp.speedup_high, cmp.ratios)

    def evaluate(self, config, constraints=None, margin=None, rounds=None):
        time.sleep(3600 if self.hang else 0.01)
        cache = config.cache
        thr = getattr(cache, "threshold", 0.0)
        warm = getattr(cache, "warmup_steps", 0)
        if self.faulty and cache.method != "none":
            if warm == 1:
                raise RuntimeError("boom")
            if warm == 3:
                os._exit(3)
        latency = self._latency(cache)
        psnr = float("inf") if cache.method == "none" else 60.0 - 80.0 * min(thr, 1.0) + warm
        out = np.full((4, 4, 3), 0.5, dtype=np.float32)
        if self.faulty and cache.method != "none" and warm == 4:
            out[0, 0, 0] = np.nan
        cmp = self._comparison(latency, 0.02, 1)
        stats = cmp.candidate
        metrics = {"psnr": psnr, "ssim": 1.0 if cache.method == "none" else max(0.0, 1.0 - thr / 2)}
        if constraints is not None and margin is not None:
            for f in constraints.floors:
                if f.breaks_by(metrics[f.metric], margin, {"psnr": float("inf"), "ssim": 1.0}.get(f.metric)):
                    raise TrialPrunedEarly(f"first prompt misses {f}", {"metrics": metrics, "counters": {},
                                                                         "sample": to_uint8(out)})
        return TrialResult(stats, metrics, {"skipped_fraction": min(thr, 1.0)}, [out], 0.01, baseline_latency=cmp.baseline,
                           speedup=cmp.speedup, speedup_iqr=0.0, speedup_low=cmp.speedup_low,
                           speedup_high=cmp.speedup_high)


class ScreeningFake(FakeEvaluator):
    """The fake with a screen (``Evaluator.screen``): the first prompt's metrics and one ratio,
    the full evaluation's own figures; what it screened and evaluated in full is kept."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.screened, self.full = [], []

    def screen(self, config, constraints=None, margin=None):
        self.screened.append(config)
        result = self._slow_quant(config, FakeEvaluator.evaluate(self, config, constraints, margin))
        result.timing = {"repeats": 1, "screen": True}
        return result

    def evaluate(self, config, constraints=None, margin=None, rounds=None):
        self.full.append(config)
        return self._slow_quant(config, super().evaluate(config, constraints, margin))

    @staticmethod
    def _slow_quant(config, result):
        """A quantised point runs 1.6x slower than the baseline at 45 dB: worse than a cached one
        on both axes, what a screen drops."""
        if config.quant.scheme != "none":
            result.speedup, result.speedup_low, result.speedup_high = 0.6, 0.59, 0.61
            result.metrics["psnr"] = 45.0
        return result


def make_fake(spec):
    info = {
        "model": {"name": spec.model, "family": "dit-image", "pipeline": "FakePipeline", "fingerprint": "f" * 16},
        "workload": {"prompts": ["p"], "seeds": [0], "generation": {"height": 4, "width": 4, "num_inference_steps": 4}},
        "hardware": {"device": "cpu", "name": "fake", "count": 1, "torch": "x", "diffusers": "x"},
        "baseline_metrics": {"psnr": float("inf"), "ssim": 1.0},
        "baseline_seconds": 0.0,
        "call_seconds": 0.01,  # what a fake call costs (its evaluate sleeps that long): the plan's price
        "is_video": False,
    }
    kind = ScreeningFake if spec.model == "fake-screened" else FakeEvaluator
    return kind(spec.model == "fake-faulty", 1e-3 if spec.model == "fake-fast" else 1.0,
                hang=spec.model == "fake-hang", flat=spec.model == "fake-flat"), info


SLOW_STEP_S = 1.0  # per denoising step of a slow trial: at least 20 steps make it last 20 s on any machine


def make_slow_tiny(spec):
    """tiny-flux-random whose first trial runs at full speed and every later one sleeps at each
    denoising step; the file named by $MINDIESD_TEST_SLOW_MARKER appears when a slow trial starts,
    so a test can interrupt it mid-trial without guessing how fast the machine is."""
    import threading
    from pathlib import Path

    from mindiesd_tune.accel.blocks import find_denoiser
    from mindiesd_tune.tuner.worker import build_evaluator

    ev, info = build_evaluator(spec)
    slow = threading.Event()
    find_denoiser(ev.pipe).register_forward_pre_hook(lambda module, args: time.sleep(SLOW_STEP_S) if slow.is_set() else None)
    calls = []

    def slowly(run):
        def call(*args, **kwargs):
            calls.append(1)
            if len(calls) > 1:
                slow.set()
                Path(os.environ["MINDIESD_TEST_SLOW_MARKER"]).write_text("a slow trial started")
            return run(*args, **kwargs)
        return call

    # a trial's first call is its screen: the second trial is slow from its first step
    ev.evaluate, ev.screen = slowly(ev.evaluate), slowly(ev.screen)
    return ev, info


def make_slow_confirm(spec):
    """The fake, whose confirmation sleeps (an hour: only an abort ends it) after leaving the
    marker, so a test can interrupt the study mid-confirmation."""
    from pathlib import Path

    ev, info = make_fake(spec)

    def confirm_slowly(*args, **kwargs):
        Path(os.environ["MINDIESD_TEST_SLOW_MARKER"]).write_text("the confirmation started")
        time.sleep(3600)

    ev.confirm = confirm_slowly
    return ev, info


def make_stubborn(spec):
    """The fake evaluator, whose second trial sleeps for a minute and has no abort event to stop
    it (as a denoising step that is slow to end); the marker is as for make_slow_tiny."""
    from pathlib import Path

    ev, info = make_fake(spec)
    evaluate, calls = ev.evaluate, []

    def evaluate_stubbornly(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            Path(os.environ["MINDIESD_TEST_SLOW_MARKER"]).write_text("a slow trial started")
            time.sleep(60)
        return evaluate(*args, **kwargs)

    ev.evaluate = evaluate_stubbornly
    return ev, info


def make_drifting(spec):
    """The fake on a machine that gets busier trial after trial: every call, baseline and
    candidate alike, takes 60% longer than in the trial before. Speed-ups are unchanged; the
    absolute latency of a late trial says more about the load than about its setting."""
    ev, info = make_fake(spec)
    evaluate, n = ev.evaluate, [0]

    def evaluate_later(*args, **kwargs):
        from dataclasses import replace

        result = evaluate(*args, **kwargs)
        load = 1.6 ** n[0]
        n[0] += 1

        def slower(stats):
            return replace(stats, median_s=stats.median_s * load, min_s=stats.min_s * load,
                           samples=[x * load for x in stats.samples])

        return replace(result, latency=slower(result.latency), baseline_latency=slower(result.baseline_latency))

    ev.evaluate = evaluate_later
    return ev, info
