"""The search phase: worker threads ask Optuna for points and tell it what each trial measured.

One thread per worker runs an ask/tell loop against the shared storage. A trial is screened
first (one untimed call on the first prompt, one timing pair) and timed in full only when it may
reach the front and ranks in the best 1/``promotion`` of the screens (``tuner.screen``; a parked
screen is timed in full later, ahead of queued points, when its rank rises); the loop stops when
the plan says the next trial would not end within the search's share of the budget
(``tuner.plan``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna

from ..search_spaces import SpaceContext, suggest
from .confirm import confirmation_candidates
from .objectives import Constraints
from .outcome import FAILED, INTERRUPTED, PRUNED
from .outputs import _save_sample
from .pick import PRESET, baseline_trial
from .plan import Plan
from .protocol import Worker
from .quiet import ignoring
from .refine import refinements
from .screen import PARKED, PROMOTED_FROM, PROMOTION, best_parked, rank, to_promote, verdict
from .storage import storage_of, trial_id_of
from .warm import WARM

# Identical outputs have infinite PSNR; Optuna wants finite objective values.
PSNR_CAP = 100.0
TrialState = optuna.trial.TrialState
# A sampler that keeps proposing points earlier trials answered has nothing new left to offer.
MAX_REPEATS_IN_ROW = 20

logger = logging.getLogger(__name__)


@dataclass
class _Shared:
    """State the worker threads share."""

    study: optuna.Study
    family: str
    objective: str
    constraints: Constraints
    baseline_metrics: dict[str, float]
    max_trials: int | None
    plan: Plan
    prune_margin: float | None
    samples: Path
    on_trial: Callable[[optuna.trial.FrozenTrial], None]
    space: SpaceContext = field(default_factory=SpaceContext)
    note: Callable[[str], None] = print
    heartbeat_s: int | None = None  # None: the storage keeps no heartbeats
    refine: bool = False  # queue front refinements after each trial (tuner.refine)
    screening: bool = True  # screen each trial before timing it in full (tuner.screen)
    promotion: int = PROMOTION  # the best 1/promotion of the screens are timed in full (tuner.screen.rank)
    maximize: bool = True  # the objective's direction
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    eval_seconds: float = 0.0  # inside the evaluator (model calls, timing, scoring), as it reports
    sample_seconds: float = 0.0  # sampling: study.ask() and the define-by-run suggest
    call_seconds: float = 0.0  # worker.evaluate round trips (the evaluator plus process hand-over)
    screen_seconds: float = 0.0  # screening trials (an untimed look and one timing pair each)
    full_seconds: float = 0.0  # timing trials in full
    repeats_in_row: int = 0
    busy_noted: bool = False
    stop_reason: str = ""
    stale_checked: float = 0.0

    def holds_confirmation(self) -> bool:
        """Whether the search has found a point to confirm, so the confirmation's share is held
        back from it (until then the search may use that share too)."""
        with self.lock:
            return bool(confirmation_candidates(self.study))

    def add(self, name: str, seconds: float) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + seconds)

    def ended(self, reason: str) -> None:
        """Record why the study ends; the first reason given is the study's. Call with the lock held."""
        self.stop_reason = self.stop_reason or reason

    def counted(self, before: optuna.trial.FrozenTrial | None = None) -> int:
        """Trials that count against the trial budget: not queued, not answered from storage as a
        repeat, not stopped with their process (their point runs again). With ``before``, only
        those that started running before that trial did."""
        trials = self.study.get_trials(deepcopy=False)
        requeued = {t.user_attrs.get("requeued_from") for t in trials}
        n = 0
        for t in trials:
            if (t.state == TrialState.WAITING or t.user_attrs.get("over_budget") or t.user_attrs.get("interrupted")
                    or "repeat_of" in t.user_attrs or (t.state == TrialState.FAIL and t.number in requeued)):
                continue
            if before is None or _started_before(t, before):
                n += 1
        return n

    def fail_stale(self, force: bool = False) -> None:
        """Fail the running trials of dead processes (no heartbeat within the grace period); the
        storage's callback queues their points again. At most once per heartbeat interval."""
        if self.heartbeat_s is None:
            return
        now = time.monotonic()
        with self.lock:
            if not force and now - self.stale_checked < self.heartbeat_s:
                return
            self.stale_checked = now
        with ignoring(optuna.exceptions.ExperimentalWarning):
            optuna.storages.fail_stale_trials(self.study)


