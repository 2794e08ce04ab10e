"""steps: fewer denoising steps and a scheduler choice (the swap lives in ``accel.cache.steps``).

Its own section, so it composes with every cache and sparse method: fewer steps with a
higher-order scheduler plus caching is one config.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check
from ..registry import Knob, Method, register_method

SCHEDULERS = ("default", "euler", "dpmsolver++", "unipc")
DEFAULT_SCHEDULERS = ("default", "euler")
DEFAULT_STEPS = 28  # the step count assumed when the workload's is unknown


@dataclass
class StepsConfig:
    """Step reduction: fewer denoising steps, optionally with a higher-order scheduler.

    The cheapest lever of all (latency scales with the step count) and the coarsest: every
    step removed is a whole network evaluation. Higher-order multistep solvers (DPM-Solver++,
    UniPC) keep more quality at low step counts than Euler. ``apply`` swaps the scheduler
    (``remove`` restores the original object) and reports the step count the caller must pass
    in ``handle.call_overrides``.

    ``batch_cfg`` is not about the step count but about each step's calls: pipelines that run
    true CFG as two denoiser calls per step (Flux with a negative prompt, Wan, ...) call the
    denoiser on one latent at a time, and a small call leaves most of a device idle. Run as
    one call over both, a step costs less than two calls wherever the device is not already
    full at batch one (``benchmarks/batch_cfg.py`` measures it against unbatched calls; a GPU
    at 1024 px should gain little). The output differs from the baseline only by the batched
    kernels' rounding.

    Attributes:
        num_inference_steps: steps per call; 0 keeps the caller's own (neutral).
        scheduler: ``default`` keeps the pipeline's scheduler (neutral); ``euler``,
            ``dpmsolver++`` or ``unipc`` build one of that kind from the pipeline's scheduler
            config (flow-matching variants for flow-matching pipelines). Which kinds a pipeline
            accepts: ``accel.cache.compatible_schedulers(pipe)``.
        batch_cfg: run each step's conditional and unconditional calls as one batched call
            (pipelines whose spec runs CFG ``separate``ly and names a branch probe or flag;
            not with a ``parallel.cfg`` mesh, which puts the two calls on two devices).
            False: one call per branch, as the pipeline makes them (neutral).
    """

    num_inference_steps: int = 0
    scheduler: str = "default"
    batch_cfg: bool = False

    def validate(self) -> None:
        check(self.num_inference_steps >= 0, "steps.num_inference_steps", self.num_inference_steps, "must be >= 0")
        check(self.scheduler in SCHEDULERS, "steps.scheduler", self.scheduler, f"must be one of {', '.join(SCHEDULERS)}")
        check(isinstance(self.batch_cfg, bool), "steps.batch_cfg", self.batch_cfg, "must be true or false")


def batches_cfg(pipe) -> bool:
    """Whether ``steps.batch_cfg`` can run on ``pipe``: true CFG as two calls per step, with a
    way to know before the first step whether both calls come."""
    from ..specs import UnsupportedModelError, pipeline_spec

    try:
        spec = pipeline_spec(pipe)
    except UnsupportedModelError:
        return False
    return spec.cfg == "separate" and (spec.branch_probe is not None or spec.branch_flag is not None)


def install(model, cfg, handle):
    if cfg == StepsConfig():
        return lambda: None
    pipe = handle.pipe
    if cfg.batch_cfg:  # checked before anything is installed, so a refusal leaves nothing to undo
        from ..config import ConfigError, ConflictError

        if pipe is None or not batches_cfg(pipe):
            what = type(pipe).__name__ if pipe is not None else "a bare denoiser"
            raise ConfigError(f"steps.batch_cfg: {what} does not run CFG as two denoiser calls per step")
        if handle.config is not None and handle.config.parallel.cfg > 1:
            raise ConflictError("steps.batch_cfg cannot be combined with parallel.cfg=2 (the mesh puts the two calls "
                                "on two devices)")
    undo = []
    if cfg.num_inference_steps or cfg.scheduler != "default":
        from ..cache import apply_step_reduction

        undo.append(apply_step_reduction(pipe, cfg.num_inference_steps, cfg.scheduler, handle.call_overrides))
    if cfg.batch_cfg:
        from ..parallel.cfg import install_batched_branches
        from ..specs import pipeline_spec

        spec = pipeline_spec(pipe)
        undo.append(install_batched_branches(model, pipe, spec.branch_probe, spec.branch_flag))

    def remove() -> None:
        for u in reversed(undo):
            u()

    return remove


def suggest(trial, ctx) -> dict:
    """0 (the workload's own count) or a reduced count; a scheduler only when steps are reduced;
    batched CFG calls where the pipeline makes two per step."""
    steps = ctx.num_inference_steps or DEFAULT_STEPS
    choices = [0, *range(max(2, steps // 4), max(2, steps - 1) + 1)]
    params = {"steps.num_inference_steps": trial.suggest_categorical("steps.num_inference_steps", choices)}
    if params["steps.num_inference_steps"]:
        params["steps.scheduler"] = trial.suggest_categorical("steps.scheduler", list(ctx.schedulers or DEFAULT_SCHEDULERS))
    if getattr(ctx, "batch_cfg", None):
        params["steps.batch_cfg"] = trial.suggest_categorical("steps.batch_cfg", [False, True])
    return params


def presets(ctx) -> list[dict]:
    """Batched CFG calls alone, where offered: exact up to rounding, and the search should see
    early whether the device gains from the larger call."""
    return [{"steps.batch_cfg": True}] if getattr(ctx, "batch_cfg", None) else []


def call_overrides(cfg: StepsConfig) -> dict:
    return {"num_inference_steps": cfg.num_inference_steps} if cfg.num_inference_steps else {}


register_method(Method(
    section="steps", name="steps", config=StepsConfig, install=install, suggest=suggest,
    presets=presets, example=StepsConfig(num_inference_steps=2, scheduler="euler"), call_overrides=call_overrides,
    knob=Knob("steps.num_inference_steps", -1, off=0),  # 0 is the workload's own count, not a step count
))
