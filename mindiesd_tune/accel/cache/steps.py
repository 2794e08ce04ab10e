"""Step reduction: fewer denoising steps and a scheduler choice, reported as call overrides."""

from __future__ import annotations

import inspect

from ..specs import UnsupportedModelError, pipeline_spec


def is_flow_matching(scheduler) -> bool:
    cfg = scheduler.config
    return (
        type(scheduler).__name__.startswith("FlowMatch")
        or cfg.get("prediction_type") == "flow_prediction"
        or bool(cfg.get("use_flow_sigmas"))
    )


def build_scheduler(kind: str, original):
    """A scheduler of ``kind`` built from ``original``'s config (the flow-matching variant for flow models)."""
    from diffusers import (
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    cfg = original.config
    if is_flow_matching(original):
        flow = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": cfg.get("shift", cfg.get("flow_shift", 1.0))}
        if kind != "euler":  # FlowMatchEuler's "shift" is the multistep solvers' "flow_shift"
            cfg = {k: v for k, v in cfg.items() if k != "shift"}
        if kind == "euler":
            return FlowMatchEulerDiscreteScheduler.from_config(cfg)
        if kind == "dpmsolver++":
            return DPMSolverMultistepScheduler.from_config(cfg, algorithm_type="dpmsolver++", solver_order=2, **flow)
        if kind == "unipc":
            return UniPCMultistepScheduler.from_config(cfg, **flow)
    else:
        if kind == "euler":
            return EulerDiscreteScheduler.from_config(cfg)
        if kind == "dpmsolver++":
            return DPMSolverMultistepScheduler.from_config(cfg, algorithm_type="dpmsolver++")
        if kind == "unipc":
            return UniPCMultistepScheduler.from_config(cfg)
    raise ValueError(f"steps.scheduler: unknown kind {kind!r}")


def compatible_schedulers(pipe) -> list[str]:
    """The ``steps.scheduler`` choices this pipeline accepts ("default" always).

    A pipeline that hands custom ``sigmas`` (Flux, Qwen-Image, HunyuanVideo, SD3) or ``mu`` to
    the scheduler needs one whose ``set_timesteps`` takes them; DPM-Solver++ takes no sigmas.
    Its ``PipelineSpec`` says which it hands; a pipeline without one keeps its own scheduler.
    """
    original = getattr(pipe, "scheduler", None)
    if original is None:
        return ["default"]
    try:
        needs = pipeline_spec(pipe).scheduler_args
    except UnsupportedModelError:
        return ["default"]
    out = ["default"]
    for kind in ("euler", "dpmsolver++", "unipc"):
        try:
            sched = build_scheduler(kind, original)
        except Exception:  # a config this kind cannot be built from
            continue
        params = inspect.signature(sched.set_timesteps).parameters
        if all(k in params for k in needs):
            out.append(kind)
    return out


def apply_step_reduction(pipe, num_inference_steps: int, scheduler: str, call_kwargs: dict):
    """Swap the scheduler for one of kind ``scheduler`` (``default``: keep it) and record
    ``num_inference_steps`` (0: the caller's own) in ``call_kwargs``; returns the undo function."""
    if num_inference_steps > 0:
        call_kwargs["num_inference_steps"] = num_inference_steps
    if scheduler == "default":
        return lambda: call_kwargs.pop("num_inference_steps", None)
    if pipe is None or not hasattr(pipe, "scheduler"):
        raise ValueError("steps.scheduler needs a pipeline with a scheduler, not a bare denoiser")
    allowed = compatible_schedulers(pipe)
    if scheduler not in allowed:
        raise ValueError(f"steps.scheduler: {scheduler!r} does not fit {type(pipe).__name__} (choose from {', '.join(allowed)})")
    original = pipe.scheduler
    pipe.scheduler = build_scheduler(scheduler, original)

    def remove() -> None:
        pipe.scheduler = original
        call_kwargs.pop("num_inference_steps", None)

    return remove
