"""The study driver: Optuna asks for a config, a worker scores it, the profile is frozen at the end.

One thread per worker runs an ask/tell loop against the shared storage; each worker owns an
evaluator (in a child process by default) on its own device or device group. The main
thread shows progress and turns Ctrl-C into "stop after the current trial"; a second Ctrl-C
aborts the running trials (failed as interrupted, their points queued again).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna

from ..accel.config import AccelConfig
from ..errors import UserError
from ..metrics import METRIC_DIRECTIONS, Comparison
from ..profile import Profile
from ..search_spaces import SpaceContext, config_from_params, presets, suggest
from .budget import Budget
from .objectives import Constraints
from .options import OTHER_OBJECTIVES, SAMPLERS, TuneOptions
from .outcome import FAILED, INTERRUPTED, PRUNED
from .pick import (
    PRESET,
    VERSUS_PRESET,
    against_best_preset,
    baseline_trial,
    best_preset,
    completed,
    confirmations,
    is_feasible,
    is_neutral_point,
    pick,
    speed_of,
)
from .progress import ProgressUI, closing_lines, header_lines
from .quiet import ignoring
from .refine import refinements, refines
from .storage import (
    default_storage,
    has_study,
    load_run,
    open_storage,
    read_run_json,
    redact,
    run_storage,
    storage_of,
    trial_id_of,
    write_run_json,
)
from .worker import InProcessWorker, ProcessWorker, WorkerSpec, WorkerStartError

# The first objective's name: latency as a share of the baseline's timed beside it (1 / speed-up).
RELATIVE_LATENCY = "latency_over_baseline"
# Confirmation: at most this many points on or near the front are re-measured before the pick,
# those whose speed-up reaches within this share of the best one's, or whose interval reaches it.
CONFIRM_MAX = 3
CONFIRM_MARGIN = 0.1
# The confirmation (every candidate's first pass, the pick's top-up to the precision, the pick
# against the best preset) takes at most this share of the search's own time (at least this
# long); the best point's first pass is always measured. A quiet machine reaches the precision
# in a few batches and never spends the share; beside a CPU-bound process on 2 cores a ±10%
# interval of demo-flux took 24 to 42 rounds (2 to 3 s each), within half a 10-minute search.
CONFIRM_SHARE = 0.5
CONFIRM_MIN_S = 60.0
CONFIRM_PRECISION = TuneOptions.confirm_precision
# Identical outputs have infinite PSNR; Optuna wants finite objective values.
PSNR_CAP = 100.0
TrialState = optuna.trial.TrialState
# After a second Ctrl-C, how long the worker threads get to hand back their aborted trials
# before the outputs are written without them (a denoising step cannot be cut short).
ABORT_GRACE_S = 3.0


# A sampler that keeps proposing points earlier trials answered has nothing new left to offer.
MAX_REPEATS_IN_ROW = 20

logger = logging.getLogger(__name__)


@dataclass
class StudyOutcome:
    study: optuna.Study
    out_dir: Path
    profile: Profile | None
    profile_path: Path | None
    report_path: Path
    table_path: Path
    interrupted: bool = False
    reason: str = ""
    stop_reason: str = ""  # why the study ended: a budget, an interrupt or an exhausted search space
    kept_path: Path | None = None  # the profile.yaml that was there before, moved aside
    against_preset: str | None = None  # the pick beside the best preset alone, both confirmed (pick.against_best_preset)


def default_out_dir(model: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{Path(model).name}-{stamp}"


def make_sampler(name: str, seed: int, budget_trials: int | None = None) -> optuna.samplers.BaseSampler:
    """Constrained multivariate TPE by default; NSGA-II, GP and random on request. All seeded."""
    # multivariate/group/constant_liar are marked experimental; they are what the tuner relies on
    with ignoring(optuna.exceptions.ExperimentalWarning):
        return _sampler(name, seed, budget_trials)


def _sampler(name: str, seed: int, budget_trials: int | None) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=8)
    if name == "nsga2":
        pop = 10 if budget_trials is None else max(4, min(50, budget_trials // 4))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=pop)
    if name == "gp":
        # GP handles a static space only; the conditional cache parameters fall back to random sampling
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=8, warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UserError(f"unknown sampler {name!r} (known: {', '.join(SAMPLERS)})")


def worker_specs(base: WorkerSpec, workers: int, ranks: int = 1) -> list[WorkerSpec]:
    """One spec per worker, each pinned to its own device or ``ranks`` devices (on the CPU, a
    share of the threads for each of its ranks)."""
    import torch

    from ..kernels import default_device, device_count

    device = torch.device(base.device) if base.device else default_device()
    visible_env = {"cuda": "CUDA_VISIBLE_DEVICES", "npu": "ASCEND_RT_VISIBLE_DEVICES"}.get(device.type)
    n = device_count(device) if visible_env else 0
    specs = []
    for i in range(workers):
        env: dict[str, str] = {}
        threads = None
        if visible_env and (workers > 1 or ranks > 1):
            # a group's ranks are contiguous; more single-device workers than devices share them
            ids = range(i * ranks, (i + 1) * ranks) if n >= workers * ranks else [i % max(n, 1)]
            env[visible_env] = ",".join(str(d) for d in ids)
        elif not visible_env and workers * ranks > 1:
            threads = max(1, (os.cpu_count() or 1) // (workers * ranks))
        specs.append(WorkerSpec(**{**base.__dict__, "env": {**base.env, **env}, "threads": threads or base.threads}))
    return specs


def ranks_per_worker(opts: TuneOptions, device: str | None) -> int:
    """Ranks each worker's trials span; more devices asked for than are visible is a UserError."""
    import torch

    from ..kernels import default_device, device_count

    kind = torch.device(device) if device else default_device()
    visible = device_count(kind) if kind.type in ("cuda", "npu") else None
    if visible is not None and opts.devices is not None and opts.devices > visible:
        raise UserError(f"--devices {opts.devices}: this machine has {visible} {kind.type} device(s)")
    return opts.ranks_per_worker(visible)


