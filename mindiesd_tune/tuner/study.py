"""The study: Optuna asks for a config, a worker scores it, the profile is frozen at the end.

A study runs in phases, each a module: the plan (``tuner.plan``: what the budget buys, when
each phase ends), the search (``tuner.search``: screened trials, the promising ones timed in
full, ``tuner.screen``), the confirmation (``tuner.confirm``) and the outputs
(``tuner.outputs``). This module opens the study, starts the workers and runs the phases within
the budget, which counts from the end of model loading to the outputs on disk.

Ctrl-C or SIGTERM at any point after loading ends the study with its outputs written from what
had finished (``_Interrupts``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import optuna

from ..errors import UserError
from ..metrics import METRIC_DIRECTIONS
from ..quality import judged_on
from ..search_spaces import SpaceContext, presets
from . import resume
from .budget import Budget
from .confirm import confirm_front
from .objectives import Constraints
from .options import OTHER_OBJECTIVES, TuneOptions, holdout_given, judge_for
from .outputs import StudyOutcome, write_outputs
from .pick import PRESET
from .plan import Costs, Plan
from .pool import make_sampler, pool_of, ranks_per_worker
from .progress import ProgressUI, closing_lines, header_lines
from .quiet import ignoring
from .refine import refines
from .search import _drive, _heartbeat_interval, _requeue_interrupted, _Shared
from .storage import (
    default_storage,
    has_study,
    open_storage,
    read_run_json,
    redact,
    run_storage,
    storage_of,
    write_run_json,
)
from .worker import WorkerSpec, WorkerStartError

# The first objective's name: latency as a share of the baseline's timed beside it (1 / speed-up).
RELATIVE_LATENCY = "latency_over_baseline"
# After a second Ctrl-C, how long the worker threads get to hand back their aborted trials
# before the outputs are written without them (a denoising step cannot be cut short).
ABORT_GRACE_S = 3.0
INTERRUPTED_EXIT = 130

logger = logging.getLogger(__name__)


def default_out_dir(model: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{Path(model).name}-{stamp}"


def run_study(model: str, budget: Budget, out_dir: str | Path | None = None, options: TuneOptions | None = None,
              **fields) -> StudyOutcome:
    """Tune ``model`` within ``budget``; write profile.yaml, report.html and trials.csv to ``out_dir``.

    The budget's time is wall clock from the end of model loading to the outputs on disk.
    ``options`` holds how (``TuneOptions``); ``fields`` are TuneOptions fields laid over it, so
    ``run_study(model, budget, out, workers=2)`` needs no options object. A field name that is no
    option is a TypeError naming it.
    """
    opts = (options or TuneOptions()).with_fields(**fields)
    opts.validate()
    run = _StudyRun(model, budget, out_dir, opts)
    run.open_study()
    run.start_workers()
    with _Interrupts(run):
        run.queue_points()
        run.trial_loop()
        run.confirm()
        return run.finish()


def plan_study(model: str, budget: Budget, options: TuneOptions | None = None, **fields) -> list[str]:
    """``tune --dry-run``: load the model, time the baseline and return the header and plan lines,
    writing nothing (no run folder, no study, no baseline cache)."""
    opts = (options or TuneOptions()).with_fields(**fields, baseline_cache=None, workers=1)
    opts.validate()
    run = _StudyRun(model, budget, None, opts)
    if opts.worker_factory is None:
        from ..models import check

        check(model, opts.allow_download)
    pool = pool_of(run.worker_spec(), opts)
    try:
        t0 = time.monotonic()
        try:
            info = pool[0].start()
        except WorkerStartError as e:
            raise UserError(str(e)) from None
        run.info, run.pool = info, pool
        run.started = time.monotonic() - (info.get("ready_seconds") or 0.0)
        run.load_seconds = run.started - t0
        return run.header() + run.make_plan().lines(time.monotonic() - run.started)
    finally:
        for w in pool:
            w.close()


class _StudyRun:
    """One ``run_study`` call, step by step: each step relies on the ones before it."""

    def __init__(self, model: str, budget: Budget, out_dir: str | Path | None, opts: TuneOptions):
        self.model, self.budget, self.opts = model, budget, opts
        self.out_dir = Path(out_dir) if out_dir is not None else default_out_dir(model)
        self.external = opts.storage is not None  # another machine may share the study
        self.constraints = _constraints(opts, holdout_given(opts.holdout))
        self.notify: Callable[[str], None] = opts.log  # the progress display once it is up
        self.interrupted = False
        self.phase = "loading"
        self.ui = None
        self.shared = None
        self.aborted_at: float | None = None
        self.confirm_seconds = 0.0
        self.search_seconds = 0.0

    def open_study(self) -> None:
        """Check the model and the run folder, then create (or load) the study and write run.json.

        A bad model name, a run folder that already holds a study or one without a study to
        resume is refused before anything is written. A study that exists already (a resume, or
        a shared storage another machine made it in) runs with the options it was made with
        (``tuner.resume``). Afterwards ``self.study`` exists in its storage with its objectives'
        names and options, and run.json names it.
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

        def requeue_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number})
            self.notify(f"trial {trial.number} sent no heartbeat for {opts.grace_period} s (its process died); "
                        "its point is queued again")

        storage = open_storage(self.url, heartbeat_interval=opts.heartbeat_interval, grace_period=opts.grace_period,
                               on_stale=requeue_stale)
        saved = _saved_options(storage, name) if (opts.resume or self.external) else None
        if saved:
            self.opts = opts = resume.resumed(opts, saved, str(out_dir if not self.external else redact(self.url)),
                                              joining=self.external)
            self.constraints = _constraints(opts, holdout_given(opts.holdout))
        direction = "maximize" if METRIC_DIRECTIONS.get(opts.objective) else "minimize"
        self.study = study = optuna.create_study(
            study_name=name, storage=storage, directions=["minimize", direction],
            sampler=make_sampler(opts.sampler, opts.seed, self.budget.trials),
            load_if_exists=opts.resume or self.external,  # an explicit storage is how other machines join a study
        )
        _check_ranks(study, ranks_per_worker(opts, opts.device))
        write_run_json(out_dir, self.url, name)
        if study.metric_names is None:  # optuna-dashboard and plot_pareto_front label their axes with these
            with ignoring(optuna.exceptions.ExperimentalWarning):
                study.set_metric_names([RELATIVE_LATENCY, opts.objective])
        if not saved:
            study.set_user_attr(resume.ATTR, resume.stored(opts))

    def worker_spec(self) -> WorkerSpec:
        metrics = tuple(m for m in dict.fromkeys(("psnr", "ssim", self.opts.objective,
                                                   *(f.metric for f in self.constraints.floors)))
                        if m not in OTHER_OBJECTIVES)
        return WorkerSpec.from_options(self.model, self.opts, metrics)

    def start_workers(self) -> None:
        """Build one worker per device or device group and start the first: it loads the model and
        computes the baseline outputs, whose description (``self.info``) the study's attributes
        record. The budget's clock starts at the end of loading (``self.started``).

        A start that fails leaves a fresh run as it found it (no study, no run.json, no folder it
        made), so the same command can be given again; a worker that cannot start is a UserError.
        """
        opts = self.opts
        try:
            self.pool = pool_of(self.worker_spec(), opts)
            opts.log(f"loading {self.model} and computing the baseline outputs ...")
            t0 = time.monotonic()
            try:
                with _spinner(opts, f"loading {self.model} and computing the baseline outputs"):
                    self.info = self.pool[0].start()
            except WorkerStartError as e:
                raise UserError(str(e)) from None
        except BaseException:
            if self.fresh:  # nothing ran: the same command can be given again without --resume
                _forget_failed_start(self.study, self.out_dir, self.made_dir)
            raise
        # the baseline (and the plan's timed call) are the budget's; loading the model is not
        self.started = time.monotonic() - min(self.info.get("ready_seconds") or 0.0, time.monotonic() - t0)
        self.load_seconds = self.started - t0
        # --judge auto follows the held-out prompts the worker actually kept
        self.constraints = _constraints(opts, len((self.info.get("holdout") or {}).get("prompts") or []))
        self.plan = self.make_plan()
        if not opts.quiet:
            for line in self.header() + self.plan.lines(time.monotonic() - self.started):
                opts.log(line)
        _record_study_attrs(self.study, self.info, opts.objective, self.constraints, opts.sampler, self.budget,
                            opts.warmup, opts.repeats, self.url, ranks_per_worker(opts, opts.device))

    def header(self) -> list[str]:
        opts, info = self.opts, self.info
        lines = header_lines(self.model, info, self.budget, self.constraints.spec()["floors"], opts.max_memory_bytes,
                             opts.sampler, redact(getattr(self, "url", "none (dry run)")), opts.objective)
        prompts = len(info["workload"]["prompts"])
        if self.constraints.floors:
            lines.append(f"judged:    a floor on a mean is judged on {judged_on(self.constraints.judge, prompts)}")
        held = (info.get("holdout") or {}).get("prompts") or []
        lines.append(f"held out:  {len(held)} prompt(s) kept out of the search; the pick must meet the floors on them too"
                     if held else "held out:  none (--holdout 0): the pick is judged on its tuning prompts only")
        for name, label in (info.get("set_labels") or {}).items():
            lines.append(f"distance:  {name}: {label}")
        base = info.get("baseline_seconds")
        lines.append(f"loaded:    in {self.load_seconds:.1f} s, outside the budget"
                     + (f"; the baseline outputs then took {base:.1f} s of the budget" if base is not None else ""))
        return lines

    def make_plan(self) -> Plan:
        info, opts = self.info, self.opts
        prompts = len(info["workload"]["prompts"])
        call_s = info.get("call_seconds") or (info.get("baseline_seconds") or 1.0) / max(prompts, 1)
        screening = opts.screening and getattr(self.pool[0], "screens", False)
        costs = Costs(call_s, prompts, opts.warmup, opts.repeats + opts.repeats % 2, self.confirm_repeats(), screening)
        return Plan(costs, self.started, self.budget.seconds)

    def confirm_repeats(self) -> int:
        """A confirmation pass's rounds per prompt: even, as many AB as BA."""
        return max(2 * self.opts.repeats, 6)

    def queue_points(self) -> None:
        """Queue what runs before the sampler: on a new study the presets, the baseline first
        (trial 0); on the run's own resumed study the points of trials a killed process left
        running. Both need the model's family and space, known once a worker has loaded it."""
        self.phase = "search"
        self.space = SpaceContext.from_dict(self.info.get("space"))  # block/step counts, schedulers, centred thresholds
        if not self.opts.compile:
            self.space = dataclasses.replace(self.space, compile=False)
        if not self.study.trials:
            points = presets(self.info["model"]["family"], self.space)
            # in a rank group the meshes come right after the baseline: what the group is for,
            # and CFG parallel is exact, so a short budget still measures it
            meshed = [p for p in points[1:] if p.get("parallel.mesh", "single") != "single"]
            queued = [(p, {PRESET: True}) for p in points[:1] + meshed + [p for p in points[1:] if p not in meshed]]
            if self.opts.warm_start:  # the stored fronts of the family, right after the baseline
                from .warm import warm_points

                queued[1:1] = warm_points(self.opts.warm_start, self.info, self.space, self.opts.log)
            for params, attrs in queued:
                # another machine may be doing the same
                self.study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=True)
        elif not self.external:
            _requeue_interrupted(self.study, self.opts.log)

    def trial_loop(self) -> None:
        """Run the worker threads' ask/tell loops until the plan says the next trial would not end
        within the search's share, the trial budget is spent, the space exhausted or Ctrl-C
        pressed, drawing the progress display meanwhile (``_Interrupts`` stops the loop)."""
        opts, study, pool = self.opts, self.study, self.pool
        samples = self.out_dir / "samples"
        samples.mkdir(exist_ok=True)
        ui = ProgressUI(self.budget, study, enabled=opts.progress, quiet=opts.quiet, log=opts.log, console=opts.console)
        self.ui = ui
        self.shared = shared = _Shared(
            study, self.info["model"]["family"], opts.objective, self.constraints, self.info["baseline_metrics"],
            self.budget.trials, self.plan, opts.prune_margin, samples, ui.trial_done, space=self.space, note=ui.note,
            heartbeat_s=_heartbeat_interval(study), refine=refines(opts.sampler), screening=self.plan.costs.screening,
            # under a trial budget alone the currency is trials, and a parked screen and its later
            # full timing cost two: successive halving saves time, so it ranks only against a clock
            promotion=opts.promotion if self.budget.seconds is not None else 1,
            maximize=bool(METRIC_DIRECTIONS.get(opts.objective)))
        self.notify = ui.note
        if self.interrupted:  # a Ctrl-C while the points were queued
            shared.stop.set()
        threads = [threading.Thread(target=_drive, args=(shared, f"w{i}", w), daemon=True) for i, w in enumerate(pool)]
        self.t_loop = time.monotonic()
        with ui:
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.25)
                ui.refresh(study, self.started, self.plan.search_end)
                if self.aborted_at is not None and time.monotonic() - self.aborted_at > ABORT_GRACE_S:
                    break  # a step that is slow to end: leave its (daemon) thread behind
        if self.aborted_at is not None and not self.external:
            _requeue_interrupted(study, opts.log)  # only this process writes the run's own storage
        self.search_seconds = time.monotonic() - self.t_loop

    def confirm(self) -> None:
        """Confirm the front within the time the plan leaves before the outputs (unless interrupted)."""
        if self.interrupted:
            return
        self.phase = "confirmation"
        limit = self.plan.confirm_left(self.search_seconds)
        t0 = time.monotonic()
        with self.ui.phase("confirmation", limit):
            confirm_front(self.study, self.pool[0], self.confirm_repeats(), log=self.ui.note, time_limit_s=limit,
                          precision=self.opts.confirm_precision, how=self.opts.pick_how, round_s=self.plan.costs.round_s)
        self.confirm_seconds = time.monotonic() - t0

    def finish(self) -> StudyOutcome:
        """Close the workers, record the phases' times and why the study stopped, then write
        profile.yaml, trials.csv and report.html."""
        self.phase = "outputs"
        opts, study, shared = self.opts, self.study, self.shared
        for w in self.pool:
            w.close()
        t0 = time.monotonic()
        busy = self.search_seconds * len(self.pool)
        study.set_user_attr("timing", {
            "load_seconds": round(self.load_seconds, 3),  # outside the budget
            "startup_seconds": round(self.t_loop - self.started, 3),  # the baseline outputs and the plan's call
            "loop_seconds": round(self.search_seconds, 3),
            "screen_seconds": round(shared.screen_seconds, 3),
            "full_seconds": round(shared.full_seconds, 3),
            "confirm_seconds": round(self.confirm_seconds, 3),
            "budget_seconds": self.budget.seconds,
            "inference_seconds": round(shared.eval_seconds, 3),
            "sampler_seconds": round(shared.sample_seconds, 3),
            "handover_seconds": round(max(0.0, shared.call_seconds - shared.eval_seconds), 3),
            "overhead_share": round(max(0.0, 1 - shared.eval_seconds / busy), 4) if busy > 0 else None,
        })
        study.set_user_attr("stop_reason", "interrupted" if self.interrupted else shared.stop_reason or "stopped")
        with self.ui.phase("outputs", self.plan.output_s):
            outcome = write_outputs(study, self.out_dir, opts.pick_how)
        outcome.interrupted = self.interrupted
        if opts.publish and outcome.profile is not None and not self.interrupted:
            from .warm import publish_study

            publish_study(opts.publish, study, outcome.profile, opts.log, space=self.space)
        timing = {**study.user_attrs["timing"], "output_seconds": round(time.monotonic() - t0, 3),
                  "wall_seconds": round(time.monotonic() - self.started, 3)}
        study.set_user_attr("timing", timing)
        if not opts.quiet:
            for line in closing_lines(study, outcome.reason, self.search_seconds, study.user_attrs.get("stop_reason", ""),
                                      outcome.against_preset):
                opts.log(line)
        return outcome


