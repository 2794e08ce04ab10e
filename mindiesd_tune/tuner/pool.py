"""The study's workers and sampler: one worker per device or device group, each spec pinned to
its devices (or its share of the CPU threads)."""

from __future__ import annotations

import os

import optuna

from ..errors import UserError
from .options import SAMPLERS, TuneOptions
from .quiet import ignoring
from .worker import InProcessWorker, ProcessWorker, WorkerSpec


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


def pool_of(base: WorkerSpec, opts: TuneOptions) -> list:
    """The study's workers: rank groups where a trial spans several devices, else one process
    (or this one) per worker."""
    ranks = ranks_per_worker(opts, base.device)
    if ranks > 1:
        from .rankgroup import RankGroupWorker

        return [RankGroupWorker(s, ranks) for s in worker_specs(base, opts.workers, ranks)]
    worker = ProcessWorker if opts.isolate else InProcessWorker
    return [worker(s) for s in worker_specs(base, opts.workers)]