def _pool(base: WorkerSpec, opts: TuneOptions) -> list:
    """The study's workers: rank groups where a trial spans several devices, else one process
    (or this one) per worker."""
    ranks = ranks_per_worker(opts, base.device)
    if ranks > 1:
        from .rankgroup import RankGroupWorker

        return [RankGroupWorker(s, ranks) for s in worker_specs(base, opts.workers, ranks)]
    worker = ProcessWorker if opts.isolate else InProcessWorker
    return [worker(s) for s in worker_specs(base, opts.workers)]


@dataclass
class _Shared:
    """State the worker threads share."""

    study: optuna.Study
    family: str
    objective: str
    constraints: Constraints
    baseline_metrics: dict[str, float]
    max_trials: int | None
    deadline: float | None
    prune_margin: float | None
    samples: Path
    on_trial: Callable[[optuna.trial.FrozenTrial], None]
    space: SpaceContext = field(default_factory=SpaceContext)
    note: Callable[[str], None] = print
    heartbeat_s: int | None = None  # None: the storage keeps no heartbeats
    refine: bool = False  # queue front refinements after each trial (tuner.refine)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    eval_seconds: float = 0.0  # inside the evaluator (model calls, timing, scoring), as it reports
    sample_seconds: float = 0.0  # sampling: study.ask() and the define-by-run suggest
    call_seconds: float = 0.0  # worker.evaluate round trips (the evaluator plus process hand-over)
    repeats_in_row: int = 0
    busy_noted: bool = False
    stop_reason: str = ""
    stale_checked: float = 0.0

    def add(self, name: str, seconds: float) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + seconds)

    def ended(self, reason: str) -> None:
        """Record why the study ends; the first reason given is the study's. Call with the lock held."""
        self.stop_reason = self.stop_reason or reason

    def counted(self, below: int | None = None) -> int:
        """Trials that count against the trial budget: not queued, not answered from storage as a
        repeat, not stopped with their process (their point runs again)."""
        trials = self.study.get_trials(deepcopy=False)
        requeued = {t.user_attrs.get("requeued_from") for t in trials}
        n = 0
        for t in trials:
            if (t.state == TrialState.WAITING or t.user_attrs.get("over_budget") or t.user_attrs.get("interrupted")
                    or "repeat_of" in t.user_attrs or (t.state == TrialState.FAIL and t.number in requeued)):
                continue
            if below is None or t.number < below:
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


def run_study(model: str, budget: Budget, out_dir: str | Path | None = None, options: TuneOptions | None = None,
              **fields) -> StudyOutcome:
    """Tune ``model`` within ``budget``; write profile.yaml, report.html and trials.csv to ``out_dir``.

    ``options`` holds how (``TuneOptions``); ``fields`` are TuneOptions fields laid over it, so
    ``run_study(model, budget, out, workers=2)`` needs no options object. A field name that is no
    option is a TypeError naming it.
    """
    started = time.monotonic()
    opts = (options or TuneOptions()).with_fields(**fields)
    opts.validate()
    run = _StudyRun(model, budget, out_dir, opts, started)
    run.open_study()
    run.start_workers()
    run.queue_points()
    run.trial_loop()
    return run.write_outputs()