def _started_before(t: optuna.trial.FrozenTrial, mine: optuna.trial.FrozenTrial) -> bool:
    """Whether ``t`` started running before ``mine``: the order in which workers on other
    processes or machines claim the budget's last slots. Not the trial number: a queued point
    (a refinement, a requeued one) keeps the lower number it got when queued, so judged by number
    it would miss a trial sampled while it waited, and both would run past the budget."""
    if t.datetime_start is None or mine.datetime_start is None:
        return t.number < mine.number
    return (t.datetime_start, t.number) < (mine.datetime_start, mine.number)


def _requeue_interrupted(study: optuna.Study, log) -> None:
    """Trials left RUNNING by a killed process: mark them failed and queue their points again."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        _fail_interrupted(study, trial_id_of(t), t.params, "interrupted: the process running it was stopped")
        log(f"trial {t.number} was interrupted; its point is queued again")


def _fail_interrupted(study: optuna.Study, trial_id: int, params: dict, reason: str) -> None:
    """An interrupted trial fails without counting against the budget; its point is queued again."""
    storage_of(study).set_trial_user_attr(trial_id, "interrupted", True)
    storage_of(study).set_trial_user_attr(trial_id, "fail_reason", reason)
    storage_of(study).set_trial_state_values(trial_id, TrialState.FAIL)
    study.enqueue_trial(params, user_attrs={"requeued_from": storage_of(study).get_trial(trial_id).number})


def _heartbeat_interval(study: optuna.Study) -> int | None:
    """Seconds between a running trial's heartbeats; None where the storage keeps none (journal)."""
    return getattr(storage_of(study), "get_heartbeat_interval", lambda: None)()


class _Heartbeat:
    """Records a running trial's heartbeat every interval while the block runs. Optuna's
    optimize() does this itself; an ask/tell driver has to, or a live trial looks dead."""

    def __init__(self, storage, trial_id: int, interval: int | None):
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        if self._interval is not None:
            # at once: a trial that never beat is never taken for dead, so a crash right after
            # ask() would leave it RUNNING for good
            self._storage.record_heartbeat(self._trial_id)
            self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{self._trial_id}")
            self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception as e:  # noqa: BLE001  (one lost beat is within the grace period; keep beating)
                logger.warning("trial heartbeat not recorded: %s: %s", type(e).__name__, e)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _drive(shared: _Shared, wid: str, worker: Worker) -> None:
    """One worker's ask/tell loop; returns when the budget is spent or a stop is asked for."""
    study = shared.study
    while not shared.stop.is_set():
        if not shared.plan.room_for("trial", shared.holds_confirmation()):
            with shared.lock:
                shared.ended("time budget spent")
            return
        shared.fail_stale(force=True)  # before counting: a dead process's trial frees its budget slot
        with shared.lock:
            if shared.max_trials is not None and shared.counted() >= shared.max_trials:
                shared.ended("trial budget spent")
                return
            t0 = time.perf_counter()
            # Optuna expects heartbeats with optimize(); this loop records them itself (_Heartbeat)
            with ignoring(message="Heartbeat of storage is supposed"):
                trial = _claim_first(study) or study.ask()
            shared.sample_seconds += time.perf_counter() - t0
        if (shared.max_trials is not None
                and shared.counted(before=storage_of(study).get_trial(trial_id_of(trial))) >= shared.max_trials):
            trial.set_user_attr("over_budget", True)  # another worker took the last slot
            study.tell(trial, state=TrialState.FAIL)
            with shared.lock:
                shared.ended("trial budget spent")
            return
        trial.set_user_attr("worker", wid)
        try:
            with _Heartbeat(storage_of(study), trial_id_of(trial), shared.heartbeat_s):
                repeated = _run_trial(shared, trial, worker)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            # heartbeats held up longer than the grace period (a suspended machine, a stalled
            # database): another worker took this trial for dead, failed it and queued its point
            if shared.heartbeat_s is None or storage_of(study).get_trial(trial_id_of(trial)).state != TrialState.FAIL:
                raise
            shared.note(f"trial {trial.number} was failed as stale while it ran; its point is queued again")
            continue
        # one trial from storage, not a deep copy of the whole study after every trial
        frozen = storage_of(study).get_trial(trial_id_of(trial))
        shared.on_trial(frozen)
        if shared.screening:
            _promote(shared)  # after the trial's own line: a parked screen may now rank among the best
        if shared.refine and not repeated:
            _refine(shared, frozen)
        with shared.lock:
            # a repeat costs no budget, so the sampler is asked again, but not forever
            shared.repeats_in_row = shared.repeats_in_row + 1 if repeated else 0
            exhausted = shared.repeats_in_row >= MAX_REPEATS_IN_ROW and not shared.stop_reason
            if exhausted:
                shared.ended("search space exhausted")
        if exhausted:
            shared.note(f"search space exhausted: the last {MAX_REPEATS_IN_ROW} points the sampler proposed "
                        "had all been tried; stopping")
            shared.stop.set()