class _Interrupts:
    """Ctrl-C and SIGTERM from the end of loading until the outputs are on disk.

    In the search, the first Ctrl-C lets the running trials finish and a second aborts them
    (failed as interrupted, their points queued again); SIGTERM aborts them at once. In the
    confirmation the first signal aborts the running measurement. Either way the outputs are
    then written from what had finished, the pick labelled unconfirmed where it was not
    re-measured, and the command exits 130. A signal after that ends the process at once: the
    study's storage commits each write whole, so it stays readable (``report RUN_DIR``).
    """

    def __init__(self, run: _StudyRun):
        self.run = run
        self.previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def handle(self, signum, frame) -> None:
        # a flag, not an exception: a KeyboardInterrupt inside a storage call could leave the
        # database locked and the worker threads waiting on it
        run, first = self.run, not self.run.interrupted
        run.interrupted = True
        note = run.notify
        if run.phase == "search" and run.shared is not None:
            if first and signum == signal.SIGINT:
                run.shared.stop.set()
                note("stopping after the current trial; Ctrl-C again to abort it")
                return
            if run.aborted_at is None:
                run.shared.stop.set()
                run.aborted_at = time.monotonic()
                note("aborting the running trial")
                for w in run.pool:
                    w.abort()  # does not wait: the worker threads hand the trials back as interrupted
                return
        elif first:
            if run.phase == "confirmation":
                run.pool[0].abort()
            if run.phase != "outputs":
                note(f"stopping the {run.phase}; writing the outputs from what has finished (Ctrl-C again to quit at once)")
            else:
                note("writing the outputs; Ctrl-C again to quit at once")
            return
        note("quitting at once; `mindiesd-tune report RUN_DIR` rebuilds the outputs from the stored study")
        os._exit(INTERRUPTED_EXIT)