class _StudyRun:
    """One ``run_study`` call, step by step: each step relies on the ones before it."""

    def __init__(self, model: str, budget: Budget, out_dir: str | Path | None, opts: TuneOptions, started: float):
        self.started = started  # the time budget counts from here
        self.model, self.budget, self.opts = model, budget, opts
        self.out_dir = Path(out_dir) if out_dir is not None else default_out_dir(model)
        self.external = opts.storage is not None  # another machine may share the study
        self.constraints = Constraints(tuple(opts.floors or ()), opts.max_memory_bytes, opts.max_weight_bytes)
        self.notify: Callable[[str], None] = opts.log  # the progress display once it is up
        self.interrupted = False

    def open_study(self) -> None:
        """Check the model and the run folder, then create (or load) the study and write run.json.

        A bad model name, a run folder that already holds a study or one without a study to
        resume is refused before anything is written. Afterwards ``self.study`` exists in its
        storage with its objectives' names, and run.json names it.
        """
        opts, out_dir = self.opts, self.out_dir
        if opts.worker_factory is None:
            from ..models import check

            check(self.model, opts.allow_download)  # a bad name fails now, not in a worker minutes later
        if not self.external:
            if has_study(out_dir) and not opts.resume:
                raise UserError(f"{out_dir} already holds a study; pass --resume to continue it or choose another --out")
            if opts.resume and not has_study(out_dir):
                raise UserError(f"{out_dir} holds no study to resume")
        self.fresh = not self.external and not opts.resume
        self.made_dir = not out_dir.exists()
        out_dir.mkdir(parents=True, exist_ok=True)
        own = read_run_json(out_dir) if opts.resume and not self.external else None
        if opts.storage is not None:
            self.url = opts.storage
        elif opts.resume:  # the run's own study, whatever --workers says now
            self.url = run_storage(out_dir)
        else:
            self.url = default_storage(out_dir, opts.workers)
        name = opts.study_name or (own or {}).get("study") or Path(self.model).name
        direction = "maximize" if METRIC_DIRECTIONS.get(opts.objective) else "minimize"

        def requeue_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number})
            self.notify(f"trial {trial.number} sent no heartbeat for {opts.grace_period} s (its process died); "
                        "its point is queued again")

        self.study = study = optuna.create_study(
            study_name=name,
            storage=open_storage(self.url, heartbeat_interval=opts.heartbeat_interval, grace_period=opts.grace_period,
                                 on_stale=requeue_stale),
            directions=["minimize", direction],
            sampler=make_sampler(opts.sampler, opts.seed, self.budget.trials),
            load_if_exists=opts.resume or self.external,  # an explicit storage is how other machines join a study
        )
        _check_ranks(study, ranks_per_worker(opts, opts.device))
        write_run_json(out_dir, self.url, name)
        if study.metric_names is None:  # optuna-dashboard and plot_pareto_front label their axes with these
            with ignoring(optuna.exceptions.ExperimentalWarning):
                study.set_metric_names([RELATIVE_LATENCY, opts.objective])

    def start_workers(self) -> None:
        """Build one worker per device or device group and start the first: it loads the model and computes the
        baseline outputs, whose description (``self.info``) the study's attributes record.

        A start that fails leaves a fresh run as it found it (no study, no run.json, no folder it
        made), so the same command can be given again; a worker that cannot start is a UserError.
        """
        opts = self.opts
        metrics = tuple(m for m in dict.fromkeys(("psnr", "ssim", opts.objective,
                                                   *(f.metric for f in self.constraints.floors)))
                        if m not in OTHER_OBJECTIVES)
        base_spec = WorkerSpec(model=self.model, device=opts.device, dtype=opts.dtype, allow_download=opts.allow_download,
                               prompts=opts.prompts, seed=opts.seed, warmup=opts.warmup, repeats=opts.repeats,
                               factory=opts.worker_factory, metrics=metrics, clip_model=opts.clip_model,
                               interleave=opts.interleave, baseline_cache=opts.baseline_cache,
                               generation=dict(opts.generation or {}), seeds=list(opts.seeds) if opts.seeds else None)
        try:
            self.pool = _pool(base_spec, opts)
            opts.log(f"loading {self.model} and computing the baseline outputs ...")
            try:
                self.info = self.pool[0].start()
            except WorkerStartError as e:
                raise UserError(str(e)) from None
        except BaseException:
            if self.fresh:  # nothing ran: the same command can be given again without --resume
                _forget_failed_start(self.study, self.out_dir, self.made_dir)
            raise
        if not opts.quiet:
            for line in header_lines(self.model, self.info, self.budget, self.constraints.spec()["floors"],
                                     opts.max_memory_bytes, opts.sampler, redact(self.url), opts.objective):
                opts.log(line)
        _record_study_attrs(self.study, self.info, opts.objective, self.constraints, opts.sampler, self.budget,
                            opts.warmup, opts.repeats, self.url, ranks_per_worker(opts, opts.device))

    def queue_points(self) -> None:
        """Queue what runs before the sampler: on a new study the presets, the baseline first
        (trial 0); on the run's own resumed study the points of trials a killed process left
        running. Both need the model's family and space, known once a worker has loaded it."""
        self.space = SpaceContext.from_dict(self.info.get("space"))  # block/step counts, schedulers, centred thresholds
        if not self.opts.compile:
            self.space = dataclasses.replace(self.space, compile=False)
        if not self.study.trials:
            points = presets(self.info["model"]["family"], self.space)
            # in a rank group the meshes come right after the baseline: what the group is for,
            # and CFG parallel is exact, so a short budget still measures it
            meshed = [p for p in points[1:] if p.get("parallel.mesh", "single") != "single"]
            for params in points[:1] + meshed + [p for p in points[1:] if p not in meshed]:
                # another machine may be doing the same
                self.study.enqueue_trial(params, user_attrs={PRESET: True}, skip_if_exists=True)
        elif not self.external:
            _requeue_interrupted(self.study, self.opts.log)

    def trial_loop(self) -> None:
        """Run the worker threads' ask/tell loops until the budget is spent, the space exhausted or
        Ctrl-C pressed, drawing the progress display meanwhile.

        The first Ctrl-C lets the running trials finish; a second aborts them, and after
        ABORT_GRACE_S the loop returns without the threads that have not handed theirs back.
        Trials aborted here are failed as interrupted and their points queued again. The previous
        SIGINT handler is back in place on return, however the loop ended.
        """
        opts, study, pool = self.opts, self.study, self.pool
        deadline = None if self.budget.seconds is None else self.started + self.budget.seconds
        samples = self.out_dir / "samples"
        samples.mkdir(exist_ok=True)
        ui = ProgressUI(self.budget, study, enabled=opts.progress, quiet=opts.quiet, log=opts.log, console=opts.console)
        self.ui = ui
        self.shared = shared = _Shared(study, self.info["model"]["family"], opts.objective, self.constraints,
                                       self.info["baseline_metrics"], self.budget.trials, deadline, opts.prune_margin,
                                       samples, ui.trial_done, space=self.space, note=ui.note,
                                       heartbeat_s=_heartbeat_interval(study), refine=refines(opts.sampler))
        self.notify = ui.note

        threads = [threading.Thread(target=_drive, args=(shared, f"w{i}", w), daemon=True) for i, w in enumerate(pool)]
        self.t_loop = time.monotonic()
        aborted_at: float | None = None

        def on_sigint(signum, frame):
            # a flag, not an exception: a KeyboardInterrupt inside a storage call could leave the
            # database locked and the worker threads waiting on it
            nonlocal aborted_at
            if not shared.stop.is_set():
                shared.stop.set()
                self.interrupted = True
                ui.note("stopping after the current trial; Ctrl-C again to abort it")
            elif aborted_at is None:
                aborted_at = time.monotonic()
                ui.note("aborting the running trial")
                for w in pool:
                    w.abort()  # does not wait: the worker threads hand the trials back as interrupted

        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, on_sigint) if in_main else None
        try:
            with ui:
                for t in threads:
                    t.start()
                while any(t.is_alive() for t in threads):
                    for t in threads:
                        t.join(timeout=0.25)
                    ui.refresh(study, self.started)
                    if aborted_at is not None and time.monotonic() - aborted_at > ABORT_GRACE_S:
                        break  # a step that is slow to end: leave its (daemon) thread behind
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)
        if aborted_at is not None and not self.external:
            _requeue_interrupted(study, opts.log)  # only this process writes the run's own storage
        self.loop_seconds = time.monotonic() - self.t_loop

    def write_outputs(self) -> StudyOutcome:
        """Confirm the front (unless interrupted), close the workers, record the timing and why
        the study stopped, then write profile.yaml, trials.csv and report.html."""
        opts, study, pool, shared = self.opts, self.study, self.pool, self.shared
        loop_seconds = self.loop_seconds
        if not self.interrupted:
            # even rounds: as many AB as BA; bounded by the time the search itself took
            confirm_front(study, pool[0], max(2 * opts.repeats, 6), log=self.ui.note,
                          time_limit_s=max(CONFIRM_MIN_S, CONFIRM_SHARE * loop_seconds), precision=opts.confirm_precision,
                          how=opts.pick_how)
        for w in pool:
            w.close()
        busy = loop_seconds * len(pool)
        study.set_user_attr("timing", {
            "startup_seconds": round(self.t_loop - self.started, 3),  # loading the model and its baseline outputs
            "loop_seconds": round(loop_seconds, 3),
            "inference_seconds": round(shared.eval_seconds, 3),
            "sampler_seconds": round(shared.sample_seconds, 3),
            "handover_seconds": round(max(0.0, shared.call_seconds - shared.eval_seconds), 3),
            "overhead_share": round(max(0.0, 1 - shared.eval_seconds / busy), 4) if busy > 0 else None,
        })
        study.set_user_attr("stop_reason", "interrupted" if self.interrupted else shared.stop_reason or "stopped")
        outcome = write_outputs(study, self.out_dir, opts.pick_how)
        outcome.interrupted = self.interrupted
        if not opts.quiet:
            for line in closing_lines(study, outcome.reason, loop_seconds, study.user_attrs.get("stop_reason", ""),
                                      outcome.against_preset):
                opts.log(line)
        return outcome