def _refine(shared: _Shared, trial: optuna.trial.FrozenTrial) -> None:
    """Queue the front refinements of a finished trial (``tuner.refine``); they run next and
    count against the budget like any trial, so none is queued once the budget is spent."""
    with shared.lock:
        if shared.max_trials is not None and shared.counted() >= shared.max_trials:
            return
        if not shared.plan.room_for("trial", bool(confirmation_candidates(shared.study))):
            return
        points = refinements(shared.study, trial, [str(f) for f in shared.constraints.floors])
        for r in points:
            # skip_if_exists: another machine sharing the study may have queued it meanwhile
            shared.study.enqueue_trial(r.params, user_attrs=r.user_attrs, skip_if_exists=True)
    for r in points:
        shared.note(r.note())


def _run_trial(shared: _Shared, trial: optuna.Trial, worker: Worker) -> bool:
    """Evaluate one trial and tell its outcome; True when it repeated an earlier point."""
    study = shared.study
    t0 = time.perf_counter()
    try:
        # presets come from the peers' anchors and may sit outside a range centred on this
        # model's statistics; Optuna evaluates them as given, which is the point
        with ignoring(message="Fixed parameter .* is out of range"):
            config = suggest(trial, shared.family, shared.space)
        shared.add("sample_seconds", time.perf_counter() - t0)  # takes shared.lock: not inside ignoring()
    except Exception as e:  # noqa: BLE001  (a bad point is that trial's failure)
        trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}")
        study.tell(trial, state=TrialState.FAIL)
        return False
    # stored before the call, so a worker proposing the same configuration meanwhile waits for this one
    trial.set_user_attr("config", config.to_dict())
    trial.set_user_attr("config_id", config.identity())
    earlier = _same_params(study, trial, check_stale=shared.fail_stale)
    if earlier is not None:  # a point tried before, or one installing the same configuration: answer it from storage
        for key, value in earlier.user_attrs.items():
            if key not in ("worker", "config", "config_id"):
                trial.set_user_attr(key, value)
        trial.set_user_attr("repeat_of", earlier.number)
        for key, value in earlier.constraints.items():
            trial.set_constraint(key, value)
        study.tell(trial, earlier.values)
        return True
    outcome = _evaluate(shared, trial, worker, config)
    if outcome is None:  # screened out, or no time left to time it in full
        return False
    if outcome.kind == INTERRUPTED:
        _fail_interrupted(study, trial_id_of(trial), trial.params, outcome.reason)
        return False
    if outcome.kind == FAILED:
        trial.set_user_attr("fail_reason", outcome.reason)
        study.tell(trial, state=TrialState.FAIL)
        return False
    result = outcome.result
    shared.add("eval_seconds", result.get("eval_seconds") or _eval_estimate(result))
    trial.set_user_attr("metrics", result["metrics"])
    if result.get("per_prompt"):
        trial.set_user_attr("per_prompt", result["per_prompt"])
    trial.set_user_attr("counters", result["counters"])
    _save_sample(shared.samples / f"trial-{trial.number:04d}.png", result["sample"])
    if outcome.kind == PRUNED:  # nothing was timed: a pruned point carries no latency
        trial.set_user_attr("prune_reason", outcome.reason)
        study.tell(trial, state=TrialState.PRUNED)
        return False
    _tell_timed(shared, trial, result)
    return False


