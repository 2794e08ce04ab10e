"""The evaluator holds the loaded pipeline and scores one AccelConfig: latency and fidelity."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import accel
from ..metrics import fidelity, measure
from ..models import LoadedModel

DEFAULT_PROMPTS = (
    "a red circle on a blue background",
    "a large yellow triangle at the top left on a black background",
)
DEFAULT_VIDEO_PROMPTS = (
    "a red circle on a blue background moving left",
    "a white square on a green background moving up",
)


class TrialPrunedEarly(Exception):
    """The first prompt already broke a quality floor by more than the margin."""

    def __init__(self, reason: str, partial: dict[str, Any]):
        super().__init__(reason)
        self.reason = reason
        self.partial = partial


@dataclass
class Workload:
    """The fixed prompts, seeds and call settings every trial runs."""

    prompts: list[str]
    seeds: list[int]
    generation: dict[str, Any]

    def __post_init__(self):
        if not self.prompts:
            raise ValueError("a workload needs at least one prompt")
        if len(self.seeds) != len(self.prompts):
            raise ValueError("give one seed per prompt")


@dataclass
class TrialResult:
    latency: Any  # metrics.LatencyStats
    metrics: dict[str, float]
    counters: dict[str, Any]
    outputs: list[np.ndarray] = field(repr=False)
    eval_seconds: float = 0.0

    @property
    def has_nan(self) -> bool:
        return any(not np.isfinite(o).all() for o in self.outputs)

    def to_message(self) -> dict[str, Any]:
        """What crosses the process boundary: numbers, and the first output as uint8 for the report."""
        return {
            "latency": self.latency.as_dict(),
            "metrics": self.metrics,
            "counters": self.counters,
            "sample": to_uint8(self.outputs[0]),
            "eval_seconds": self.eval_seconds,
        }


class Evaluator:
    """Runs the workload on one pipeline; the baseline outputs are computed once and cached."""

    def __init__(self, loaded: LoadedModel, workload: Workload, warmup: int = 1, repeats: int = 3, baseline_store=None):
        self.baseline_store = baseline_store  # metrics.BaselineStore: reuse baseline outputs across studies
        self.loaded = loaded
        self.pipe = loaded.pipe
        self.workload = workload
        self.warmup = warmup
        self.repeats = repeats
        self.device = self.pipe.device if hasattr(self.pipe, "device") else torch.device("cpu")
        self._baseline: list[np.ndarray] | None = None

    def generate(self, prompt: str, seed: int) -> np.ndarray:
        """One pipeline call -> float32 array in [0, 1]: (H, W, C) image or (F, H, W, C) video."""
        generator = torch.Generator(device="cpu").manual_seed(seed)
        out = self.pipe(prompt=prompt, generator=generator, output_type="np", **self.workload.generation)
        arr = out.frames if self.loaded.is_video else out.images
        return np.asarray(arr[0], dtype=np.float32)

    @property
    def baseline(self) -> list[np.ndarray]:
        if self._baseline is None:
            with torch.inference_mode():
                if self.baseline_store is None:
                    self._baseline = self._generate_all()
                else:
                    self._baseline = self.baseline_store.get_or_compute(self.baseline_key(), self._generate_all).outputs
        return self._baseline

    def _generate_all(self) -> list[np.ndarray]:
        return [self.generate(p, s) for p, s in zip(self.workload.prompts, self.workload.seeds)]

    def baseline_key(self):
        """What the stored baseline is keyed by: model fingerprint, prompts, seeds, call settings, device type."""
        from ..metrics import BaselineKey
        from ..profile import model_fingerprint

        w = self.workload
        return BaselineKey.for_workload(model_fingerprint(self.pipe), w.prompts, w.seeds, w.generation, torch.device(self.device).type)

    @property
    def baseline_metrics(self) -> dict[str, float]:
        """The metrics of the baseline against itself: what relative floors scale."""
        return {k: _mean([fidelity(b, b)[k] for b in self.baseline]) for k in ("psnr", "ssim")}

    def evaluate(self, config: accel.AccelConfig, constraints=None, prune_margin: float | None = None) -> TrialResult:
        """Apply ``config``, time the first prompt, score it; prune early or score the rest; remove.

        With ``constraints`` and ``prune_margin``, a first prompt that already misses a
        quality floor by more than the margin raises TrialPrunedEarly instead of running
        the remaining prompts.
        """
        t_start = time.perf_counter()
        baseline = self.baseline
        handle = accel.apply(self.pipe, config)
        try:
            with torch.inference_mode():
                p0, s0 = self.workload.prompts[0], self.workload.seeds[0]

                def call():
                    handle.reset_stats()  # so the counters describe exactly one call
                    return self.generate(p0, s0)

                latency, first = measure(call, self.device, self.warmup, self.repeats)
                counters = handle.stats()
                outputs = [first]
                scores = [fidelity(first, baseline[0])]
                if constraints is not None and prune_margin is not None and len(self.workload.prompts) > 1:
                    self._prune_early(constraints, prune_margin, scores[0], latency, counters, first)
                for (p, s), b in zip(list(zip(self.workload.prompts, self.workload.seeds))[1:], baseline[1:]):
                    outputs.append(self.generate(p, s))
                    scores.append(fidelity(outputs[-1], b))
        finally:
            handle.remove()
        metrics = {k: _mean([s[k] for s in scores]) for k in scores[0]}
        return TrialResult(latency, metrics, counters, outputs, time.perf_counter() - t_start)

    def _prune_early(self, constraints, margin, first_scores, latency, counters, first) -> None:
        base = self.baseline_metrics
        for f in constraints.floors:
            value = first_scores.get(f.metric)
            if value is not None and f.breaks_by(value, margin, base.get(f.metric)):
                partial = {"latency": latency.as_dict(), "metrics": dict(first_scores), "counters": counters,
                           "sample": to_uint8(first)}
                raise TrialPrunedEarly(f"first prompt {f.metric} {value:.4g} misses {f} by more than {margin:.0%}", partial)


def _mean(values: list[float]) -> float:
    if any(math.isinf(v) for v in values):
        finite = [v for v in values if not math.isinf(v)]
        # all identical -> inf; otherwise the finite ones speak for the differing prompts
        return math.inf if not finite else float(np.mean(finite))
    return float(np.mean(values))


def to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0).round().astype(np.uint8)