def _spinner(opts: TuneOptions, what: str):
    """A spinner with the elapsed time while ``what`` runs, on a terminal (elsewhere the line
    before it says what is happening, and the header after it how long it took)."""
    con = opts.console
    if opts.quiet or con is None or not con.is_terminal or opts.progress is False:
        return contextlib.nullcontext()
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(SpinnerColumn(), TextColumn(what), TimeElapsedColumn(), console=con, transient=True)
    progress.add_task(what, total=None)
    return progress


def _saved_options(storage, name: str) -> dict | None:
    """The options a stored study was made with (None: no such study, or one made before they
    were stored)."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return storage.get_study_user_attrs(study_id).get(resume.ATTR)


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


def _check_ranks(study: optuna.Study, ranks: int) -> None:
    """A resumed or joined study runs its trials on the ranks it was made with: the meshes it
    samples (``parallel.mesh``'s choices) are those a group of that size can run."""
    made = study.user_attrs.get("ranks_per_trial")
    if made is not None and made != ranks:
        raise UserError(f"study {study.study_name!r} runs each trial on {made} rank(s), this command on {ranks}: "
                        f"its meshes need the same group; give --devices so that devices / workers = {made}")


def _constraints(opts: TuneOptions, held_out: int) -> Constraints:
    return Constraints(tuple(opts.floors or ()), opts.max_memory_bytes, opts.max_weight_bytes, judge_for(opts.judge, held_out))


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
        # what a floor on a mean is judged on (mindiesd_tune.quality), in words for the profile and report
        "judge": constraints.judge,
        "judged_on": judged_on(constraints.judge, len(info["workload"]["prompts"])),
        "holdout": info.get("holdout"),
        "set_labels": info.get("set_labels") or {},
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
