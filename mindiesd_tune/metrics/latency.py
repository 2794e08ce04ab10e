"""Latency you can trust: warm-up, device synchronisation, repeats, median and IQR, interleaved baselines.

On CUDA a call is timed with CUDA events (GPU time between two points of the stream); on an
Ascend NPU the host waits for the device (``torch.npu.synchronize``) before reading the clock;
the CPU runs eagerly and needs no synchronisation. A speed-up is the central ratio
(Hodges-Lehmann, ``speed_interval``) of baseline and candidate calls made one right after the
other (``compare_interleaved``), so drift in clocks, thermals or other load touches both sides
alike; its interval says how far to trust it. On the CPU each call's process CPU time is recorded
beside its wall time: a busy machine stretches the wall time of a call, not the CPU time it needs.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

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
    cpu_s: float | None = None  # median process CPU seconds per call, on the CPU device

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


def summarize(samples: list[float], peak: int | None = None, cpu: list[float] | None = None) -> LatencyStats:
    if not samples:
        raise ValueError("no latency samples")
    q1, med, q3 = quartiles(samples)
    return LatencyStats(med, q3 - q1, min(samples), list(samples), peak, statistics.median(cpu) if cpu else None)


# A 95% interval: a speed-up whose interval includes 1.0 is not told apart from the baseline.
INTERVAL_LEVEL = 0.95


def speed_interval(ratios: Sequence[float], level: float = INTERVAL_LEVEL) -> tuple[float, float, float]:
    """(speed-up, low, high) of paired baseline/candidate ratios.

    The speed-up is the Hodges-Lehmann estimate on the log scale: the median of the averages of
    every pair of log ratios (each with itself included), exponentiated. It is the median ratio's
    robust cousin: a few rounds that a burst of load hit move it no more than they move the
    median, but it uses every round's size, not only its rank. Beside a CPU-bound process on
    2 cores, 36 rounds gave a ±9.5% interval where the median's bootstrap interval was ±15%
    (80 rounds of demo-flux against its schedule preset, subsampled). The interval is the
    distribution-free one that goes with it: order statistics of those pairwise averages placed
    by the Wilcoxon signed-rank statistic (normal approximation), so the same samples always give
    the same interval. Below 6 ratios no pair of order statistics reaches 95%: the interval is
    the range of the ratios, which covers the true one with probability 1 - 2^(1-n) (50% at 2,
    87.5% at 4): a first look, not a 95% statement."""
    import numpy as np

    r = np.asarray([x for x in ratios if np.isfinite(x) and x > 0], dtype=float)
    n = r.size
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    i, j = np.triu_indices(n)
    # the mean of two log ratios, back on the ratio scale: their geometric mean (exact when equal)
    walsh = np.sort(np.sqrt(r[i] * r[j]))
    m = walsh.size
    centre = float(walsh[m // 2]) if m % 2 else math.sqrt(float(walsh[m // 2 - 1]) * float(walsh[m // 2]))
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2.0)
    # the k-th smallest and k-th largest of them bound the centre at ``level``
    k = int(math.floor(m / 2.0 - z * math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)))
    k = min(max(k, 0), (m - 1) // 2)
    low, high = float(walsh[k]), float(walsh[m - 1 - k])
    return centre, min(low, centre), max(high, centre)


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
    cpu_clock: Callable[[], float] | None = None,
) -> tuple[LatencyStats, Any]:
    """Time ``fn`` and return its statistics and the output of the last call.

    On the CPU, ``cpu_clock`` (the process CPU time by default) is read around each call too."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    dc = DeviceClock(device, clock)
    cpu_clock = _cpu_clock(device, cpu_clock)
    out = None
    for _ in range(warmup):
        out = fn()
    synchronize(device)
    reset_peak_memory(device)
    samples, cpu = [], []
    for _ in range(repeats):
        c0 = cpu_clock() if cpu_clock else None
        t0 = dc.mark()
        out = fn()
        samples.append(dc.seconds(t0, dc.mark()))
        if cpu_clock:
            cpu.append(cpu_clock() - c0)
    return summarize(samples, peak_memory_bytes(device), cpu), out


def _cpu_clock(device, given: Callable[[], float] | None) -> Callable[[], float] | None:
    if given is not None:
        return given
    return time.process_time if torch.device(device).type == "cpu" else None


# ---------------------------------------------------------------------------- baseline against candidate