def _forget_failed_start(study: optuna.Study, out_dir: Path, made_dir: bool) -> None:
    """Remove the study a start that failed before its first trial left in the run folder."""
    from .storage import JOURNAL, RUN_JSON, STUDY_DB

    try:
        optuna.delete_study(study_name=study.study_name, storage=storage_of(study))
    except Exception as e:  # noqa: BLE001  (the files go below either way)
        logger.debug("could not delete the failed study: %s", e)
    engine = getattr(getattr(storage_of(study), "engine", None), "dispose", None)
    if engine is not None:
        engine()  # SQLite: let go of the file before it is removed
    (out_dir / RUN_JSON).unlink(missing_ok=True)
    for name in (STUDY_DB, JOURNAL):
        for path in out_dir.glob(name + "*"):  # with SQLite's -wal/-shm and the journal's lock
            path.unlink(missing_ok=True)
    if made_dir:
        try:
            out_dir.rmdir()  # only when empty: anything else there is not ours to remove
        except OSError:
            pass


def confirmation_candidates(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Feasible points faster than the baseline on or near the front: the best speed-up and those
    within CONFIRM_MARGIN of it or whose interval reaches the best speed-up, one per point, at most
    CONFIRM_MAX, fastest first; and the fastest preset (``best_preset``) second, wherever it reads."""
    conf = confirmations(study)
    feasible = [t for t in completed(study) if is_feasible(t) and not is_neutral_point(t)
                and "repeat_of" not in t.user_attrs and str(t.number) not in conf]
    speeds = {t.number: speed_of(t) for t in feasible}
    faster = sorted((t for t in feasible if (speeds[t.number].speedup or 0) > 1.0),
                    key=lambda t: -speeds[t.number].speedup)
    if not faster:
        return []
    best = speeds[faster[0].number]
    # a point whose interval does not reach the best one's speed-up is not a contender: its
    # rounds go to the best point instead (beside a CPU-bound process a 1.44x [1.18-2.36] point
    # took a fifth of the time while the best one, 2.52x [1.88-3.32], stopped at ±12%)
    near = [t for t in faster if speeds[t.number].speedup >= (1 - CONFIRM_MARGIN) * best.speedup
            or (speeds[t.number].high or 0) >= best.speedup]
    unique: dict = {}
    for t in near:
        unique.setdefault(t.user_attrs.get("config_id") or tuple(sorted(t.params.items())), t)
    todo = list(unique.values())[:CONFIRM_MAX]
    # the best preset alone is what the search has to beat: it is confirmed beside the best point,
    # right after it (the time left for the others may run out), so the two are compared alike
    preset = best_preset(study)
    if preset is None or str(preset.number) in conf or todo[0].number == preset.number:
        return todo
    others = [t for t in todo[1:] if t.number != preset.number]
    return [todo[0], preset, *others][:max(CONFIRM_MAX, 2)]


def _config_of(t: optuna.trial.FrozenTrial) -> dict:
    return t.user_attrs.get("config") or config_from_params(t.params).to_dict()


def _confirmed_entry(cmp: Comparison) -> dict:
    """What the study stores of a confirmation: the pooled figures and the per-round ratios (a
    later top-up pools with them)."""
    b, c = cmp.baseline, cmp.candidate
    return {
        "speedup": cmp.speedup, "speedup_low": cmp.speedup_low, "speedup_high": cmp.speedup_high,
        "latency_s": c.median_s, "latency_iqr_s": c.iqr_s, "cpu_s": c.cpu_s,
        "baseline_s": b.median_s, "baseline_iqr_s": b.iqr_s, "baseline_cpu_s": b.cpu_s,
        "rounds": len(c.samples), "ratios": list(cmp.ratios) if cmp.ratios else None,
        "samples": {"baseline": list(b.samples), "candidate": list(c.samples)},
    }


def _pooled_entry(before: dict, payload: dict) -> dict:
    """A stored confirmation and a top-up of the same point as one measurement."""
    return _confirmed_entry(Comparison.pooled([Comparison.from_dict(_as_payload(before)), Comparison.from_dict(payload)]))


def confirm_front(study: optuna.Study, worker, repeats: int, log: Callable[[str], None] = print,
                  time_limit_s: float | None = None, precision: float | None = CONFIRM_PRECISION,
                  how: str = "fastest") -> dict:
    """Re-measure the confirmation candidates in the worker (it holds the loaded pipeline), in
    three steps, within ``time_limit_s`` (no step started once it is spent):

    1. every candidate: ``repeats`` interleaved rounds against the baseline on every prompt, the
       best first (always measured), the best preset second, and no other started once the time is
       spent (those left stay unconfirmed);
    2. the point the pick now falls on (``pick(study, how)``): topped up with more rounds, pooled
       with its first ones, until its interval is within ``precision`` of its speed-up, with the
       time left but for what step 3 needs. The precision goes where the profile's figures come
       from, whichever candidate that turns out to be;
    3. that point timed head to head against the best preset alone (``Evaluator.versus``), until
       the ratio's interval leaves out 1.0 or is within ``precision``; stored as ``VERSUS_PRESET``.

    Stored in the study's ``confirmed`` attribute by trial number, after each measurement."""
    found = confirmations(study)
    todo = confirmation_candidates(study)
    if not todo:
        return found
    aim = f"; then the pick's until within ±{precision:.0%}" if precision else ""
    log(f"confirming {len(todo)} point(s) near the front: {repeats} interleaved rounds on every prompt{aim} ...")
    started = time.monotonic()

    def left() -> float | None:
        return None if time_limit_s is None else time_limit_s - (time.monotonic() - started)

    first_pass_s: dict[int, float] = {}
    for i, t in enumerate(todo):
        if i and left() is not None and left() <= 0:
            log(f"confirmation used its {time_limit_s:.0f} s; trial(s) {', '.join(str(u.number) for u in todo[i:])} "
                "stay unconfirmed")
            break
        t0 = time.monotonic()
        outcome = worker.confirm(_config_of(t), repeats)
        first_pass_s[t.number] = time.monotonic() - t0
        if outcome.kind == INTERRUPTED:
            return found
        if not outcome.ok:
            log(f"trial {t.number} could not be re-measured ({outcome.reason}); it stays unconfirmed")
            continue
        found[str(t.number)] = _confirmed_entry(Comparison.from_dict(outcome.result))
        log(f"confirmed trial {t.number}: {speed_of(t, found).text()} (first measured {speed_of(t).text()})")
        study.set_user_attr("confirmed", found)

    leader, _ = pick(study, how)
    mine = found.get(str(leader.number)) if leader is not None else None
    if precision and mine is not None and Comparison.from_dict(_as_payload(mine)).relative_spread > precision:
        # kept for step 3: about one pass of the leader's own (two settings cost no more than the
        # baseline and one)
        reserve = first_pass_s.get(leader.number, 0.0) if _head_to_head(study, how, found) else 0.0
        budget = None if left() is None else left() - reserve
        if budget is None or budget > 0:
            outcome = worker.confirm(_config_of(leader), repeats, precision=precision, max_s=budget,
                                     prior_ratios=mine["ratios"])
            if outcome.kind == INTERRUPTED:
                return found
            if outcome.ok:
                found[str(leader.number)] = _pooled_entry(mine, outcome.result)
                study.set_user_attr("confirmed", found)
                log(f"topped up trial {leader.number}: {speed_of(leader, found).text()} over {found[str(leader.number)]['rounds']} rounds")
            else:
                log(f"trial {leader.number} could not be topped up ({outcome.reason})")
    pair = _head_to_head(study, how, found)  # the pooled figures may have moved the pick
    if pair is not None and (left() is None or left() > 0):
        leader, preset = pair
        outcome = worker.versus(_config_of(preset), _config_of(leader), repeats, precision=precision,
                                max_s=None if left() is None else max(0.0, left()))
        if outcome.ok:
            r = Comparison.from_dict(outcome.result)
            study.set_user_attr(VERSUS_PRESET, {
                "pick": leader.number, "preset": preset.number, "speedup": r.speedup, "speedup_low": r.speedup_low,
                "speedup_high": r.speedup_high, "rounds": len(r.candidate.samples)})
            log(f"head to head, trial {leader.number} runs {r.speedup:.2f}x [{r.speedup_low:.2f}-{r.speedup_high:.2f}] "
                f"as fast as the best preset, trial {preset.number}")
        elif outcome.kind != INTERRUPTED:
            log(f"trial {leader.number} could not be timed against the best preset ({outcome.reason})")
    return found


def _head_to_head(study: optuna.Study, how: str, found: dict):
    """(the point the pick falls on, the best preset alone) when both are confirmed and are two
    different settings; None otherwise."""
    leader, _ = pick(study, how)
    preset = best_preset(study, found)
    if leader is None or preset is None or leader.number == preset.number:
        return None
    if str(leader.number) not in found or str(preset.number) not in found or _config_of(leader) == _config_of(preset):
        return None
    return leader, preset


def _as_payload(entry: dict) -> dict:
    """A stored confirmation in ``Comparison.as_dict``'s shape."""
    samples = entry.get("samples") or {}
    return {"baseline": {"median_s": entry["baseline_s"], "samples": samples.get("baseline"), "cpu_s": entry.get("baseline_cpu_s")},
            "candidate": {"median_s": entry["latency_s"], "samples": samples.get("candidate"), "cpu_s": entry.get("cpu_s")},
            "speedup": entry["speedup"], "speedup_low": entry.get("speedup_low"), "speedup_high": entry.get("speedup_high"),
            "ratios": entry.get("ratios")}


def _check_ranks(study: optuna.Study, ranks: int) -> None:
    """A resumed or joined study runs its trials on the ranks it was made with: the meshes it
    samples (``parallel.mesh``'s choices) are those a group of that size can run."""
    made = study.user_attrs.get("ranks_per_trial")
    if made is not None and made != ranks:
        raise UserError(f"study {study.study_name!r} runs each trial on {made} rank(s), this command on {ranks}: "
                        f"its meshes need the same group; give --devices so that devices / workers = {made}")


def _record_study_attrs(study, info, objective, constraints, sampler, budget, warmup, repeats, url, ranks=1) -> None:
    attrs = study.user_attrs
    if "model" in attrs:
        if attrs["model"].get("fingerprint") != info["model"]["fingerprint"]:
            raise UserError(
                f"study {study.study_name!r} was made with model {attrs['model'].get('name')} "
                f"(fingerprint {attrs['model'].get('fingerprint')}), not this one ({info['model']['fingerprint']})"
            )
        return
    meta = {
        "model": info["model"],
        "workload": info["workload"],
        "objective": objective,
        "objective_direction": "maximize" if METRIC_DIRECTIONS.get(objective) else "minimize",
        "floors": constraints.spec()["floors"],
        "max_memory_bytes": constraints.max_memory_bytes,
        "max_weight_bytes": constraints.max_weight_bytes,
        "sampler": sampler,
        "hardware": info["hardware"],
        "baseline_metrics": info["baseline_metrics"],
        "budget": str(budget),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "latency": {"warmup": warmup, "repeats": repeats},
        "storage": redact(url),
        "ranks_per_trial": ranks,
    }
    for key, value in meta.items():
        study.set_user_attr(key, value)


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
    study.enqueue_trial(params)


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


def _drive(shared: _Shared, wid: str, worker) -> None:
    """One worker's ask/tell loop; returns when the budget is spent or a stop is asked for."""
    study = shared.study
    while not shared.stop.is_set():
        if shared.deadline is not None and time.monotonic() >= shared.deadline:
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
                trial = study.ask()
            shared.sample_seconds += time.perf_counter() - t0
        if shared.max_trials is not None and shared.counted(below=trial.number) >= shared.max_trials:
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
        if shared.deadline is not None and time.monotonic() >= shared.deadline:
            return
        points = refinements(shared.study, trial, [str(f) for f in shared.constraints.floors])
        for r in points:
            # skip_if_exists: another machine sharing the study may have queued it meanwhile
            shared.study.enqueue_trial(r.params, user_attrs=r.user_attrs, skip_if_exists=True)
    for r in points:
        shared.note(r.note())


def _run_trial(shared: _Shared, trial: optuna.Trial, worker) -> bool:
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
    t0 = time.perf_counter()
    outcome = worker.evaluate(config.to_dict(), shared.constraints.spec(), shared.prune_margin)
    shared.add("call_seconds", time.perf_counter() - t0)
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
    trial.set_user_attr("counters", result["counters"])
    _save_sample(shared.samples / f"trial-{trial.number:04d}.png", result["sample"])
    if outcome.kind == PRUNED:  # nothing was timed: a pruned point carries no latency
        trial.set_user_attr("prune_reason", outcome.reason)
        study.tell(trial, state=TrialState.PRUNED)
        return False
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
    return False


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


def write_outputs(study: optuna.Study, out_dir: Path, pick_how: str | None = None,
                  samples_dir: Path | None = None) -> StudyOutcome:
    """Pick the profile and write profile.yaml, trials.csv and report.html from the stored study.

    ``pick_how`` None re-picks the way the study last picked (stored as its ``pick`` attribute);
    a pick given is stored for the next time. A profile.yaml already in ``out_dir`` that differs
    from the new one is kept as profile.<n>.yaml.
    """
    from ..paths import keep_previous
    from ..reports import write_report, write_trials_table
    from .importance import param_importances
    from .table import trials_table

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if pick_how is None:
        pick_how = study.user_attrs.get("pick") or "fastest"
    chosen, reason = pick(study, pick_how)
    if study.user_attrs.get("pick") != pick_how:
        study.set_user_attr("pick", pick_how)
    profile = freeze_profile(study, chosen) if chosen is not None else None
    kept = profile_path = None
    if profile is not None:
        kept = keep_previous(out_dir / "profile.yaml", profile.to_yaml())
        profile_path = profile.save(out_dir / "profile.yaml")
    df = trials_table(study)
    table_path = write_trials_table(df, out_dir / "trials.csv", metrics=METRIC_DIRECTIONS)
    chosen_no = chosen.number if chosen is not None else None
    base = baseline_trial(study)
    against = against_best_preset(study, chosen)
    report_path = write_report(
        df, study.user_attrs, out_dir / "report.html", chosen_no, reason if against is None else f"{reason}; {against}",
        study.study_name, metrics=METRIC_DIRECTIONS,
        importances=param_importances(study, study.user_attrs.get("objective", "psnr")),
        baseline_no=base.number if base is not None else None, samples_dir=samples_dir,
    )
    return StudyOutcome(study, out_dir, profile, profile_path, report_path, table_path, reason=reason,
                        stop_reason=study.user_attrs.get("stop_reason", ""), kept_path=kept, against_preset=against)


def freeze_profile(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> Profile:
    attrs = study.user_attrs
    speed = speed_of(trial, confirmations(study), baseline_trial(study))
    metrics = trial.user_attrs.get("metrics", {})
    measured = {
        "latency_s": _round(speed.latency_s),
        "baseline_s": _round(speed.baseline_s),
        "speedup": _round(speed.speedup),
        "speedup_low": _round(speed.low),
        "speedup_high": _round(speed.high),
        "confirmed": speed.confirmed,
        "latency_iqr_s": _round(speed.latency_iqr_s),
        "baseline_iqr_s": _round(speed.baseline_iqr_s),
        "cpu_s": _round(speed.cpu_s),
        "baseline_cpu_s": _round(speed.baseline_cpu_s),
        **{k: _finite(v) for k, v in metrics.items()},
        "skipped_fraction": _round(trial.user_attrs.get("counters", {}).get("skipped_fraction")),
        # linear weights with their quantisation scales, every component (what --max-weight-bytes caps)
        "weight_bytes": trial.user_attrs.get("counters", {}).get("weight_bytes"),
        "feasible": is_feasible(trial),
    }
    workload = attrs.get("workload", {})
    generation = {"height": None, "width": None, "num_frames": None, **workload.get("generation", {})}
    accel = AccelConfig.from_dict(trial.user_attrs["config"]) if "config" in trial.user_attrs else config_from_params(trial.params)
    return Profile(
        model=dict(attrs["model"]),
        generation=generation,
        accel=accel,
        measured=measured,
        # the picked call's ranks, not the study's group: a single-device pick deploys on one device
        hardware={**attrs.get("hardware", {}), "world_size": accel.parallel.world_size},
        study={
            "name": study.study_name,
            "trial": trial.number,
            "storage": attrs.get("storage"),
            "created": attrs.get("created"),
            "prompts": workload.get("prompts"),
            "seeds": workload.get("seeds"),
            # what the trial was picked under: the same trial can be the pick of one floor and not another
            "objective": attrs.get("objective"),
            "floors": list(attrs.get("floors") or []),
            "pick": attrs.get("pick"),
        },
    )


def _finite(v):
    if isinstance(v, float) and math.isinf(v):
        return "inf"  # identical to the baseline
    return _round(v)


def _round(v, digits: int = 6):
    # significant digits, not decimals: a 1 ms GPU call keeps the precision of a 10 s CPU one
    return None if v is None else float(f"{float(v):.{digits}g}")


def _save_sample(path: Path, arr) -> None:
    from PIL import Image

    if arr.ndim == 4:  # video: frames side by side, and an animated WebP the report can play
        frames = [Image.fromarray(f) for f in arr]
        frames[0].save(path.with_suffix(".webp"), save_all=True, append_images=frames[1:], duration=125, loop=0, lossless=True)
        arr = arr.transpose(1, 0, 2, 3).reshape(arr.shape[1], -1, arr.shape[3])
    Image.fromarray(arr).save(path)


def export(run_dir: str | Path, pick_how: str | None = None, storage: str | None = None,
           out_dir: str | Path | None = None) -> StudyOutcome:
    """Re-pick the profile of a finished run without running anything (``pick_how`` None: the
    study's own pick); the outputs go to ``out_dir`` (default the run folder)."""
    run_dir = Path(run_dir)
    return write_outputs(load_run(run_dir, storage), Path(out_dir) if out_dir is not None else run_dir, pick_how,
                         samples_dir=run_dir / "samples")
