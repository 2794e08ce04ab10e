"""The workload a study tunes and bench/run measure: image size, frames, steps, guidance, prompts, seeds.

Defaults come from the model itself (the pipeline's call defaults, the transformer's sample
size times the VAE scale factor); the user's options are laid over them; a size the model
cannot take is refused before anything runs, naming the limit.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

# option name on the command line -> the pipeline call's keyword
OPTION_KEYS = {
    "height": "height",
    "width": "width",
    "frames": "num_frames",
    "steps": "num_inference_steps",
    "guidance": "guidance_scale",
    "true_cfg": "true_cfg_scale",
    "negative_prompt": "negative_prompt",
}
_CALL_DEFAULTS = ("height", "width", "num_frames", "num_inference_steps", "guidance_scale", "true_cfg_scale")


@dataclass
class WorkloadOptions:
    """What the user asked for; None leaves the model's default."""

    height: int | None = None
    width: int | None = None
    frames: int | None = None
    steps: int | None = None
    guidance: float | None = None
    true_cfg: float | None = None
    negative_prompt: str | None = None

    def generation(self) -> dict[str, Any]:
        """The pipeline-call settings given, by the call's keyword."""
        return {OPTION_KEYS[k]: v for k, v in self.__dict__.items() if v is not None}


def call_parameters(pipe) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(pipe.__call__).parameters)
    except (TypeError, ValueError):
        return {}


def model_generation(pipe) -> dict[str, Any]:
    """The call settings a pipeline runs with when given none: its ``__call__`` defaults, and for
    a size left to the model (``height=None``) the default sample size times the VAE scale factor."""
    params = call_parameters(pipe)
    gen: dict[str, Any] = {}
    for key in _CALL_DEFAULTS:
        p = params.get(key)
        if p is not None and p.default is not inspect.Parameter.empty and p.default is not None:
            gen[key] = p.default
    if "height" in params and ("height" not in gen or "width" not in gen):
        sample = getattr(pipe, "default_sample_size", None) or _config(_denoiser(pipe)).get("sample_size")
        factor = _vae_factor(pipe)
        if isinstance(sample, (list, tuple)):
            sample = sample[-1]
        if isinstance(sample, int) and factor:
            gen.setdefault("height", sample * factor)
            gen.setdefault("width", sample * factor)
    text = params.get("max_sequence_length")
    if text is not None and isinstance(text.default, int):
        # the text encoder's tokenizer may take fewer tokens than the call's default asks for
        for attr in ("tokenizer_3", "tokenizer_2", "tokenizer"):
            most = getattr(getattr(pipe, attr, None), "model_max_length", None)
            if isinstance(most, int) and 0 < most < text.default:
                gen["max_sequence_length"] = most
                break
            if most is not None:
                break
    return gen


def resolve(pipe, defaults: dict[str, Any], options: WorkloadOptions | dict | None) -> dict[str, Any]:
    """``defaults`` with the user's options laid over them, checked against what ``pipe`` takes."""
    given = options.generation() if isinstance(options, WorkloadOptions) else dict(options or {})
    params = call_parameters(pipe)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if params and not takes_any:
        flags = {v: k for k, v in OPTION_KEYS.items()}
        for key in given:
            if key not in params:
                raise UserError(f"--{flags.get(key, key).replace('_', '-')}: {type(pipe).__name__} takes no {key}")
    gen = {**defaults, **given}
    check_size(pipe, gen)
    return gen


def size_limits(pipe) -> tuple[int | None, int | None, str]:
    """(the multiple a height/width must be, the largest it may be, what sets the largest)."""
    cfg = _config(_denoiser(pipe))
    factor = _vae_factor(pipe)
    patch = cfg.get("patch_size")
    if isinstance(patch, (list, tuple)):
        patch = patch[-1]
    patch = patch if isinstance(patch, int) else 1
    if factor is None:
        return None, None, ""
    multiple = factor * patch
    top = cfg.get("pos_embed_max_size")
    if isinstance(top, int):
        return multiple, top * multiple, (f"{type(_denoiser(pipe)).__name__} pos_embed_max_size {top} x patch "
                                          f"size {patch} x VAE scale factor {factor}")
    return multiple, None, ""


