"""The evaluator holds the loaded pipeline and scores one AccelConfig: latency and fidelity."""

from __future__ import annotations

import math
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

    @property
    def has_nan(self) -> bool:
        return any(not np.isfinite(o).all() for o in self.outputs)


class Evaluator:
    """Runs the workload on one pipeline; the baseline outputs are computed once and cached."""

    def __init__(self, loaded: LoadedModel, workload: Workload, warmup: int = 1, repeats: int = 3):
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

    def _run_all(self, first: np.ndarray | None = None) -> list[np.ndarray]:
        outs = [] if first is None else [first]
        for prompt, seed in list(zip(self.workload.prompts, self.workload.seeds))[len(outs):]:
            outs.append(self.generate(prompt, seed))
        return outs

    @property
    def baseline(self) -> list[np.ndarray]:
        if self._baseline is None:
            with torch.inference_mode():
                self._baseline = self._run_all()
        return self._baseline

    def evaluate(self, config: accel.AccelConfig) -> TrialResult:
        """Apply ``config``, time the first prompt, score every prompt against the baseline, remove."""
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
                outputs = self._run_all(first)
        finally:
            handle.remove()
        scores = [fidelity(o, b) for o, b in zip(outputs, baseline)]
        metrics = {k: _mean([s[k] for s in scores]) for k in scores[0]}
        return TrialResult(latency, metrics, counters, outputs)


def _mean(values: list[float]) -> float:
    if any(math.isinf(v) for v in values):
        finite = [v for v in values if not math.isinf(v)]
        # all identical -> inf; otherwise the finite ones speak for the differing prompts
        return math.inf if not finite else float(np.mean(finite))
    return float(np.mean(values))


def to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0).round().astype(np.uint8)
