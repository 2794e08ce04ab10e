"""What a study is, kept with it: a resume (or a machine joining a shared study) runs the study's
own workload, floors, objective, pick rule and space, whatever the defaults of the command that
resumes it.

The options are stored as the study's ``options`` attribute when it is made. A resume takes
them back; an option given again with another value is refused in one line naming the stored
value, since a different workload is a different study. The budget, the workers and the
storage are how this call runs, not what the study is: they are never stored.
"""

from __future__ import annotations

import dataclasses

from ..errors import UserError
from .objectives import parse_floor
from .options import TuneOptions

# The options that make a study what it is, with the flag that sets each.
STUDY_OPTIONS = {
    "objective": "--objective",
    "floors": "--quality-floor",
    "max_memory_bytes": "--max-memory",
    "max_weight_bytes": "--max-weight-bytes",
    "sampler": "--sampler",
    "pick_how": "--pick",
    "prompts": "--prompt/--prompts",
    "seed": "--seed",
    "seeds": "--seeds",
    "generation": "--height/--width/--frames/--steps/--guidance/--true-cfg/--negative-prompt",
    "device": "--device",
    "dtype": "--dtype",
    "warmup": "--warmup",
    "repeats": "--repeats",
    "prune_margin": "--prune-margin",
    "interleave": "--interleave",
    "confirm_precision": "--confirm-precision",
    "compile": "--compile",
    "screening": "--screening",
    "promotion": "--promotion",
    "clip_model": "--clip-model",
    "holdout": "--holdout",
    "judge": "--judge",
    "fvd_weights": "--fvd-weights",
}
ATTR = "options"


def stored(opts: TuneOptions) -> dict:
    """The study-defining options as plain data (floors as their text)."""
    return {name: _encode(name, getattr(opts, name)) for name in STUDY_OPTIONS}


def _encode(name: str, value):
    if name == "floors":
        return [str(f) for f in value or ()]
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


def _decode(name: str, value):
    if name == "floors":
        return [parse_floor(f) for f in value or ()]
    return value


def _given(opts: TuneOptions, name: str) -> bool:
    if opts.given is not None:
        return name in opts.given
    default = getattr(TuneOptions(), name)
    return _encode(name, getattr(opts, name)) != _encode(name, default)


# A machine joining a shared study keeps its own sampler seed: machines drawing the same points
# would only answer each other's trials from storage.
PER_MACHINE = ("seed",)


def resumed(opts: TuneOptions, saved: dict, where: str, joining: bool = False) -> TuneOptions:
    """``opts`` with the study's stored options laid over them; a UserError for an option given
    with another value than the study's. ``joining``: another machine's shared study, whose
    per-machine options (``PER_MACHINE``) stay this machine's."""
    saved = {k: v for k, v in saved.items() if not (joining and k in PER_MACHINE)}
    for name, flag in STUDY_OPTIONS.items():
        if name not in saved or not _given(opts, name):
            continue
        mine = _encode(name, getattr(opts, name))
        if mine != saved[name]:
            raise UserError(f"{flag} {_text(mine)}: the study in {where} was made with {_text(saved[name])}; a resume "
                            "keeps its workload, floors, objective and space (only --budget, --workers and --storage "
                            "may change); start a new study with another --out for another one")
    return dataclasses.replace(opts, **{name: _decode(name, v) for name, v in saved.items() if name in STUDY_OPTIONS})


def _text(value) -> str:
    if value is None:
        return "the default"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "the model's defaults"
    return str(value)