def check_size(pipe, generation: dict[str, Any]) -> None:
    """A UserError naming the limit when ``pipe`` cannot generate at the size in ``generation``."""
    multiple, top, why = size_limits(pipe)
    for key in ("height", "width"):
        v = generation.get(key)
        if v is None:
            continue
        if not isinstance(v, int) or v <= 0:
            raise UserError(f"--{key} {v}: give a positive whole number of pixels")
        if top is not None and v > top:
            raise UserError(f"--{key} {v}: {type(pipe).__name__} generates at most {top} px ({why})")
        if multiple and v % multiple:
            raise UserError(f"--{key} {v}: {type(pipe).__name__} needs a multiple of {multiple} px "
                            f"(VAE scale factor x patch size)")
    frames = generation.get("num_frames")
    temporal = getattr(pipe, "vae_scale_factor_temporal", None)
    if frames is not None:
        if not isinstance(frames, int) or frames <= 0:
            raise UserError(f"--frames {frames}: give a positive whole number of frames")
        if isinstance(temporal, int) and temporal > 1 and (frames - 1) % temporal:
            raise UserError(f"--frames {frames}: {type(pipe).__name__} takes 1 + a multiple of {temporal} frames "
                            f"(its VAE's temporal factor)")
    steps = generation.get("num_inference_steps")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise UserError(f"--steps {steps}: give at least one step")


def read_prompts(path: str | Path) -> list[str]:
    """One prompt a line; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--prompts {path}: no such file")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise UserError(f"--prompts {path}: the file holds no prompt")
    return prompts


def parse_seeds(text: str) -> list[int]:
    """``0,1,5`` -> [0, 1, 5]."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: give whole numbers separated by commas, e.g. 0,1") from None
    if not seeds:
        raise UserError(f"--seeds {text!r}: give at least one seed")
    return seeds


def pair(prompts: list[str], seeds: list[int] | None, first_seed: int = 0,
         recorded: tuple[list[str], list[int]] | None = None) -> tuple[list[str], list[int]]:
    """The (prompt, seed) calls of the workload: with as many seeds as prompts, one each; with
    another number of seeds, every prompt with every seed; with none, ``first_seed`` counting up.

    ``recorded``: the (prompts, seeds) a profile was measured on, for measuring it again (bench,
    recheck): its calls as they were when neither ``prompts`` nor ``seeds`` is given, its prompts
    (once each) with the ``seeds`` when only they are."""
    rec_prompts, rec_seeds = recorded or ([], [])
    if rec_prompts and not prompts:
        if not seeds:
            return list(rec_prompts), list(rec_seeds) or [first_seed + i for i in range(len(rec_prompts))]
        prompts = list(dict.fromkeys(rec_prompts))
    if not seeds:
        return list(prompts), [first_seed + i for i in range(len(prompts))]
    if len(seeds) == len(prompts):
        return list(prompts), list(seeds)
    return [p for p in prompts for _ in seeds], [s for _ in prompts for s in seeds]


def describe(generation: dict[str, Any], prompts: list[str], seeds: list[int]) -> str:
    """One line for the run header."""
    size = "x".join(str(generation[k]) for k in ("height", "width") if generation.get(k) is not None)
    parts = [f"{size} px" if size else "the pipeline's size"]
    if generation.get("num_frames") is not None:
        parts.append(f"{generation['num_frames']} frames")
    if generation.get("num_inference_steps") is not None:
        parts.append(f"{generation['num_inference_steps']} steps")
    for key, label in (("guidance_scale", "guidance"), ("true_cfg_scale", "true CFG")):
        if generation.get(key) is not None:
            parts.append(f"{label} {generation[key]}")
    if generation.get("negative_prompt"):
        parts.append(f"negative prompt \"{generation['negative_prompt']}\"")
    parts.append(f"{len(set(prompts))} prompt(s), seeds {','.join(map(str, sorted(set(seeds))))}")
    return ", ".join(parts)


def _denoiser(pipe):
    return getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)


def _config(module) -> dict:
    cfg = getattr(module, "config", None)
    return dict(cfg) if cfg is not None else {}


def _vae_factor(pipe) -> int | None:
    for attr in ("vae_scale_factor_spatial", "vae_scale_factor"):
        v = getattr(pipe, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return None