def _tell_timed(shared: _Shared, trial: optuna.Trial, result: dict) -> None:
    """A trial timed in full: its latency, speed-up and timing recorded, its constraints set, and
    its objectives told."""
    study = shared.study
    latency = result["latency"]
    trial.set_user_attr("latency_s", latency["median_s"])
    trial.set_user_attr("latency", latency)
    if result.get("speedup") is not None:  # measured against a baseline timed interleaved with this trial
        for key in ("speedup", "speedup_iqr", "speedup_low", "speedup_high", "baseline_latency"):
            trial.set_user_attr(key, result.get(key))
    timing = result.get("timing") or {}
    if timing:
        trial.set_user_attr("timing", timing)
        if timing.get("busy") and not shared.busy_noted:
            shared.busy_noted = True
            shared.note(f"the baseline's timing drifted from its usual spread or level (the machine got busier); "
                        f"timing with {timing.get('repeats')} rounds while it lasts")
    weights = result["counters"].get("weight_bytes")
    for key, value in shared.constraints.values(result["metrics"], latency.get("peak_memory_bytes"), shared.baseline_metrics,
                                                weights).items():
        trial.set_constraint(key, value)
    quality = weights if shared.objective == "weight_bytes" else result["metrics"][shared.objective]
    if shared.objective == "psnr":
        quality = min(quality, PSNR_CAP)
    study.tell(trial, [_relative_latency(study, trial, result), quality])


def _evaluate(shared: _Shared, trial: optuna.Trial, worker: Worker, config):
    """Screen the point (where the worker can, and it is not the unaccelerated one), tell Optuna a
    PRUNED trial when the screen says it cannot reach the front, else time it in full -> the full
    outcome, the screen's when it failed or was pruned on quality, or None when told already.

    The presets are screened like any point: the screen's margin of two standard deviations of
    the timing noise keeps one whose ratio is noisy, and a preset that cannot reach the front is
    no anchor worth its full timing. The unaccelerated point is timed with the rounds the plan
    gives it (fewer where the budget is tight)."""
    spec = shared.constraints.spec()
    if config.is_neutral:
        t0 = time.perf_counter()
        outcome = worker.evaluate(config.to_dict(), spec, shared.prune_margin, rounds=shared.plan.neutral_rounds())
        shared.add("call_seconds", time.perf_counter() - t0)
        trial.set_user_attr("fidelity", "full")
        return outcome
    promoted = PROMOTED_FROM in trial.user_attrs  # a parked screen whose rank rose: its full timing
    if promoted and not shared.plan.room_for("full", shared.holds_confirmation()):
        trial.set_user_attr("prune_reason", "promoted from its screen; the search's time ran out before it "
                                            "could be timed in full")
        shared.study.tell(trial, state=TrialState.PRUNED)
        return None
    if shared.screening and getattr(worker, "screens", False):
        # a promoted point is screened again, not ranked again: its look warms it (other points
        # ran since its screen) and its pair is the first round, cheaper than a look and warm-up
        outcome = _screen(shared, trial, worker, config, spec, rank_it=not promoted)
        if outcome is not True:
            return outcome
    t0 = time.perf_counter()
    outcome = worker.evaluate(config.to_dict(), spec, shared.prune_margin)
    seconds = time.perf_counter() - t0
    shared.add("call_seconds", seconds)
    if outcome.kind == "ok":
        shared.plan.record("full", seconds)
        shared.add("full_seconds", seconds)
    trial.set_user_attr("fidelity", "full")
    return outcome


def _screen(shared: _Shared, trial: optuna.Trial, worker: Worker, config, spec: dict, rank_it: bool = True):
    """Screen the point -> True to time it in full, or the screen's outcome when it failed or
    was pruned on its look's quality, or None when told PRUNED already (dropped by its verdict,
    parked by its rank, or no time left for a full timing)."""
    t0 = time.perf_counter()
    outcome = worker.evaluate(config.to_dict(), spec, shared.prune_margin, stage="screen")
    seconds = time.perf_counter() - t0
    shared.plan.record("screen", seconds)
    shared.add("screen_seconds", seconds)  # a screen pruned on quality spent its time too
    trial.set_user_attr("fidelity", "screen")
    if outcome.kind != "ok":
        return outcome
    result = outcome.result
    floors = shared.constraints.values(result["metrics"], None, shared.baseline_metrics)
    meets = all(v <= 0 for k, v in floors.items() if k not in ("memory", "weight_bytes"))
    weights = (result.get("counters") or {}).get("weight_bytes")
    caps = shared.constraints.values({}, None, shared.baseline_metrics, weights).get("weight_bytes", 0.0) <= 0
    screen = {"speedup": result.get("speedup"), "metrics": result.get("metrics"), "seconds": result.get("eval_seconds"),
              "meets": meets, "within_caps": caps}
    trial.set_user_attr("screen", screen)
    parked = None
    with shared.lock:  # the front the verdict reads and the screens' ranks do not change under it
        why = verdict(shared.study, screen, shared.objective, shared.maximize, meets)
        if why is None and rank_it and not trial.user_attrs.get(WARM):
            why = parked = rank(shared.study, trial.number, shared.promotion, shared.objective)
    if why is None and not shared.plan.room_for("full", shared.holds_confirmation()):
        why = "screened; the search's time ran out before it could be timed in full"
    if why is None:
        return True
    trial.set_user_attr("metrics", result["metrics"])
    trial.set_user_attr("prune_reason", why)
    if parked:
        trial.set_user_attr(PARKED, True)
    _save_sample(shared.samples / f"trial-{trial.number:04d}.png", result["sample"])
    shared.study.tell(trial, state=TrialState.PRUNED)
    return None