@dataclass
class Comparison:
    """Baseline and candidate timed in the same run, interleaved. ``speedup`` is the central value
    (``speed_interval``) of the per-round ratios baseline/candidate; ``speedup_low``/``speedup_high``
    its interval."""

    baseline: LatencyStats
    candidate: LatencyStats
    speedup: float
    speedup_iqr: float  # spread of the per-round ratios
    speedup_low: float | None = None
    speedup_high: float | None = None
    ratios: list[float] | None = None

    @property
    def relative_spread(self) -> float:
        """How far the interval reaches from the speed-up, as a share of it (0.1: within ±10%);
        inf without an interval."""
        med, low, high = self.speedup, self.speedup_low, self.speedup_high
        if low is None or high is None or not med or med != med:
            return float("inf")
        return max(high / med - 1.0, 1.0 - low / med)

    @classmethod
    def of(cls, baseline: LatencyStats, candidate: LatencyStats, ratios: list[float]) -> "Comparison":
        q1, _, q3 = quartiles(ratios) if ratios else (float("nan"),) * 3
        med, low, high = speed_interval(ratios)
        return cls(baseline, candidate, med, q3 - q1, low, high, list(ratios))

    @classmethod
    def pooled(cls, parts: Sequence["Comparison"]) -> "Comparison":
        """Several comparisons (one per prompt) as one: their samples and ratios together."""
        def joined(side):
            stats = [getattr(c, side) for c in parts]
            peaks = [s.peak_memory_bytes for s in stats if s.peak_memory_bytes is not None]
            cpu = [s.cpu_s for s in stats if s.cpu_s is not None]
            return summarize([x for s in stats for x in s.samples], max(peaks) if peaks else None, cpu or None)

        return cls.of(joined("baseline"), joined("candidate"), [r for c in parts for r in (c.ratios or [])])

    def as_dict(self) -> dict:
        return {"baseline": self.baseline.as_dict(), "candidate": self.candidate.as_dict(), "speedup": self.speedup,
                "speedup_iqr": self.speedup_iqr, "speedup_low": self.speedup_low, "speedup_high": self.speedup_high,
                "ratios": list(self.ratios) if self.ratios is not None else None}

    @classmethod
    def from_dict(cls, d: dict) -> "Comparison":
        """``as_dict``'s inverse (what a worker process sent back). The ratios come along, so two
        halves of one measurement pool (``pooled``) into exactly the one measurement."""
        def stats(side: dict) -> LatencyStats:
            return LatencyStats(side["median_s"], side.get("iqr_s", 0.0), side.get("min_s", side["median_s"]),
                                list(side.get("samples") or [side["median_s"]]), side.get("peak_memory_bytes"),
                                side.get("cpu_s"))

        base, cand = stats(d["baseline"]), stats(d["candidate"])
        ratios = list(d["ratios"]) if d.get("ratios") else None
        if d.get("speedup_low") is None and ratios:
            return cls.of(base, cand, ratios)
        return cls(base, cand, d["speedup"], d.get("speedup_iqr", 0.0), d.get("speedup_low"), d.get("speedup_high"), ratios)


def compare_interleaved(
    baseline: Callable[[], Any],
    candidate: Callable[[], Any],
    device="cpu",
    warmup: int = 1,
    repeats: int = 3,
    clock: Callable[[], float] | None = None,
    candidate_setup: Callable[[], Callable[[], Any]] | None = None,
    cpu_clock: Callable[[], float] | None = None,
    baseline_setup: Callable[[], Callable[[], Any]] | None = None,
    first_round: int = 0,
) -> tuple[Comparison, Any, Any]:
    """Time ``baseline`` and ``candidate`` alternately (AB, BA, AB, ...) and return their ratio.

    Returns the comparison and the last output of each. Peak memory is taken per side.
    ``candidate_setup``, when given, runs untimed before every candidate call and returns the
    teardown that runs untimed after it: ``lambda: accel.apply(pipe, cfg).remove``;
    ``baseline_setup`` the same for the baseline side, when that side is itself a setting (one
    setting timed against another). ``first_round``: the index of the first round, so a
    measurement that goes on from an earlier one keeps the AB/BA alternation (1 starts with BA).
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    sides = _Interleaved({"baseline": baseline, "candidate": candidate}, {"baseline": baseline_setup, "candidate": candidate_setup},
                         device, DeviceClock(device, clock), _cpu_clock(device, cpu_clock))
    for _ in range(warmup):
        for side in sides.SIDES:
            sides.run(side, timed=False)
    for r in range(repeats):
        for side in sides.SIDES if (r + first_round) % 2 == 0 else reversed(sides.SIDES):
            sides.run(side, timed=True)
    return sides.comparison(), sides.outs["baseline"], sides.outs["candidate"]


class _Interleaved:
    """One interleaved measurement's calls and what they left per side: the last output, the
    timed samples, the CPU times and the peak memory."""

    SIDES = ("baseline", "candidate")

    def __init__(self, fns: dict, setups: dict, device, dc: DeviceClock, cpu_clock: Callable[[], float] | None):
        self.fns, self.setups, self.device, self.dc, self.cpu_clock = fns, setups, device, dc, cpu_clock
        self.outs: dict[str, Any] = dict.fromkeys(self.SIDES)
        self.samples: dict[str, list[float]] = {s: [] for s in self.SIDES}
        self.cpu: dict[str, list[float]] = {s: [] for s in self.SIDES}
        self.peaks: dict[str, int | None] = dict.fromkeys(self.SIDES)

    def run(self, side: str, timed: bool) -> None:
        setup = self.setups[side]
        teardown = setup() if setup is not None else None
        try:
            synchronize(self.device)
            reset_peak_memory(self.device)
            c0 = self.cpu_clock() if self.cpu_clock else None
            t0 = self.dc.mark()
            self.outs[side] = self.fns[side]()
            if timed:
                self.samples[side].append(self.dc.seconds(t0, self.dc.mark()))
                if self.cpu_clock:
                    self.cpu[side].append(self.cpu_clock() - c0)
                peak = peak_memory_bytes(self.device)
                if peak is not None:
                    self.peaks[side] = max(self.peaks[side] or 0, peak)
        finally:
            if teardown is not None:
                teardown()

    def comparison(self) -> Comparison:
        base, cand = (summarize(self.samples[s], self.peaks[s], self.cpu[s]) for s in self.SIDES)
        # each round's two calls ran back to back: their ratio is what a change of load cannot bend
        ratios = [b / c if c > 0 else float("inf") for b, c in zip(self.samples["baseline"], self.samples["candidate"])]
        return Comparison.of(base, cand, ratios)


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
    "speed_interval",
    "summarize",
]
