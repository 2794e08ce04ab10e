"""The evaluator holds the loaded pipeline and scores one AccelConfig: latency and fidelity."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import accel
from ..metrics import FIDELITY_METRICS, compare_interleaved, fidelity, measure
from ..models import LoadedModel


class TrialAborted(BaseException):
    """The running trial was aborted (a second Ctrl-C). A BaseException, as KeyboardInterrupt is,
    so that no ``except Exception`` in a pipeline or an accelerator swallows it on its way out."""


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
    baseline_latency: Any = None  # metrics.LatencyStats of the baseline, timed interleaved with this trial
    speedup: float | None = None  # baseline median / trial median, from the same interleaved run
    speedup_iqr: float | None = None

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
            "baseline_latency": self.baseline_latency.as_dict() if self.baseline_latency is not None else None,
            "speedup": self.speedup,
            "speedup_iqr": self.speedup_iqr,
        }


class Evaluator:
    """Runs the workload on one pipeline; the baseline outputs are computed once and cached."""

    def __init__(self, loaded: LoadedModel, workload: Workload, warmup: int = 1, repeats: int = 3, baseline_store=None,
                 metrics=("psnr", "ssim"), clip_model: str | None = None, interleave: bool = True):
        """``metrics``: what every trial reports (psnr and ssim always; ms_ssim, lpips, clip on request).
        ``interleave``: time the baseline alternately with each trial, so its speed-up is a ratio
        measured in one run rather than against a baseline timed minutes earlier."""
        self.baseline_store = baseline_store  # metrics.BaselineStore: reuse baseline outputs across studies
        self.fidelity_metrics = tuple(dict.fromkeys(("psnr", "ssim") + tuple(m for m in metrics if m in FIDELITY_METRICS)))
        self.clip = None
        if "clip" in metrics:
            from ..metrics import default_clip_model, get_scorer
            from ..metrics.clip_score import how_to_supply

            spec = clip_model or default_clip_model(loaded.name)
            if spec is None:
                from ..errors import UserError

                raise UserError("clip: " + how_to_supply())
            self.clip = get_scorer(spec)
        self.interleave = interleave
        self.loaded = loaded
        self.pipe = loaded.pipe
        self.workload = workload
        self.warmup = warmup
        self.repeats = repeats
        self.device = self.pipe.device if hasattr(self.pipe, "device") else torch.device("cpu")
        self._baseline: list[np.ndarray] | None = None
        # set from another thread to abort the running call at its next denoising step
        self.abort = threading.Event()

    def _check_abort(self, module, args) -> None:
        if self.abort.is_set():
            raise TrialAborted()

    def generate(self, prompt: str, seed: int, overrides: dict | None = None) -> np.ndarray:
        """One pipeline call -> float32 array in [0, 1]: (H, W, C) image or (F, H, W, C) video.

        ``overrides`` are the applied config's call settings (``handle.call_overrides``, e.g. a
        reduced step count), laid over the workload's.
        """
        generator = torch.Generator(device="cpu").manual_seed(seed)
        settings = {**self.workload.generation, **(overrides or {})}
        # a pre-hook on the denoiser fires once per denoising step (per CFG branch), whatever
        # the pipeline and whatever an accelerator did to the blocks inside it
        self._check_abort(None, None)
        try:
            hook = accel.find_denoiser(self.pipe).register_forward_pre_hook(self._check_abort)
        except accel.UnsupportedModelError:  # nothing to hook: the call runs to its end
            hook = None
        try:
            out = self.pipe(prompt=prompt, generator=generator, output_type="np", **settings)
        finally:
            if hook is not None:
                hook.remove()
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

    def score(self, output: np.ndarray, index: int) -> dict[str, float]:
        """Every requested metric of one output against the baseline output of the same prompt."""
        scores = fidelity(output, self.baseline[index], self.fidelity_metrics)
        if self.clip is not None:
            scores["clip"] = self.clip.score([output], [self.workload.prompts[index]])
        return scores

    @property
    def baseline_metrics(self) -> dict[str, float]:
        """The metrics of the baseline against itself: what relative floors scale."""
        if getattr(self, "_baseline_metrics", None) is None:
            scores = [self.score(b, i) for i, b in enumerate(self.baseline)]
            self._baseline_metrics = {k: _mean([s[k] for s in scores]) for k in scores[0]}
        return self._baseline_metrics

    def evaluate(self, config: accel.AccelConfig, constraints=None, prune_margin: float | None = None) -> TrialResult:
        """Apply ``config``, time the first prompt, score it; prune early or score the rest; remove.

        With ``constraints`` and ``prune_margin``, a first prompt that already misses a
        quality floor by more than the margin raises TrialPrunedEarly instead of running
        the remaining prompts.
        """
        t_start = time.perf_counter()
        self.baseline  # noqa: B018  (computed once, before any timing)
        p0, s0 = self.workload.prompts[0], self.workload.seeds[0]
        comparison = None
        with torch.inference_mode():
            if self.interleave:
                handles: list = []

                def setup():  # untimed, around every candidate call
                    handles.append(accel.apply(self.pipe, config))
                    return handles[-1].remove

                comparison, _, first = compare_interleaved(
                    lambda: self.generate(p0, s0), lambda: self.generate(p0, s0, handles[-1].call_overrides), self.device,
                    self.warmup, self.repeats, candidate_setup=setup,
                )
                latency, counters = comparison.candidate, handles[-1].stats()
            t_setup = time.perf_counter()
            handle = accel.apply(self.pipe, config)
            setup = _setup_counters(self.pipe, time.perf_counter() - t_setup)
            try:
                if not self.interleave:

                    def call():
                        handle.reset_stats()  # so the counters describe exactly one call
                        return self.generate(p0, s0, handle.call_overrides)

                    latency, first = measure(call, self.device, self.warmup, self.repeats)
                    counters = handle.stats()
                outputs = [first]
                scores = [self.score(first, 0)]
                if constraints is not None and prune_margin is not None and len(self.workload.prompts) > 1:
                    self._prune_early(constraints, prune_margin, scores[0], latency, counters, first, comparison, t_start)
                for i, (p, s) in enumerate(zip(self.workload.prompts, self.workload.seeds)):
                    if i:
                        outputs.append(self.generate(p, s, handle.call_overrides))
                        scores.append(self.score(outputs[-1], i))
            finally:
                handle.remove()
        metrics = {k: _mean([s[k] for s in scores]) for k in scores[0]}
        return TrialResult(
            latency, metrics, {**counters, **setup}, outputs, time.perf_counter() - t_start,
            baseline_latency=comparison.baseline if comparison else None,
            speedup=comparison.speedup if comparison else None,
            speedup_iqr=comparison.speedup_iqr if comparison else None,
        )

    def _prune_early(self, constraints, margin, first_scores, latency, counters, first, comparison=None, t_start=None) -> None:
        base = self.baseline_metrics
        for f in constraints.floors:
            value = first_scores.get(f.metric)
            if value is not None and f.breaks_by(value, margin, base.get(f.metric)):
                partial = {"latency": latency.as_dict(), "metrics": dict(first_scores), "counters": counters,
                           "sample": to_uint8(first), "speedup": comparison.speedup if comparison else None,
                           "baseline_latency": comparison.baseline.as_dict() if comparison else None,
                           "eval_seconds": time.perf_counter() - t_start if t_start is not None else None}
                raise TrialPrunedEarly(f"first prompt {f.metric} {value:.4g} misses {f} by more than {margin:.0%}", partial)


def _setup_counters(pipe, seconds: float) -> dict[str, Any]:
    """What a trial records besides its latency: the set-up (install, quantising) time, not
    counted as latency, and the linear layers' weight bytes with the config applied."""
    from ..accel.quant import weight_bytes

    per_component = weight_bytes(pipe)
    return {"setup_s": seconds, "weight_bytes": sum(per_component.values()), "weight_bytes_by_component": per_component}


def _mean(values: list[float]) -> float:
    if any(math.isinf(v) for v in values):
        finite = [v for v in values if not math.isinf(v)]
        # all identical -> inf; otherwise the finite ones speak for the differing prompts
        return math.inf if not finite else float(np.mean(finite))
    return float(np.mean(values))


def to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0).round().astype(np.uint8)
