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

import contextlib
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
    pairs = ev.workload.calls()
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
    from .metrics import Comparison, compare_interleaved

    handles: list = []

    def setup():
        handles.append(ev.apply(config))
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


def profile_evaluator(loaded, prof, prompts: list[str] | None = None, seeds: list[int] | None = None,
                      options=None, warmup: int = 1, source: Any = "the profile"):
    """An evaluator of ``loaded`` on the workload ``prof`` was measured on: its prompts and seeds
    (``workload.pair`` with the profile's calls recorded; ``prompts``/``seeds`` given replace them)
    and its generation settings over the model's, the ``options`` (``WorkloadOptions``) over both.
    The baseline runs that workload; the accelerated calls add the config's own overrides (the
    steps section's step count) when it is applied."""
    from .errors import UserError
    from .models.prompts import default_prompts
    from .tuner.evaluator import Evaluator, Workload
    from .workload import pair, resolve

    recorded = (list(prof.study.get("prompts") or []), list(prof.study.get("seeds") or []))
    fallback = [] if recorded[0] else list(default_prompts(loaded.source == "builtin", loaded.is_video))
    prompts, seeds = pair(prompts or fallback, seeds, recorded=recorded)
    if len(seeds) != len(prompts):
        raise UserError(f"{source}: study.seeds gives {len(seeds)} seeds for {len(prompts)} prompts")
    measured_at = {**loaded.generation, **{k: v for k, v in prof.generation.items() if v is not None}}
    generation = resolve(loaded.pipe, measured_at, options) if options is not None else measured_at
    return Evaluator(loaded, Workload(prompts, seeds, generation), warmup=warmup, repeats=1)


@dataclass
class BenchRequest:
    """What ``bench`` measures and how: the command's options, parsed."""

    model: str
    prof: Any = None  # the Profile to measure; None: looked up in ``store`` once the model has loaded
    source: Any = None  # where ``prof`` came from, for messages (its path)
    store: str | None = None  # a profile store URL (``apply_profile(store=...)``'s lookup)
    repeats: int = 3
    warmup: int = 1
    precision: float | None = 0.1
    max_s: float | None = 300.0
    device: str | None = None
    dtype: str | None = None
    force: bool = False  # measure a profile tuned for another model
    strict: bool = False  # refuse one tuned on another machine too
    options: Any = None  # workload.WorkloadOptions laid over the profile's generation settings
    prompts: list[str] | None = None
    seeds: list[int] | None = None
    allow_download: bool = False
    verbose: bool = False


def bench(req: BenchRequest, log: Callable[[str], None] = print) -> "BenchReport | None":
    """The baseline against the profile on the profile's workload -> a ``BenchReport``; progress
    lines (the workload, the load time, each model call) go to ``log``. A profile tuned for
    another model is refused (``deploy.refuse_another_model``), one tuned elsewhere warns
    (``ProfileMismatchWarning``). In a rank group only rank 0 measures; the others follow its
    meshed calls and get None."""
    from .accel.parallel.launch import in_rank_group, rank_device
    from .models import load
    from .models.quiet import quiet_loading
    from .workload import describe

    prof, source = req.prof, req.source
    # measure at the profile's dtype; float32 is how models load anyway, and casting warns
    wanted = req.dtype or (prof.model.get("dtype") if prof is not None and prof.model.get("dtype") != "float32" else None)
    t_load = time.perf_counter()
    with quiet_loading(req.verbose):
        loaded = load(req.model, device=rank_device(req.device), dtype=wanted, allow_download=req.allow_download)
    load_s = time.perf_counter() - t_load
    if prof is None:
        from .deploy import stored_profile

        prof, source = stored_profile(loaded, req.store, req.options.generation() if req.options else None)
    mismatches = _checked(loaded, prof, source, req.force, req.strict)
    ev = profile_evaluator(loaded, prof, req.prompts, req.seeds, req.options, req.warmup, source)
    log(f"bench: workload {describe(ev.workload.generation, ev.workload.prompts, ev.workload.seeds)}")
    log(f"bench: model loaded in {load_s:.1f} s (not counted in --max-seconds)")
    leader = None
    if in_rank_group():
        from .tuner.rankgroup import lead_or_follow

        leader = lead_or_follow(ev)
        if leader is None:
            return None  # a following rank: it ran rank 0's meshed calls
    try:
        m = _measured(ev, prof, req, log)
    finally:
        if leader is not None:
            leader.stop()
    return BenchReport(req.model, str(source), prof, ev, m, req.repeats, [mm.field for mm in mismatches])


def _checked(loaded, prof, source, force: bool, strict: bool) -> list:
    """What differs between the profile and this model and machine: another model refused, another
    machine warned about (refused with ``strict``)."""
    import warnings

    from .deploy import ProfileMismatchError, ProfileMismatchWarning, check_profile, refuse_another_model

    mismatches = check_profile(loaded.pipe, prof)
    refuse_another_model(loaded, prof, source, mismatches, force)
    if mismatches:
        msg = "the profile was tuned elsewhere: " + "; ".join(map(str, mismatches))
        if strict and not force:
            raise ProfileMismatchError(msg, mismatches)
        warnings.warn(msg, ProfileMismatchWarning, stacklevel=2)
    return mismatches


