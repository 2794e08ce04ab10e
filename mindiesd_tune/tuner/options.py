"""How a study is run: every tuning option beyond the model, the budget and the run folder.

Kept free of torch, diffusers and Optuna so that building and checking the options costs nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import UserError
from .objectives import QualityFloor

# Metrics a trial can report for each output (set metrics such as FID need more samples than a study runs).
TRIAL_METRICS = ("psnr", "ssim", "ms_ssim", "lpips", "clip", "kid_clip", "kvd_clip", "kvd_i3d", "fvd")
# Objectives that are not quality metrics: the linear layers' weight bytes (minimised), so a
# study trades speed against memory rather than fidelity.
OTHER_OBJECTIVES = ("weight_bytes",)
SAMPLERS = ("tpe", "nsga2", "gp", "random")
JUDGE_CHOICES = ("auto", "bound", "mean")
# RDB storages: a running trial records a heartbeat this often (seconds); a trial whose last
# heartbeat is older than the grace period belongs to a dead process, so it is failed and its
# point queued again. Optuna takes whole seconds.
HEARTBEAT_INTERVAL = 20
GRACE_PERIOD = 90


@dataclass
class TuneOptions:
    """The options of one ``run_study`` call; the defaults are the CLI's.

    What is searched for:
        objective: the second axis of the front (``TRIAL_METRICS`` or ``weight_bytes``); the
            first is latency over the baseline's.
        floors: quality floors a trial must hold to be feasible.
        max_memory_bytes: peak memory cap (device memory; process RSS on the CPU).
        max_weight_bytes: cap on the linear layers' weight bytes, all components.
        sampler: ``tpe`` (constrained multivariate TPE), ``nsga2``, ``gp`` or ``random``. All but
            ``random`` also refine the front (``tuner.refine``): bolder neighbours of the best
            feasible point along its method's knob, bisection back after a floor miss.
            ``random`` is pure random search after the presets, the baseline a search is
            compared with.
        pick_how: which trial becomes the profile: ``fastest``, ``knee`` or ``trial:N``.
        compile: search regional torch.compile where inductor can build kernels for the
            device (False: leave it out, as ``MINDIESD_TUNE_COMPILE=0`` does for every study).
        prune_margin: a trial whose first prompt misses a floor by more than this share is
            pruned before it is timed; None never prunes.
        screening: screen each trial first (one untimed call on the first prompt, one timing
            pair) and time in full only the points that may reach the front (``tuner.screen``);
            False times every trial in full.
        promotion: of the screens that may reach the front, the best 1/``promotion`` (by their
            ratio, as successive halving ranks) are timed in full; the others wait, parked, until
            new screens rank below them (``tuner.screen.rank``). 1 times each one at once.

    The workload every trial runs:
        prompts: the fixed prompts (None: the model's defaults).
        seed: the sampler's seed and the first prompt's.
        seeds: one per prompt, or every prompt with every seed.
        generation: call settings laid over the model's defaults (``workload.WorkloadOptions``).
        device, dtype: where and in which precision the model runs (None: the best device, the
            model's own dtype).
        allow_download: let a hub id be downloaded.

    Timing and scoring:
        warmup: untimed calls before timing.
        repeats: timed calls per trial (the median is reported).
        interleave: time the baseline alternately with every trial, so a speed-up is a ratio
            measured in one run.
        confirm_precision: before the pick, the points near the front are re-timed until the
            speed-up's 95% interval is within this share of it (or the confirmation's time is
            spent); None: one pass of a fixed number of rounds.
        clip_model: the CLIP model for the ``clip`` metric and the CLIP-feature set distances.
        fvd_weights: a local TorchScript I3D for the ``kvd_i3d`` and ``fvd`` set distances.
        judge: how a floor on a mean is judged on the tuning prompts: ``bound`` (its one-sided
            90% confidence bound over the prompts, ``mindiesd_tune.quality``), ``mean`` (the mean
            itself) or ``auto``: ``mean`` where held-out prompts check the pick, else ``bound``
            (``judge_for``).
        holdout: prompts kept out of the search, on which the confirmation measures the pick's
            quality and the floors must hold too: a count (0: none), the prompts themselves, or
            ``auto`` (``models.prompts.holdout_count``: 8 for a built-in demo model, else 2).
        baseline_cache: folder of the on-disk baseline store; None computes the baseline per study.

    Where the study lives and who evaluates it:
        resume: continue the study in the run folder, with the workload, floors, objective,
            pick rule and space it was made with (``tuner.resume``).
        given: the names of the options the caller set on purpose (the CLI's explicit flags);
            on a resume a given option that differs from the study's is refused. None: every
            option that differs from its default counts as given.
        storage: an Optuna storage URL several machines share (None: a file in the run folder).
        study_name: the study's name in the storage (None: the run's own, else the model's name).
        workers: evaluator workers on this machine, each on its own device or device group.
        devices: devices the workers share out, ``devices // workers`` ranks per trial (workers
            must divide it); a group above one rank runs each trial in a rank group
            (``tuner.rankgroup``), whose meshes the study samples. None: every visible CUDA/NPU
            device (one per worker with ``isolate=False`` or a ``worker_factory``, which
            evaluate in one process); on the CPU one process per worker, since CPU rank groups
            are opt-in (N processes sharing the cores, each with ``cpu_count // N`` threads).
        isolate: evaluate in a child process that survives crashes (False: in this process).
        worker_factory: ``module:callable`` building (evaluator, info) from a ``WorkerSpec``,
            instead of loading the model (tests and benchmarks).
        warm_start: a profile store URL: the new study first evaluates the stored fronts of the
            model's family (``tuner.warm``). publish: a profile store URL the CLI publishes the
            profile and front to once the study ends (``tune --publish``).
        heartbeat_interval, grace_period: on an RDB storage a running trial records a heartbeat
            every ``heartbeat_interval`` seconds; one silent for ``grace_period`` seconds (its
            machine died) is failed and its point run again.

    What is shown:
        progress: draw a progress bar (None: when the output is a terminal).
        quiet: leave out the header and closing lines.
        log: where the lines go.
        console: the rich Console the progress bar draws on.
    """

    objective: str = "psnr"
    floors: list[QualityFloor] | None = None
    max_memory_bytes: int | None = None
    max_weight_bytes: int | None = None
    sampler: str = "tpe"
    prompts: list[str] | None = None
    seed: int = 0
    device: str | None = None
    dtype: str | None = None
    warmup: int = 1
    repeats: int = 3
    resume: bool = False
    allow_download: bool = False
    workers: int = 1
    devices: int | None = None
    storage: str | None = None
    study_name: str | None = None
    pick_how: str = "fastest"
    prune_margin: float | None = 0.05
    isolate: bool = True
    worker_factory: str | None = None
    clip_model: str | None = None
    fvd_weights: str | None = None
    judge: str = "auto"
    holdout: Any = "auto"
    interleave: bool = True
    confirm_precision: float | None = 0.1
    compile: bool = True
    screening: bool = True
    promotion: int = 3
    baseline_cache: str | None = None
    heartbeat_interval: int = HEARTBEAT_INTERVAL
    grace_period: int = GRACE_PERIOD
    progress: bool | None = None
    quiet: bool = False
    log: Callable[[str], None] = print
    generation: dict[str, Any] | None = None
    seeds: list[int] | None = None
    console: Any = None
    given: frozenset[str] | None = None
    warm_start: str | None = None
    publish: str | None = None

    def with_fields(self, **fields) -> "TuneOptions":
        """A copy with ``fields`` laid over these options; a name that is no option is a TypeError."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = [name for name in fields if name not in known]
        if unknown:
            raise TypeError(f"unknown tuning option(s): {', '.join(unknown)} (see TuneOptions)")
        return dataclasses.replace(self, **fields)

    def validate(self) -> None:
        """Raise UserError for an option no study can run with."""
        objectives = TRIAL_METRICS + OTHER_OBJECTIVES
        if self.objective not in objectives:
            raise UserError(f"unknown objective {self.objective!r} (known: {', '.join(objectives)})")
        if self.workers < 1:
            raise UserError(f"--workers {self.workers}: give at least one worker")
        if self.devices is not None:
            if self.devices < 1:
                raise UserError(f"--devices {self.devices}: give at least one device")
            if self.devices % self.workers:
                raise UserError(f"--workers {self.workers} does not divide --devices {self.devices}: each worker "
                                "spans the same number of devices")
            self.ranks_per_worker(None)
        if self.confirm_precision is not None and not 0 < self.confirm_precision < 1:
            raise UserError(f"--confirm-precision {self.confirm_precision}: give a share between 0 and 1 (0.1: ±10%)")
        if self.promotion < 1:
            raise UserError(f"--promotion {self.promotion}: give 1 (time every promising screen in full) or more")
        if self.judge not in JUDGE_CHOICES:
            raise UserError(f"--judge {self.judge!r}: use {', '.join(JUDGE_CHOICES)}")
        if self.sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {self.sampler!r} (known: {', '.join(SAMPLERS)})")

    def ranks_per_worker(self, visible: int | None) -> int:
        """Ranks one trial spans: ``devices // workers``; without ``devices``, the ``visible``
        accelerators shared out (None: the CPU, where it is 1). A group of several ranks needs
        isolated workers that load the model themselves; asked for otherwise, a UserError."""
        if self.devices is None:
            if visible is None or not self.isolate or self.worker_factory is not None:
                return 1
            return max(1, visible // self.workers)
        ranks = self.devices // self.workers
        if ranks > 1 and not self.isolate:
            raise UserError(f"--no-isolate with {ranks} devices per worker: a trial spanning devices runs in "
                            "a group of rank processes; drop --no-isolate or give --devices equal to --workers")
        if ranks > 1 and self.worker_factory is not None:
            raise UserError(f"a worker factory evaluates on one device; {ranks} devices per worker need the "
                            "model loaded in every rank")
        return ranks


def judge_for(judge: str, held_out: int) -> str:
    """The judge of a floor on a mean over the tuning prompts, with ``auto`` resolved.

    Where ``held_out`` prompts check the pick, ``auto`` is the mean: the held-out check is what
    corrects the winner's curse, on prompts that played no part in the choice. The bound does
    it on the tuning prompts themselves and pays for it dearly: over demo-flux's four, whose
    per-prompt PSNR spreads by 5.5-8 dB under any cache, the 90% bound sits 4.5-6.6 dB under the
    mean, and only points at 36 dB or more (about 2x) passed it. Without held-out prompts
    nothing else checks the choice, so ``auto`` is the bound."""
    if judge != "auto":
        return judge
    return "mean" if held_out else "bound"


def holdout_given(holdout: Any) -> int:
    """How many held-out prompts ``holdout`` asks for, as far as the options tell (``auto``: 2 or more)."""
    if isinstance(holdout, (list, tuple)):
        return len(holdout)
    if holdout in (None, "auto"):
        return 2
    return int(holdout)
