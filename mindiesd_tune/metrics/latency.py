"""Latency you can trust: warm-up, device synchronisation, repeats, median and spread."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from ..kernels import peak_memory_bytes, reset_peak_memory, synchronize


@dataclass
class LatencyStats:
    """Seconds per call over ``repeats`` timed calls after ``warmup`` untimed ones."""

    median_s: float
    iqr_s: float
    min_s: float
    samples: list[float]
    peak_memory_bytes: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(samples: list[float], peak: int | None = None) -> LatencyStats:
    if not samples:
        raise ValueError("no latency samples")
    s = sorted(samples)
    if len(s) >= 4:
        q1, _, q3 = statistics.quantiles(s, n=4, method="inclusive")
        iqr = q3 - q1
    else:
        iqr = s[-1] - s[0]
    return LatencyStats(statistics.median(s), iqr, s[0], list(samples), peak)


def measure(
    fn: Callable[[], Any],
    device="cpu",
    warmup: int = 1,
    repeats: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[LatencyStats, Any]:
    """Time ``fn`` and return its statistics and the output of the last call."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    out = None
    for _ in range(warmup):
        out = fn()
    synchronize(device)
    reset_peak_memory(device)
    samples = []
    for _ in range(repeats):
        t0 = clock()
        out = fn()
        synchronize(device)
        samples.append(clock() - t0)
    return summarize(samples, peak_memory_bytes(device)), out
