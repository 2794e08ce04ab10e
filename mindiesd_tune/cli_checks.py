"""The command line's checks of its own arguments, made before torch is imported.

Everything here imports in a fraction of a second: a mistake on the command line (a bad floor,
budget, dtype, file or model name) is answered at once, not after the seconds torch, diffusers
and Optuna take to import. The heavier work each command does afterwards checks nothing that
can be checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import UserError
from .modelref import check_model

DTYPES = ("fp32", "float32", "fp16", "float16", "bf16", "bfloat16")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_SUFFIXES = (".gif", ".webp", ".mp4")


def check_model_arg(model: str, allow_download: bool = False) -> None:
    """A MODEL that is no built-in, folder or cached hub id is refused by name."""
    check_model(model, allow_download)


def check_dtype(dtype: str | None) -> None:
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)}")


def check_pick(pick: str) -> None:
    if pick not in ("fastest", "knee", "robust") and not re.fullmatch(r"trial:\d+", pick):
        raise UserError(f"--pick {pick!r}: use fastest, knee, robust or trial:N")


def check_holdout(holdout: str, judge: str, fvd_weights: Path | None) -> int | list[str]:
    """``--holdout`` as a count or the prompts of a file; ``--judge`` and ``--fvd-weights`` checked."""
    if judge not in ("bound", "mean"):
        raise UserError(f"--judge {judge!r}: use bound or mean")
    if fvd_weights is not None and not Path(fvd_weights).is_file():
        raise UserError(f"--fvd-weights: no such file: {fvd_weights}")
    text = holdout.strip()
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