# What a parked screen's full timing carries over from it: how it was queued.
_CARRIED = (PRESET, WARM, "refined_from", "combined")


def _promote(shared: _Shared) -> None:
    """Queue the full timing of every parked screen that now ranks among the best (they run
    next: Optuna hands out queued points before sampling), while the search has time for one."""
    with shared.lock:
        found = bool(confirmation_candidates(shared.study))
        if not shared.plan.room_for("full", found):
            return
        ready = to_promote(shared.study, shared.promotion, shared.objective)
        if not ready and not found and shared.plan.last_full(hold_confirmation=False):
            # nothing timed in full yet and room for one more full timing only: the best screen
            ready = best_parked(shared.study, shared.promotion, shared.objective)
        # a parked screen a point timed in full since has overtaken is dropped, not promoted
        ready = [t for t in ready if verdict(shared.study, t.user_attrs["screen"], shared.objective, shared.maximize,
                                             t.user_attrs["screen"].get("meets", True)) is None]
        for t in ready:
            attrs = {k: t.user_attrs[k] for k in _CARRIED if k in t.user_attrs}
            shared.study.enqueue_trial(t.params, user_attrs={**attrs, PROMOTED_FROM: t.number})
    for t in ready:
        shared.note(f"trial {t.number}'s screen ({t.user_attrs['screen']['speedup']:.2f}x) now ranks among the best: "
                    "timed in full next")


def _claim_first(study: optuna.Study) -> optuna.Trial | None:
    """A queued point that goes ahead of the other queued ones (the presets, the refinements, the
    warm start's): first the point of a trial whose process died (it was due before any of them),
    then the full timing of a parked screen. ``Study.ask`` hands out the oldest queued point
    first, and a point waiting behind a dozen others may never run in a short budget. Claimed as
    ``ask`` claims a queued trial, by moving it to RUNNING in the storage (False: another worker
    took it)."""
    storage = storage_of(study)
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    first = ([t for t in waiting if "requeued_from" in t.user_attrs]
             + [t for t in waiting if PROMOTED_FROM in t.user_attrs and "requeued_from" not in t.user_attrs])
    for t in first:
        try:
            if storage.set_trial_state_values(trial_id_of(t), state=TrialState.RUNNING):
                return optuna.Trial(study, trial_id_of(t))
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def _relative_latency(study: optuna.Study, trial: optuna.Trial, result: dict) -> float:
    """The first objective: latency over the baseline's, 1 / the interleaved speed-up. A result
    without an interleaved baseline is set against the baseline trial's timing (1.0 for the
    baseline itself, or before there is one)."""
    if result.get("speedup"):
        return 1.0 / result["speedup"]
    base = baseline_trial(study)
    base_s = base.user_attrs.get("latency_s") if base is not None else None
    return result["latency"]["median_s"] / base_s if base_s else 1.0


def _eval_estimate(result: dict) -> float:
    return sum((result.get("latency") or {}).get("samples") or [])


def _same_params(study: optuna.Study, trial: optuna.Trial, wait_s: float = 3600.0,
                 check_stale: Callable[[], None] = lambda: None) -> optuna.trial.FrozenTrial | None:
    """An earlier trial at the same point, or at another point whose configuration is the same
    (``AccelConfig.identity``: two schedule budgets that choose one mask); when another worker is
    still running it, wait for it (on a storage with heartbeats, only as long as that worker's
    process is alive)."""
    deadline = time.monotonic() + wait_s
    mine = trial.user_attrs.get("config_id")
    while True:
        check_stale()
        running = False
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            same = t.params == trial.params or (mine is not None and t.user_attrs.get("config_id") == mine)
            if t.number >= trial.number or not same or "repeat_of" in t.user_attrs:
                continue
            if t.state == TrialState.COMPLETE and "latency_s" in t.user_attrs:
                return t
            running = running or t.state == TrialState.RUNNING
        if not running or time.monotonic() > deadline:
            return None
        time.sleep(0.2)
