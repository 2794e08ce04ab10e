"""Latency you can trust: warm-up, device synchronisation, repeats, median and IQR, interleaved baselines.

On CUDA a call is timed with CUDA events (GPU time between two points of the stream); on an
Ascend NPU the host waits for the device (``torch.npu.synchronize``) before reading the clock;
the CPU runs eagerly and needs no synchronisation. Speed-ups are ratios of medians measured in
the same run with the baseline interleaved (``compare_interleaved``), so drift in clocks,
thermals or other load touches both sides alike.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..kernels import peak_memory_bytes as _device_peak
from ..kernels import reset_peak_memory as _device_reset
from ..kernels import synchronize


@dataclass
class LatencyStats:
    """Seconds per call over ``repeats`` timed calls after ``warmup`` untimed ones."""

    median_s: float
    iqr_s: float
    min_s: float
    samples: list[float]
    peak_memory_bytes: int | None = None

    @property
    def repeats(self) -> int:
        return len(self.samples)

    def as_dict(self) -> dict:
        return asdict(self)


def quartiles(samples: list[float]) -> tuple[float, float, float]:
    """(q1, median, q3), inclusive method; with fewer than 4 samples q1/q3 are the extremes."""
    s = sorted(samples)
    if len(s) >= 4:
        q1, q2, q3 = statistics.quantiles(s, n=4, method="inclusive")
        return q1, q2, q3
    return s[0], statistics.median(s), s[-1]


def summarize(samples: list[float], peak: int | None = None) -> LatencyStats:
    if not samples:
        raise ValueError("no latency samples")
    q1, med, q3 = quartiles(samples)
    return LatencyStats(med, q3 - q1, min(samples), list(samples), peak)


# ---------------------------------------------------------------------------- clocks and memory


class DeviceClock:
    """Marks points in time on ``device``; ``seconds(a, b)`` between two marks.

    CUDA: events recorded on the current stream, resolved after one synchronisation (no host
    stall between marks). NPU: synchronise, then read the host clock. CPU: the host clock.
    A ``clock`` function (a fake one in tests) replaces the events and the host clock.
    """

    def __init__(self, device="cpu", clock: Callable[[], float] | None = None):
        self.device = torch.device(device)
        self.clock = clock
        self.events = clock is None and self.device.type == "cuda"

    def mark(self):
        if self.events:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        synchronize(self.device)
        return (self.clock or time.perf_counter)()

    def seconds(self, start, end) -> float:
        if self.events:
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
        return end - start


def _cpu_hwm_resettable() -> bool:
    return Path("/proc/self/clear_refs").exists() and Path("/proc/self/status").exists()


def reset_peak_memory(device) -> None:
    """Start a new peak: device allocator stats; on Linux CPUs the process's RSS high-water mark too."""
    device = torch.device(device)
    _device_reset(device)
    if device.type == "cpu" and _cpu_hwm_resettable():
        try:
            Path("/proc/self/clear_refs").write_text("5")  # 5 resets VmHWM to the current RSS
        except OSError:
            pass


def peak_memory_bytes(device) -> int | None:
    """Peak allocated device memory since the last reset; on the CPU the process's peak RSS."""
    device = torch.device(device)
    if device.type == "cpu" and _cpu_hwm_resettable():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return _device_peak(device)


# ---------------------------------------------------------------------------- one function


def measure(
    fn: Callable[[], Any],
    device="cpu",
    warmup: int = 1,
    repeats: int = 3,
    clock: Callable[[], float] | None = None,
) -> tuple[LatencyStats, Any]:
    """Time ``fn`` and return its statistics and the output of the last call."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    dc = DeviceClock(device, clock)
    out = None
    for _ in range(warmup):
        out = fn()
    synchronize(device)
    reset_peak_memory(device)
    samples = []
    for _ in range(repeats):
        t0 = dc.mark()
        out = fn()
        samples.append(dc.seconds(t0, dc.mark()))
    return summarize(samples, peak_memory_bytes(device)), out


# ---------------------------------------------------------------------------- baseline against candidate


@dataclass
class Comparison:
    """Baseline and candidate timed in the same run, interleaved; ``speedup`` = baseline median / candidate median."""

    baseline: LatencyStats
    candidate: LatencyStats
    speedup: float
    speedup_iqr: float  # spread of the per-round ratios: how far to trust ``speedup``

    def as_dict(self) -> dict:
        return {"baseline": self.baseline.as_dict(), "candidate": self.candidate.as_dict(), "speedup": self.speedup, "speedup_iqr": self.speedup_iqr}


def compare_interleaved(
    baseline: Callable[[], Any],
    candidate: Callable[[], Any],
    device="cpu",
    warmup: int = 1,
    repeats: int = 3,
    clock: Callable[[], float] | None = None,
    candidate_setup: Callable[[], Callable[[], Any]] | None = None,
) -> tuple[Comparison, Any, Any]:
    """Time ``baseline`` and ``candidate`` alternately (AB, BA, AB, ...) and return their ratio.

    Returns the comparison and the last output of each. Peak memory is taken per side.
    ``candidate_setup``, when given, runs untimed before every candidate call and returns the
    teardown that runs untimed after it: ``lambda: accel.apply(pipe, cfg).remove``.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    dc = DeviceClock(device, clock)
    fns = {"baseline": baseline, "candidate": candidate}
    outs: dict[str, Any] = {"baseline": None, "candidate": None}
    samples: dict[str, list[float]] = {"baseline": [], "candidate": []}
    peaks: dict[str, int | None] = {"baseline": None, "candidate": None}
    def run(side: str, timed: bool) -> None:
        teardown = candidate_setup() if side == "candidate" and candidate_setup is not None else None
        try:
            synchronize(device)
            reset_peak_memory(device)
            t0 = dc.mark()
            outs[side] = fns[side]()
            if timed:
                samples[side].append(dc.seconds(t0, dc.mark()))
                peak = peak_memory_bytes(device)
                if peak is not None:
                    peaks[side] = max(peaks[side] or 0, peak)
        finally:
            if teardown is not None:
                teardown()

    for _ in range(warmup):
        for side in fns:
            run(side, timed=False)
    for r in range(repeats):
        for side in ("baseline", "candidate") if r % 2 == 0 else ("candidate", "baseline"):
            run(side, timed=True)
    base, cand = summarize(samples["baseline"], peaks["baseline"]), summarize(samples["candidate"], peaks["candidate"])
    ratios = [b / c for b, c in zip(samples["baseline"], samples["candidate"]) if c > 0]
    q1, _, q3 = quartiles(ratios) if ratios else (float("nan"),) * 3
    speedup = base.median_s / cand.median_s if cand.median_s > 0 else float("inf")
    return Comparison(base, cand, speedup, q3 - q1), outs["baseline"], outs["candidate"]


