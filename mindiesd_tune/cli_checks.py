"""The command line's checks of its own arguments, made before torch is imported.

Everything here imports in a fraction of a second: a mistake on the command line (a bad floor,
budget, dtype, file or model name) is answered at once, not after the seconds torch, diffusers
and Optuna take to import. The heavier work each command does afterwards checks nothing that
can be checked here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import UserError
from .modelref import check_model
from .paths import IMAGE_SUFFIXES, VIDEO_SUFFIXES

DTYPES = ("fp32", "float32", "fp16", "float16", "bf16", "bfloat16")


def check_model_arg(model: str, allow_download: bool = False) -> None:
    """A MODEL that is no built-in, folder or cached hub id is refused by name."""
    check_model(model, allow_download)


def check_dtype(dtype: str | None) -> None:
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)}")


def check_pick(pick: str) -> None:
    if pick not in ("fastest", "knee", "robust") and not re.fullmatch(r"trial:\d+", pick):
        raise UserError(f"--pick {pick!r}: use fastest, knee, robust or trial:N")


def check_holdout(holdout: str, judge: str, fvd_weights: Path | None) -> int | str | list[str]:
    """``--holdout`` as a count, ``auto`` or the prompts of a file; ``--judge`` and ``--fvd-weights`` checked."""
    from .tuner.options import JUDGE_CHOICES

    if judge not in JUDGE_CHOICES:
        raise UserError(f"--judge {judge!r}: use {', '.join(JUDGE_CHOICES)}")
    if fvd_weights is not None and not Path(fvd_weights).is_file():
        raise UserError(f"--fvd-weights: no such file: {fvd_weights}")
    text = holdout.strip()
    if text == "auto":
        return text
    if re.fullmatch(r"\d+", text):
        return int(text)
    path = Path(text).expanduser()
    if not path.is_file():
        raise UserError(f"--holdout {holdout!r}: give a count (0: none) or a file of prompts, one per line; "
                        f"no such file: {path}")
    from .workload import read_prompts

    prompts = read_prompts(path)
    if not prompts:
        raise UserError(f"--holdout {path}: the file has no prompts")
    return prompts


def check_workload(prompts_file: Path | None, seeds: str | None) -> tuple[list[str] | None, list[int] | None]:
    """The prompts file's prompts and the parsed seeds (None where not given), or a UserError."""
    from .workload import parse_seeds, read_prompts

    return (read_prompts(prompts_file) if prompts_file is not None else None,
            parse_seeds(seeds) if seeds else None)


def check_tune_options(**fields) -> None:
    """The study options the command line sets, checked as ``run_study`` will check them."""
    from .tuner.options import TuneOptions

    TuneOptions(**fields).validate()


def check_media_suffix(out: Path) -> None:
    """``run --out``: a suffix no image or video is written as, refused before the model loads
    (whether the model makes images or videos is known only then)."""
    if out.suffix.lower() not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
        known = ", ".join(dict.fromkeys(IMAGE_SUFFIXES + VIDEO_SUFFIXES))
        raise UserError(f"{out}: use one of {known}")


@dataclass
class TuneRequest:
    """``tune``'s arguments checked and turned into the study's options."""

    budget: Any  # tuner.budget.Budget
    out: Path
    options: Any  # tuner.TuneOptions
    dry_run: bool


# tune's parameters that set a study option of another name (tuner.resume.STUDY_OPTIONS)
_OPTION_OF = {"quality_floor": "floors", "max_memory": "max_memory_bytes", "max_weight_bytes": "max_weight_bytes",
              "pick": "pick_how", "prompt": "prompts", "prompts_file": "prompts", "compile_": "compile",
              **{k: "generation" for k in ("height", "width", "frames", "steps", "guidance", "true_cfg", "negative_prompt")}}


def given_options(ctx) -> frozenset[str]:
    """The study options set on the command line (a click context), not left at their defaults:
    on a resume these are checked against the study's own."""
    given = set()
    for name in ctx.params:
        source = ctx.get_parameter_source(name)
        # by name: typer may bring its own copy of click's ParameterSource
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            given.add(_OPTION_OF.get(name, name))
    return frozenset(given)


def tune_request(a: dict, given: frozenset[str], console, check_model: Callable = check_model_arg) -> TuneRequest:
    """``tune``'s arguments ``a`` (by parameter name) checked in the order they are given, before
    torch, Optuna or the model is imported -> the budget, run folder and ``TuneOptions``."""
    from .tuner.budget import parse_budget
    from .tuner.objectives import parse_floor, parse_memory

    b = parse_budget(a["budget"])
    floors = [parse_floor(f) for f in a["quality_floor"]]
    mem = parse_memory(a["max_memory"], "--max-memory") if a["max_memory"] else None
    weights = parse_memory(a["max_weight_bytes"], "--max-weight-bytes") if a["max_weight_bytes"] else None
    check_pick(a["pick"])
    check_dtype(a["dtype"])
    held = check_holdout(a["holdout"], a["judge"], a["fvd_weights"])
    check_tune_options(objective=a["objective"], sampler=a["sampler"], workers=a["workers"], devices=a["devices"],
                       confirm_precision=a["confirm_precision"] or None, isolate=a["isolate"], promotion=a["promotion"])
    given_prompts, seeds = check_workload(a["prompts_file"], a["seeds"])
    check_model(a["model"], a["allow_download"])
    out, cache = _tune_paths(a)
    from .tuner import TuneOptions

    keep = ("objective", "sampler", "seed", "device", "dtype", "warmup", "repeats", "resume", "allow_download", "workers",
            "devices", "storage", "study_name", "isolate", "quiet", "clip_model", "interleave", "screening", "promotion", "judge",
            "publish", "warm_start")
    options = TuneOptions(
        **{k: a[k] for k in keep}, floors=floors, max_memory_bytes=mem, max_weight_bytes=weights,
        prompts=((given_prompts or []) + list(a["prompt"])) or None, generation=workload_options(a).generation(),
        seeds=seeds, console=console, pick_how=a["pick"], prune_margin=a["prune_margin"] if a["prune_margin"] > 0 else None,
        confirm_precision=a["confirm_precision"] or None, compile=a["compile_"], holdout=held,
        baseline_cache=None if cache is None else str(cache), fvd_weights=str(a["fvd_weights"]) if a["fvd_weights"] else None,
        log=lambda line: console.print(line, markup=False), given=given)
    return TuneRequest(b, out, options, a["dry_run"])


def _tune_paths(a: dict) -> tuple[Path, Path | None]:
    """The run folder and the baseline cache, checked writable (the run folder not on a dry run,
    which writes nothing); the storage and the profile store's URLs checked."""
    from .paths import check_storage_writable, check_writable
    from .store.db import check_url

    out = a["out"]
    if out is None:
        from .tuner.study import default_out_dir

        out = default_out_dir(a["model"])
    if not a["dry_run"]:
        check_writable(out, "--out", folder=True)
    check_storage_writable(a["storage"])
    for url in (a["publish"], a["warm_start"]):  # a URL no store opens from, refused before the model loads
        if url is not None:
            check_url(url)
    cache = None
    if not a["no_baseline_cache"]:
        from .metrics.baseline_store import default_root

        cache = a["baseline_cache"] or default_root()
        check_writable(cache, "--baseline-cache", folder=True)
    return out, cache


def workload_options(a: dict):
    """The workload options among a command's arguments (by parameter name)."""
    from .workload import OPTION_KEYS, WorkloadOptions

    return WorkloadOptions(**{k: a.get(k) for k in OPTION_KEYS})
