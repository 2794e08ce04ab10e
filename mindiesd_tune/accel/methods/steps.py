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

    Attributes:
        num_inference_steps: steps per call; 0 keeps the caller's own (neutral).
        scheduler: ``default`` keeps the pipeline's scheduler (neutral); ``euler``,
            ``dpmsolver++`` or ``unipc`` build one of that kind from the pipeline's scheduler
            config (flow-matching variants for flow-matching pipelines). Which kinds a pipeline
            accepts: ``accel.cache.compatible_schedulers(pipe)``.
    """

    num_inference_steps: int = 0
    scheduler: str = "default"

    def validate(self) -> None:
        check(self.num_inference_steps >= 0, "steps.num_inference_steps", self.num_inference_steps, "must be >= 0")
        check(self.scheduler in SCHEDULERS, "steps.scheduler", self.scheduler, f"must be one of {', '.join(SCHEDULERS)}")


def install(model, cfg, handle):
    if cfg == StepsConfig():
        return lambda: None
    from ..cache import apply_step_reduction

    return apply_step_reduction(handle.pipe, cfg.num_inference_steps, cfg.scheduler, handle.call_overrides)


def suggest(trial, ctx) -> dict:
    """0 (the workload's own count) or a reduced count; a scheduler only when steps are reduced."""
    steps = ctx.num_inference_steps or DEFAULT_STEPS
    choices = [0, *range(max(2, steps // 4), max(2, steps - 1) + 1)]
    params = {"steps.num_inference_steps": trial.suggest_categorical("steps.num_inference_steps", choices)}
    if params["steps.num_inference_steps"]:
        params["steps.scheduler"] = trial.suggest_categorical("steps.scheduler", list(ctx.schedulers or DEFAULT_SCHEDULERS))
    return params


def call_overrides(cfg: StepsConfig) -> dict:
    return {"num_inference_steps": cfg.num_inference_steps} if cfg.num_inference_steps else {}


register_method(Method(
    section="steps", name="steps", config=StepsConfig, install=install, suggest=suggest,
    example=StepsConfig(num_inference_steps=2, scheduler="euler"), call_overrides=call_overrides,
    knob=Knob("steps.num_inference_steps", -1, off=0),  # 0 is the workload's own count, not a step count
))