# ---------------------------------------------------------------------------- where the time goes

STAGES = ("text_encode_s", "denoise_s", "decode_s", "other_s", "total_s")
TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3", "image_encoder")


@dataclass
class StageTimes:
    """One pipeline call split into text encoding, denoising (the transformer/unet forwards) and decoding."""

    text_encode_s: float = 0.0
    denoise_s: float = 0.0
    decode_s: float = 0.0
    total_s: float = 0.0
    denoiser_calls: int = 0

    @property
    def other_s(self) -> float:
        """Scheduler steps, latent preparation, post-processing: the call minus the timed parts."""
        return self.total_s - self.text_encode_s - self.denoise_s - self.decode_s

    def as_dict(self) -> dict:
        return {**asdict(self), "other_s": self.other_s}


class StageTimer:
    """Hooks on a diffusers pipeline that time its text encoders, denoiser forwards and VAE decode.

    Used as ``with StageTimer(pipe, device) as st: pipe(...)``; then ``st.times``. The hooks
    are removed on exit and leave the pipeline as it was. On the NPU each hook synchronises,
    which adds a little time to every denoiser step; on CUDA the hooks only record events.
    """

    def __init__(self, pipe, device="cpu", clock: Callable[[], float] | None = None):
        self.pipe = pipe
        self.dc = DeviceClock(device, clock)
        self.times = StageTimes()
        self._marks: list[tuple[str, Any, Any]] = []
        self._handles: list = []
        self._patched = None

    def _hook_module(self, module, stage: str) -> None:
        open_marks: list = []

        def pre(_m, _args, _kwargs=None):
            open_marks.append(self.dc.mark())

        def post(_m, _args, _kwargs_or_out, _out=None):
            self._marks.append((stage, open_marks.pop(), self.dc.mark()))

        self._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        self._handles.append(module.register_forward_hook(post, with_kwargs=True))

    def __enter__(self) -> "StageTimer":
        pipe = self.pipe
        denoiser = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
        if denoiser is None:
            raise ValueError(f"{type(pipe).__name__} has no transformer or unet to time")
        self._hook_module(denoiser, "denoise_s")
        for name in TEXT_ENCODERS:
            enc = getattr(pipe, name, None)
            if isinstance(enc, torch.nn.Module):
                self._hook_module(enc, "text_encode_s")
        vae = getattr(pipe, "vae", None)
        if vae is not None and hasattr(vae, "decode"):
            original = vae.decode
            had_own = "decode" in vars(vae)

            def decode(*args, **kwargs):
                t0 = self.dc.mark()
                out = original(*args, **kwargs)
                self._marks.append(("decode_s", t0, self.dc.mark()))
                return out

            vae.decode = decode
            self._patched = (vae, original, had_own)
        self._start = self.dc.mark()
        return self

    def __exit__(self, *exc) -> None:
        end = self.dc.mark()
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self._patched is not None:
            vae, original, had_own = self._patched
            if had_own:
                vae.decode = original
            else:
                del vae.decode
            self._patched = None
        t = StageTimes(total_s=self.dc.seconds(self._start, end))
        for stage, a, b in self._marks:
            setattr(t, stage, getattr(t, stage) + self.dc.seconds(a, b))
            t.denoiser_calls += stage == "denoise_s"
        self.times = t


def measure_stages(
    pipe,
    fn: Callable[[], Any],
    device="cpu",
    warmup: int = 1,
    repeats: int = 3,
    clock: Callable[[], float] | None = None,
) -> tuple[dict[str, LatencyStats], Any]:
    """Run ``fn`` (one call of ``pipe``) ``repeats`` times under a StageTimer: {stage: LatencyStats}, last output."""
    out = None
    for _ in range(warmup):
        out = fn()
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    for _ in range(repeats):
        with StageTimer(pipe, device, clock) as st:
            out = fn()
        d = st.times.as_dict()
        for s in STAGES:
            per_stage[s].append(d[s])
    return {s: summarize(v) for s, v in per_stage.items()}, out


__all__ = [
    "Comparison",
    "DeviceClock",
    "LatencyStats",
    "StageTimer",
    "StageTimes",
    "compare_interleaved",
    "measure",
    "measure_stages",
    "peak_memory_bytes",
    "reset_peak_memory",
    "summarize",
]