def _measured(ev, prof, req: BenchRequest, log) -> BenchMeasurement:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _call_lines(ev, "interleaved", log):
            m = measure(ev, prof.accel, req.repeats, precision=req.precision or None, max_s=req.max_s)
    ended = "stopped at the --max-seconds cap" if m.capped else "done"
    log(f"bench: {ended} after {m.rounds} interleaved round(s); quality on {m.prompts_scored} of "
        f"{len(ev.workload.prompts)} prompt(s)")
    return m


@contextlib.contextmanager
def _call_lines(ev, what: str, log):
    """One line per model call while ``ev`` evaluates: a long bench shows it is moving."""
    calls = 0
    real = ev.generate
    t_start = time.perf_counter()

    def generate(*args, **kwargs):
        nonlocal calls
        t0 = time.perf_counter()
        out = real(*args, **kwargs)
        calls += 1
        log(f"bench: {what} call {calls} ({time.perf_counter() - t0:.2f} s)")
        return out

    ev.generate = generate  # the evaluator calls self.generate: the instance attribute wins
    try:
        yield
    finally:
        del ev.generate
    log(f"bench: {what} done: {calls} call(s) in {time.perf_counter() - t_start:.1f} s")


@dataclass
class BenchReport:
    """What ``bench`` measured: ``result()`` is the JSON object, ``table()`` the lines of the table."""

    model: str
    source: str
    prof: Any
    ev: Any
    m: BenchMeasurement
    repeats: int
    mismatches: list[str]

    def result(self) -> dict[str, Any]:
        cmp, m, measured = self.m.comparison, self.m, self.prof.measured
        return {
            "model": self.model, "profile": self.source, "device": str(self.ev.device),
            "prompts": len(self.ev.workload.prompts), "repeats": self.repeats,
            "rounds": m.rounds,  # interleaved pairs timed, over every prompt
            "rounds_by_prompt": m.rounds_by_prompt, "prompts_scored": m.prompts_scored, "capped": m.capped,
            "baseline_s": _significant(cmp.baseline.median_s), "profile_s": _significant(cmp.candidate.median_s),
            "speedup": _significant(cmp.speedup), "speedup_low": _significant(cmp.speedup_low),
            "speedup_high": _significant(cmp.speedup_high),
            "baseline_iqr_s": _significant(cmp.baseline.iqr_s), "profile_iqr_s": _significant(cmp.candidate.iqr_s),
            "baseline_cpu_s": _significant(cmp.baseline.cpu_s) if cmp.baseline.cpu_s is not None else None,
            "profile_cpu_s": _significant(cmp.candidate.cpu_s) if cmp.candidate.cpu_s is not None else None,
            **{k: _json_number(v) for k, v in m.metrics.items()},
            "skipped_fraction": m.counters.get("skipped_fraction"),
            "tuned_speedup": measured.get("speedup"), "tuned_speedup_low": measured.get("speedup_low"),
            "tuned_speedup_high": measured.get("speedup_high"),
            "mismatches": self.mismatches,
        }

    def table(self) -> list[str]:
        cmp, m, n = self.m.comparison, self.m, len(self.ev.workload.prompts)
        metrics = list(m.metrics)
        scored = "every prompt" if m.prompts_scored == n else f"{m.prompts_scored} of them"
        cells = "".join(f"{k:>11s}" for k in metrics)
        lines = [f"{self.model} with {self.source} on {self.ev.device}: {n} prompt(s); latency is the median of "
                 f"{m.rounds} interleaved round(s) over them, quality is against the baseline on {scored}",
                 f"{'':10s}{'latency':>12s}{'speed-up':>10s}" + cells,
                 f"{'baseline':10s}{cmp.baseline.median_s:>10.4g} s{1.0:>9.2f}x"
                 + "".join(f"{_metric_text(m.base_metrics[k]):>11s}" for k in metrics),
                 f"{'profile':10s}{cmp.candidate.median_s:>10.4g} s{cmp.speedup:>9.2f}x"
                 + "".join(f"{_metric_text(m.metrics[k]):>11s}" for k in metrics),
                 f"speed-up {cmp.speedup:.2f}x, interval {cmp.speedup_low:.2f}-{cmp.speedup_high:.2f}; latency spread (IQR) "
                 f"{cmp.baseline.iqr_s:.3g} s baseline, {cmp.candidate.iqr_s:.3g} s profile"]
        if isinstance(self.prof.measured.get("speedup"), (int, float)):
            lines.append(f"when frozen, the profile measured {self.prof.measured['speedup']:.2f}x")
        return lines


def _significant(v: float, digits: int = 6) -> float:
    # significant digits, not decimals: a 1 ms GPU call keeps the precision of a 10 s CPU one
    return float(f"{v:.{digits}g}")


def _json_number(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else None)
    return v


def _metric_text(v) -> str:
    if isinstance(v, float) and math.isinf(v):
        return "identical"
    return f"{v:.4g}" if isinstance(v, (int, float)) else str(v)
