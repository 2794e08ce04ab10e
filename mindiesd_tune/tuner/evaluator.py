"""The evaluator holds the loaded pipeline and scores one AccelConfig: latency and fidelity."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import accel
from ..metrics import FIDELITY_METRICS, Comparison, compare_interleaved, fidelity, measure
from ..models import LoadedModel
from ..quality import aggregate

# The machine got busier when the baseline's latest timing spreads this many times wider than
# its usual spread (relative IQR), or its level moved by this share from its usual level.
DRIFT_SPREAD_FACTOR = 2.0
DRIFT_LEVEL_SHARE = 0.15
# Without interleaving the baseline is re-timed every this many trials, every trial when busy.
RETIME_EVERY = 4
# Below 6 rounds the 95% interval of the speed-up is the range of the rounds, which covers the
# true ratio less often (87.5% at 4: all four rounds one way by chance one time in eight; beside
# a CPU-bound process the baseline trial once read 1.28x [1.06-1.54] against itself so). The
# unaccelerated point is timed with at least this many rounds.
NEUTRAL_MIN_ROUNDS = 6
# a confirmation that has not reached its precision stops after this many times its first pass
CONFIRM_MAX_FACTOR = 16


def _fresh_compile(config: accel.AccelConfig) -> None:
    """Before a config that compiles: drop the graphs earlier trials compiled. Dynamo keeps
    every graph with its guards on the block's code, so each config a study compiled (another
    cache hook, quantised weights, another attention backend) would count towards its recompile
    limit. The first, untimed call of the trial compiles afresh; later calls of the same trial
    reuse it.

    Past that limit Dynamo runs the frame eagerly with a warning, which a deployment may prefer
    to an error; here it would time eager blocks under a compile label, so in the evaluator's
    process it fails the trial instead."""
    if config.compile.mode != "none":
        torch._dynamo.reset()
        torch._dynamo.config.fail_on_recompile_limit_hit = True


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

    def calls(self) -> list[tuple[str, int]]:
        """The (prompt, seed) of each call in order: what the baseline, a trial, the confirmation and
        bench go round."""
        return list(zip(self.prompts, self.seeds))


@dataclass
class TrialResult:
    latency: Any  # metrics.LatencyStats
    metrics: dict[str, float]
    counters: dict[str, Any]
    outputs: list[np.ndarray] = field(repr=False)
    eval_seconds: float = 0.0
    baseline_latency: Any = None  # metrics.LatencyStats of the baseline, timed interleaved with this trial
    speedup: float | None = None  # central baseline/trial ratio of the same interleaved run (metrics.speed_interval)
    speedup_iqr: float | None = None
    speedup_low: float | None = None  # the speed-up's interval (metrics.speed_interval)
    speedup_high: float | None = None
    timing: dict | None = None  # how it was timed: repeats, and whether the machine looked busier
    per_prompt: list[dict[str, float]] | None = None  # each prompt's scores, in the workload's order

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
            "speedup_low": self.speedup_low,
            "speedup_high": self.speedup_high,
            "timing": self.timing,
            "per_prompt": self.per_prompt,
        }


class Evaluator:
    """Runs the workload on one pipeline; the baseline outputs are computed once and cached."""

    def __init__(self, loaded: LoadedModel, workload: Workload, warmup: int = 1, repeats: int = 3, baseline_store=None,
                 metrics=("psnr", "ssim"), clip_model: str | None = None, interleave: bool = True,
                 fvd_weights: str | None = None, holdout: Workload | None = None):
        """``metrics``: what every trial reports (psnr and ssim always; ms_ssim, lpips, clip on request;
        the set distances of ``tuner.sets``). ``interleave``: time the baseline alternately with
        each trial, so its speed-up is a ratio measured in one run rather than against a baseline
        timed minutes earlier. ``holdout``: prompts the search never sees, on which ``heldout``
        scores a point at the end."""
        from .sets import NAMES as SET_NAMES

        self.baseline_store = baseline_store  # metrics.BaselineStore: reuse baseline outputs across studies
        self.fidelity_metrics = tuple(dict.fromkeys(("psnr", "ssim") + tuple(m for m in metrics if m in FIDELITY_METRICS)))
        sets = tuple(m for m in metrics if m in SET_NAMES)
        self.clip = None
        if "clip" in metrics or any(m.endswith("_clip") for m in sets):
            from ..metrics import default_clip_model, get_scorer
            from ..metrics.clip_score import how_to_supply

            spec = clip_model or default_clip_model(loaded.name)
            if spec is None:
                from ..errors import UserError

                raise UserError("clip: " + how_to_supply())
            self.clip = get_scorer(spec)
        self.set_metrics = None  # the set distances asked for (tuner.sets)
        if sets:
            from .sets import SetMetrics

            if len(workload.prompts) < 2:
                from ..errors import UserError

                raise UserError(f"{', '.join(sets)} compares sets of outputs: the study needs 2 or more prompts")
            self.set_metrics = SetMetrics(sets, loaded.is_video, self.clip, fvd_weights)
        self.scores_clip = "clip" in metrics
        self.interleave = interleave
        self.holdout = holdout
        self._holdout_baseline: list[np.ndarray] | None = None
        self.loaded = loaded
        self.pipe = loaded.pipe
        self.workload = workload
        self.warmup = warmup
        self.repeats = repeats
        self.device = self.pipe.device if hasattr(self.pipe, "device") else torch.device("cpu")
        self._baseline: list[np.ndarray] | None = None
        self._baseline_timings: list = []  # the baseline's LatencyStats, trial after trial
        self._baseline_timed_at = -1  # trial count when the baseline was last timed (no interleaving)
        self._trials = 0
        self._screened = None  # (config identity, first output, its scores) of the last screen
        # set from another thread to abort the running call at its next denoising step
        self.abort = threading.Event()
        # rank 0 of a rank group (``tuner.rankgroup.Leader.lead``): its meshed installs and calls
        # are repeated by the other ranks; None: this process alone
        self.mirror = None

    def apply(self, config: accel.AccelConfig) -> accel.Handle:
        """``config`` installed on the pipeline (announced to the ranks that follow this one)."""
        return accel.apply(self.pipe, config, mirror=self.mirror)

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
            with self.mirror.call(prompt, seed, overrides) if self.mirror is not None else contextlib.nullcontext():
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
        return [self.generate(p, s) for p, s in self.workload.calls()]

    def baseline_key(self):
        """What the stored baseline is keyed by: model fingerprint, prompts, seeds, call settings, device type."""
        from ..metrics import BaselineKey
        from ..profile import model_fingerprint

        w = self.workload
        return BaselineKey.for_workload(model_fingerprint(self.pipe), w.prompts, w.seeds, w.generation, torch.device(self.device).type)

    def score(self, output: np.ndarray, index: int) -> dict[str, float]:
        """Every requested metric of one output against the baseline output of the same prompt."""
        return self._score(output, self.baseline[index], self.workload.prompts[index])

    def _score(self, output: np.ndarray, reference: np.ndarray, prompt: str) -> dict[str, float]:
        scores = fidelity(output, reference, self.fidelity_metrics)
        if self.clip is not None and self.scores_clip:
            scores["clip"] = self.clip.score([output], [prompt])
        return scores

    def heldout(self, config: accel.AccelConfig) -> dict[str, Any]:
        """``config``'s quality on the held-out prompts, which no trial ran: one call per prompt
        with it applied, each scored against the baseline's output for that prompt (computed
        once, on first use) -> ``{"prompts", "per_prompt", "metrics"}``, the metrics with their
        aggregates and set distances as a trial's."""
        w = self.holdout
        with torch.inference_mode():
            if self._holdout_baseline is None:
                self._holdout_baseline = [self.generate(p, s) for p, s in w.calls()]
            _fresh_compile(config)
            handle = self.apply(config)
            try:
                outputs = [self.generate(p, s, handle.call_overrides) for p, s in w.calls()]
            finally:
                handle.remove()
        scores = [self._score(o, b, p) for o, b, p in zip(outputs, self._holdout_baseline, w.prompts)]
        metrics = aggregate(scores)
        if self.set_metrics and len(outputs) >= 2:
            metrics.update(self.set_metrics.distances(outputs, self._holdout_baseline))
        return {"prompts": list(w.prompts), "per_prompt": scores, "metrics": metrics}

    def _baseline_scores(self) -> list[dict[str, float]]:
        return [self.score(b, i) for i, b in enumerate(self.baseline)]

    @property
    def baseline_metrics(self) -> dict[str, float]:
        """The metrics of the baseline against itself, with their aggregates: what relative floors scale."""
        if getattr(self, "_baseline_metrics", None) is None:
            self._baseline_metrics = {**aggregate(self._baseline_scores()), **self.set_distances(self.baseline)}
        return self._baseline_metrics

    def set_distances(self, outputs: list[np.ndarray]) -> dict[str, float]:
        """The set-level distances asked for, of ``outputs`` to the baseline outputs (``tuner.sets``)."""
        if not self.set_metrics:
            return {}
        return self.set_metrics.distances(outputs, self.baseline)

    def busy(self) -> bool:
        """Whether the baseline's latest timing drifted from its usual spread or level: the machine
        got busier (or quieter), so the coming trials are timed with more rounds."""
        h = self._baseline_timings
        if len(h) < 3:
            return False
        last, earlier = h[-1], h[:-1]
        rel = [t.iqr_s / t.median_s for t in earlier if t.median_s > 0]
        usual_spread = float(np.median(rel)) if rel else 0.0
        usual_level = float(np.median([t.median_s for t in earlier]))
        spread = last.iqr_s / last.median_s if last.median_s > 0 else 0.0
        return (spread > DRIFT_SPREAD_FACTOR * max(usual_spread, 0.01)
                or abs(last.median_s - usual_level) > DRIFT_LEVEL_SHARE * usual_level)

    def _timed_baseline(self, p0, s0, repeats: int, busy: bool):
        """Without interleaving: the baseline's timing on the first prompt, re-timed every few trials
        (every trial while the machine looks busier)."""
        every = 1 if busy else RETIME_EVERY
        if not self._baseline_timings or self._trials - self._baseline_timed_at >= every:
            stats, _ = measure(lambda: self.generate(p0, s0), self.device, self.warmup, repeats)
            self._baseline_timings.append(stats)
            self._baseline_timed_at = self._trials
        return self._baseline_timings[-1]

    def evaluate(self, config: accel.AccelConfig, constraints=None, prune_margin: float | None = None,
                 rounds: int | None = None) -> TrialResult:
        """Apply ``config``, score the first prompt; prune early or time it and score the rest; remove.

        The cheap look comes first: one untimed call on the first prompt. With ``constraints``
        and ``prune_margin``, one that already misses a quality floor by more than the margin
        raises TrialPrunedEarly before anything is timed. Only then is the first prompt timed
        against the baseline (interleaved) and the remaining prompts scored.

        After a ``screen`` of the same config its look stands and its timing pair is the first
        round (the look warmed the point, the screen's pair the baseline), so no warm-up runs.
        The unaccelerated point installs nothing: its outputs are the baseline's, so it is only
        timed against itself, ``rounds`` rounds (default NEUTRAL_MIN_ROUNDS) with no warm-up.
        """
        t_start = time.perf_counter()
        self.baseline  # noqa: B018  (computed once, before any timing)
        screened = self._take_screened(config)
        if screened is None:
            _fresh_compile(config)  # after a screen its graphs are this config's: kept
        p0, s0 = self.workload.prompts[0], self.workload.seeds[0]
        busy = self.busy()
        # an even number of rounds: as many AB as BA, so a machine that slows down (or speeds up)
        # through the trial biases neither side of the ratios
        repeats = balanced(rounds or (self.repeats * 2 if busy else self.repeats))
        if config.is_neutral and self.interleave:
            return self._neutral(config, rounds or max(repeats, NEUTRAL_MIN_ROUNDS), busy, t_start)
        self._trials += 1
        with torch.inference_mode():
            if screened is not None:  # the screen's untimed look on the first prompt stands
                first, scores, pair = screened[0], [dict(screened[1])], screened[2]
            else:
                first, scores = self._look(config, constraints, prune_margin, t_start)
                pair = None
            if self.interleave:
                if pair is None:
                    comparison, first, counters = self._compare(config, p0, s0, repeats)
                else:
                    rest, first, counters = self._compare(config, p0, s0, repeats - 1, warmup=0, first_round=1)
                    comparison = Comparison.pooled([pair, rest])
                latency = comparison.candidate
            t_setup = time.perf_counter()
            handle = self.apply(config)
            setup = _setup_counters(self.pipe, time.perf_counter() - t_setup)
            try:
                if not self.interleave:
                    comparison, first, counters = self._timed_apart(handle, p0, s0, repeats, busy)
                    latency = comparison.candidate
                outputs = [first]
                for i, (p, s) in enumerate(self.workload.calls()):
                    if i:
                        outputs.append(self.generate(p, s, handle.call_overrides))
                        scores.append(self.score(outputs[-1], i))
            finally:
                handle.remove()
        return self._result(latency, scores, {**counters, **setup}, outputs, t_start, comparison,
                            {"repeats": len(comparison.ratios or []) or repeats, "busy": busy})

    def _timed_apart(self, handle, p0: str, s0: int, repeats: int, busy: bool):
        """Without interleaving: the applied config timed on the first prompt against the baseline's
        latest timing -> (comparison, its output, the counters of one call)."""
        base = self._timed_baseline(p0, s0, repeats, busy)

        def call():
            handle.reset_stats()  # so the counters describe exactly one call
            return self.generate(p0, s0, handle.call_overrides)

        latency, first = measure(call, self.device, self.warmup, repeats)
        ratios = [b / c if c > 0 else math.inf for b, c in zip(base.samples, latency.samples)]
        return Comparison.of(base, latency, ratios), first, handle.stats()

    def _neutral(self, config: accel.AccelConfig, rounds: int, busy: bool, t_start: float) -> TrialResult:
        """The unaccelerated point: the baseline timed against itself (the study's check on its
        own timing noise). It installs nothing, so its outputs and scores are the baseline's."""
        self._trials += 1
        p0, s0 = self.workload.prompts[0], self.workload.seeds[0]
        with torch.inference_mode():
            comparison, _, counters = self._compare(config, p0, s0, rounds, warmup=0)
        setup = _setup_counters(self.pipe, 0.0)  # it installs nothing: no set-up to time
        return self._result(comparison.candidate, self._baseline_scores(), {**counters, **setup}, list(self.baseline),
                            t_start, comparison, {"repeats": rounds, "busy": busy})

    def _result(self, latency, scores, counters, outputs, t_start, comparison, timing) -> TrialResult:
        """The trial's result: its per-prompt scores, their aggregates (``mindiesd_tune.quality``) and the
        set-level distances of its outputs to the baseline's."""
        metrics = {**aggregate(scores), **self.set_distances(outputs)}
        return TrialResult(
            latency, metrics, counters, outputs, time.perf_counter() - t_start,
            baseline_latency=comparison.baseline, speedup=comparison.speedup, speedup_iqr=comparison.speedup_iqr,
            speedup_low=comparison.speedup_low, speedup_high=comparison.speedup_high, timing=timing,
            per_prompt=[dict(s) for s in scores],
        )

    def _look(self, config: accel.AccelConfig, constraints, prune_margin, t_start: float):
        """One untimed call on the first prompt with ``config`` applied, scored; raises
        TrialPrunedEarly when it misses a floor by more than the margin -> (output, [scores])."""
        p0, s0 = self.workload.prompts[0], self.workload.seeds[0]
        handle = self.apply(config)
        try:
            first = self.generate(p0, s0, handle.call_overrides)
            scores = [self.score(first, 0)]
            if constraints is not None and prune_margin is not None and len(self.workload.prompts) > 1:
                self._prune_early(constraints, prune_margin, scores[0], handle.stats(), first, t_start)
        finally:
            handle.remove()
        return first, scores

    def screen(self, config: accel.AccelConfig, constraints=None, prune_margin: float | None = None) -> TrialResult:
        """The cheap first look at a point: one untimed call on the first prompt (scored, and
        pruned early as in ``evaluate``), then one interleaved timing pair on it, the untimed
        call having warmed the candidate. The result's metrics are the first prompt's and its
        speed-up is one ratio: a screen ranks, it is never reported as a speed-up.

        A following ``evaluate`` of the same config reuses the look instead of repeating it.
        """
        t_start = time.perf_counter()
        self.baseline  # noqa: B018
        _fresh_compile(config)
        p0, s0 = self.workload.prompts[0], self.workload.seeds[0]
        with torch.inference_mode():
            first, scores = self._look(config, constraints, prune_margin, t_start)
            # one round says nothing of the baseline's spread: kept out of the busy-machine check
            comparison, _, counters = self._compare(config, p0, s0, 1, warmup=0, record=False)
        self._screened = (config.identity(), first, scores[0], comparison)
        return TrialResult(
            comparison.candidate, aggregate(scores), counters, [first], time.perf_counter() - t_start,
            baseline_latency=comparison.baseline, speedup=comparison.speedup, speedup_iqr=comparison.speedup_iqr,
            speedup_low=comparison.speedup_low, speedup_high=comparison.speedup_high,
            timing={"repeats": 1, "busy": False, "screen": True},
        )

    def _take_screened(self, config: accel.AccelConfig):
        """The screen's (output, scores) of the first prompt and its timing pair when it screened
        this config last."""
        screened, self._screened = self._screened, None
        if screened is None or screened[0] != config.identity():
            return None
        return screened[1:]

    def confirm(self, config: accel.AccelConfig, repeats: int, precision: float | None = None,
                max_s: float | None = None, prior_ratios: list[float] | None = None) -> Comparison:
        """The full measurement of a promising point: ``repeats`` interleaved rounds against the
        baseline on every prompt, pooled into one speed-up and its interval.

        With ``precision`` (0.1: the interval within ±10% of the speed-up), rounds go on, the
        prompts taking turns, until the pooled interval is that narrow, the next batch would end
        after ``max_s`` seconds, or ``CONFIRM_MAX_FACTOR`` times the first pass's rounds ran: on a
        busy machine the interval narrows with more pairs where a fixed count leaves it wide.
        ``prior_ratios``: rounds of the same point measured earlier, counted towards the precision
        (a top-up); the result holds only this call's rounds, for the caller to pool.
        """
        self.baseline  # noqa: B018
        _fresh_compile(config)
        prior = list(prior_ratios or [])

        def done(pooled: Comparison) -> bool:
            ratios = prior + list(pooled.ratios or [])
            return Comparison.of(pooled.baseline, pooled.candidate, ratios).relative_spread <= precision

        return self._sequential(lambda p, s, warm: self._compare(config, p, s, repeats, warmup=warm)[0],
                                done if precision is not None else None, max_s)

    def versus(self, reference: accel.AccelConfig, config: accel.AccelConfig, repeats: int,
               precision: float | None = None, max_s: float | None = None) -> Comparison:
        """``config`` timed against another setting, ``reference`` (the best preset), in place of
        the baseline: interleaved rounds on every prompt, each side applied and removed untimed
        around its calls. The result's ``baseline`` is the reference and its speed-up is how much
        faster ``config`` runs than it. Two settings that share the machine's load round by round
        are told apart in far fewer rounds than their two speed-ups, each with its own interval.

        With ``precision`` rounds go on, as in ``confirm``, until the interval is that narrow or
        leaves out 1.0 (which of the two is faster is then known), or ``max_s`` is spent.
        """
        self.baseline  # noqa: B018
        # both sides' graphs live at once: the first pass compiles each, later rounds reuse them
        _fresh_compile(config if config.compile.mode != "none" else reference)

        def done(pooled: Comparison) -> bool:
            return pooled.relative_spread <= precision or not (pooled.speedup_low <= 1.0 <= pooled.speedup_high)

        return self._sequential(lambda p, s, warm: self._compare(config, p, s, repeats, warmup=warm, reference=reference)[0],
                                done if precision is not None else None, max_s)

    def _sequential(self, compare, done, max_s: float | None) -> Comparison:
        """One pass of ``compare(prompt, seed, warmup)`` over every prompt, then, while ``done`` (if
        given) says no, more batches, the prompts taking turns, as long as the next one would end
        within ``max_s`` and under ``CONFIRM_MAX_FACTOR`` times the first pass."""
        pairs = self.workload.calls()
        started = time.monotonic()
        with torch.inference_mode():
            # the first pass stops at ``max_s`` too, between prompts, once one prompt is measured:
            # the time given is a cap, and what was measured by then is the result
            def next_fits() -> bool:  # one more prompt's comparison, at the pace so far
                spent = time.monotonic() - started
                return max_s is None or spent + spent / len(parts) <= max_s

            parts = []
            for p, s in pairs:
                if parts and not next_fits():
                    break
                parts.append(compare(p, s, None))
            pooled = Comparison.pooled(parts)
            first = len(pairs)
            while done is not None and not done(pooled) and len(parts) < CONFIRM_MAX_FACTOR * first:
                if not next_fits():
                    break
                p, s = pairs[(len(parts) - first) % len(pairs)]
                parts.append(compare(p, s, 0))  # warm since the first pass
                pooled = Comparison.pooled(parts)
        return pooled

    def _compare(self, config: accel.AccelConfig, prompt: str, seed: int, repeats: int, warmup: int | None = None,
                 reference: accel.AccelConfig | None = None, record: bool = True, first_round: int = 0):
        """The baseline (or the ``reference`` setting) and ``config`` interleaved on one prompt ->
        (comparison, last candidate output, counters of the last candidate call). Each setting is
        applied and removed untimed around each of its calls."""
        handles: list = []
        ref_handles: list = []

        def setup():
            handles.append(self.apply(config))
            return handles[-1].remove

        def ref_setup():
            ref_handles.append(self.apply(reference))
            return ref_handles[-1].remove

        comparison, _, out = compare_interleaved(
            (lambda: self.generate(prompt, seed, ref_handles[-1].call_overrides)) if reference is not None
            else (lambda: self.generate(prompt, seed)),
            lambda: self.generate(prompt, seed, handles[-1].call_overrides), self.device,
            self.warmup if warmup is None else warmup, repeats, candidate_setup=setup,
            baseline_setup=ref_setup if reference is not None else None, first_round=first_round,
        )
        if reference is None and record:
            self._baseline_timings.append(comparison.baseline)
        return comparison, out, handles[-1].stats()

    def _prune_early(self, constraints, margin, first_scores, counters, first, t_start=None) -> None:
        base = self.baseline_metrics
        for f in constraints.floors:
            value = first_scores.get(f.metric)
            if value is not None and f.breaks_by(value, margin, base.get(f.metric)):
                # nothing was timed: a pruned point carries no latency
                partial = {"metrics": dict(first_scores), "counters": counters, "sample": to_uint8(first),
                           "eval_seconds": time.perf_counter() - t_start if t_start is not None else None}
                raise TrialPrunedEarly(f"first prompt {f.metric} {value:.4g} misses {f} by more than {margin:.0%}", partial)


def _setup_counters(pipe, seconds: float) -> dict[str, Any]:
    """What a trial records besides its latency: the set-up (install, quantising) time, not
    counted as latency, and the linear layers' weight bytes with the config applied."""
    from ..accel.quant import weight_bytes

    per_component = weight_bytes(pipe)
    return {"setup_s": seconds, "weight_bytes": sum(per_component.values()), "weight_bytes_by_component": per_component}


def balanced(rounds: int) -> int:
    """``rounds`` rounded up to an even count: interleaved rounds alternate AB and BA."""
    return rounds + rounds % 2


def to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0).round().astype(np.uint8)
