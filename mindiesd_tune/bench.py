"""`bench`'s measurement: the baseline and a profile interleaved, round by round, within a time cap.

Every model call of the measurement is one of an interleaved round (or the untimed warm-up
before a prompt's first round), and its outputs are also what the quality is scored on, so
that one cap covers all of it: no call starts once ``max_s`` has passed, save the first round,
without which there is nothing to report. The command thus ends at most one model call after
the cap, with the rounds it has.

Rounds go round the prompts, each prompt's rounds alternating AB and BA (a machine slowing
down through the run biases neither side), until every prompt has ``repeats`` rounds and the
pooled speed-up's interval is within ``precision`` of it, as the tuner's confirmation does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .tuner.evaluator import CONFIRM_MAX_FACTOR, _fresh_compile

# the clock the cap is read on; tests put a fake one here
_clock: Callable[[], float] = time.monotonic


class OutOfTime(Exception):
    """The cap passed before a model call started: the round it belongs to is dropped."""


@dataclass
class BenchMeasurement:
    comparison: Any  # metrics.Comparison pooled over every round timed
    metrics: dict[str, float]  # the profile's quality against the baseline, mean over the prompts scored
    base_metrics: dict[str, float]  # the baseline against itself
    counters: dict[str, Any]  # the profile's statistics of its last call (e.g. skipped_fraction)
    prompts_scored: int
    capped: bool  # the cap ended it before its rounds or precision were reached
    rounds_by_prompt: list[int] = field(default_factory=list)

    @property
    def rounds(self) -> int:
        return len(self.comparison.ratios or [])


def measure(ev, config, repeats: int, precision: float | None = None, max_s: float | None = None,
            clock: Callable[[], float] | None = None) -> BenchMeasurement:
    """Interleaved rounds of the baseline and ``config`` on ``ev``'s workload, within ``max_s``
    seconds of ``clock`` from now (None: no cap); the quality from the same calls' outputs."""
    import torch

    from .metrics import Comparison

    clock = clock or _clock
    deadline = None if max_s is None else clock() + max_s
    pairs = list(zip(ev.workload.prompts, ev.workload.seeds))
    parts: list[list] = [[] for _ in pairs]  # each prompt's one-round comparisons
    outputs: dict[int, tuple] = {}
    counters: dict[str, Any] = {}
    capped = False

    def past_cap() -> bool:
        # the first round of the first prompt is always timed: without it there is nothing to report
        return deadline is not None and any(parts) and clock() >= deadline

    _fresh_compile(config)
    with torch.inference_mode():
        for _ in range(CONFIRM_MAX_FACTOR * repeats):
            for i, (prompt, seed) in enumerate(pairs):
                try:
                    cmp, base_out, out, counters = _round(ev, config, prompt, seed, len(parts[i]), past_cap)
                except OutOfTime:
                    capped = True
                    break
                parts[i].append(cmp)
                outputs[i] = (base_out, out)
            if capped or _enough(parts, repeats, precision, Comparison):
                break
    pooled = Comparison.pooled([c for p in parts for c in p])
    metrics, base_metrics = _quality(ev, outputs)
    return BenchMeasurement(pooled, metrics, base_metrics, counters, len(outputs), capped, [len(p) for p in parts])


def _round(ev, config, prompt, seed, done: int, past_cap):
    """One interleaved round on one prompt (its warm-up before the first): AB after an even number
    of rounds, BA after an odd one -> (comparison, baseline output, profile output, counters)."""
    from . import accel
    from .metrics import Comparison, compare_interleaved

    handles: list = []

    def setup():
        handles.append(accel.apply(ev.pipe, config))
        return handles[-1].remove

    def guarded(fn):
        def call():
            if past_cap():
                raise OutOfTime()
            return fn()
        return call

    base = guarded(lambda: ev.generate(prompt, seed))
    tuned = guarded(lambda: ev.generate(prompt, seed, handles[-1].call_overrides))
    warmup = ev.warmup if done == 0 else 0
    if done % 2 == 0:
        cmp, base_out, out = compare_interleaved(base, tuned, ev.device, warmup, 1, candidate_setup=setup)
    else:  # the profile first: the same comparison with the sides' roles swapped, then swapped back
        swapped, out, base_out = compare_interleaved(tuned, base, ev.device, warmup, 1, baseline_setup=setup)
        cmp = Comparison.of(swapped.candidate, swapped.baseline, [1.0 / r if r else math.inf for r in swapped.ratios])
    return cmp, base_out, out, handles[-1].stats()


def _enough(parts, repeats: int, precision: float | None, comparison) -> bool:
    """Every prompt has its ``repeats`` rounds and, with ``precision``, the pooled interval is that narrow."""
    if min(len(p) for p in parts) < repeats:
        return False
    return precision is None or comparison.pooled([c for p in parts for c in p]).relative_spread <= precision


def _quality(ev, outputs: dict[int, tuple]) -> tuple[dict[str, float], dict[str, float]]:
    """The profile's and the baseline's metrics against the baseline over the prompts measured:
    each metric's mean and its aggregates (worst prompt, confidence bound: ``mindiesd_tune.quality``)."""
    from .metrics import fidelity
    from .quality import aggregate

    scores, base_scores = [], []
    for i, (base_out, out) in sorted(outputs.items()):
        scores.append(fidelity(out, base_out, ev.fidelity_metrics))
        base_scores.append(fidelity(base_out, base_out, ev.fidelity_metrics))
        if ev.clip is not None and ev.scores_clip:
            prompt = [ev.workload.prompts[i]]
            scores[-1]["clip"] = ev.clip.score([out], prompt)
            base_scores[-1]["clip"] = ev.clip.score([base_out], prompt)
    return aggregate(scores), aggregate(base_scores)
