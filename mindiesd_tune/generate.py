"""``mindiesd-tune run``'s work: load a model, apply a profile (a file or the store's), generate and write each output."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError, require
from .paths import IMAGE_SUFFIXES, VIDEO_SUFFIXES


@dataclass
class GenerateRequest:
    """What ``generate`` makes: the model, its (prompt, seed) calls, where to write them, the profile."""

    model: str
    calls: list[tuple[str, int]]
    out: Path  # one call: this file; several: OUT-<n>.<suffix> for each
    prof: Any = None  # a Profile to apply first
    source: Any = None  # where ``prof`` came from, for messages (its path)
    store: str | None = None  # a profile store URL to look the profile up in once the model has loaded
    options: Any = None  # workload.WorkloadOptions laid over the model's (and the profile's) generation settings
    device: str | None = None
    force: bool = False  # apply a profile tuned for another model
    allow_download: bool = False
    verbose: bool = False


def targets(out: Path, n: int) -> list[Path]:
    """The files ``n`` calls are written to."""
    return [out] if n == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(n)]


def generate(req: GenerateRequest) -> Iterator[tuple[Path, float]]:
    """Generate and write each call's output -> (file, seconds of its model call), as each is
    written (on rank 0 only in a rank group: every rank of a mesh holds the whole output). A
    profile tuned for another model is refused unless ``force``; one tuned elsewhere warns."""
    import torch

    from .accel.parallel.launch import rank
    from .accel.parallel.watch import note

    ev, overrides = _prepared(req)
    req.out.parent.mkdir(parents=True, exist_ok=True)
    for i, ((p, s), target) in enumerate(zip(req.calls, targets(req.out, len(req.calls)))):
        note(f"call {i + 1}/{len(req.calls)}")
        t0 = time.perf_counter()
        with torch.inference_mode():
            arr = ev.generate(p, s, overrides)
        dt = time.perf_counter() - t0
        note(f"writing {target.name}")
        if rank() == 0:
            write_media(target, arr)
            yield target, dt


def _prepared(req: GenerateRequest):
    """The model loaded, the profile checked and applied -> (evaluator of the calls, the call overrides)."""
    from .accel.parallel.launch import rank_device
    from .accel.parallel.watch import note
    from .deploy import apply_profile, check_profile, refuse_another_model
    from .models import load
    from .models.quiet import quiet_loading
    from .tuner.evaluator import Evaluator, Workload
    from .workload import resolve

    note(f"loading {req.model}")
    with quiet_loading(req.verbose):
        loaded = load(req.model, device=rank_device(req.device), allow_download=req.allow_download)
    _check_suffix(req.out, loaded.is_video)
    prof, source = req.prof, req.source
    if prof is None and req.store is not None:
        from .deploy import stored_profile

        prof, source = stored_profile(loaded, req.store, req.options.generation() if req.options else None)
    generation, overrides = dict(loaded.generation), {}
    if prof is not None:
        refuse_another_model(loaded, prof, source, check_profile(loaded.pipe, prof), req.force)
        generation.update({k: v for k, v in prof.generation.items() if v is not None})
    generation = resolve(loaded.pipe, generation, req.options)
    if prof is not None:
        note(f"applying {source}")
        overrides = apply_profile(loaded.pipe, prof).call_overrides  # e.g. a reduced step count
    calls = req.calls
    return Evaluator(loaded, Workload([p for p, _ in calls], [s for _, s in calls], generation)), overrides


def _check_suffix(out: Path, is_video: bool) -> None:
    allowed = VIDEO_SUFFIXES if is_video else IMAGE_SUFFIXES
    if out.suffix.lower() not in allowed:
        raise UserError(f"{out}: use one of {', '.join(allowed)} for {'a video' if is_video else 'an image'}")


def write_media(path: Path, arr) -> None:
    """An image (H, W, C) or a video (F, H, W, C) in [0, 1], in the format its suffix names."""
    from PIL import Image

    from .tuner.evaluator import to_uint8

    u8 = to_uint8(arr)
    if u8.ndim == 3:
        Image.fromarray(u8).save(path)
        return
    if path.suffix.lower() == ".mp4":
        iio = require("imageio.v3", "video", "writing .mp4 (or use .gif)", "imageio with imageio-ffmpeg")
        iio.imwrite(path, u8, fps=8)
        return
    frames = [Image.fromarray(f) for f in u8]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=125, loop=0, lossless=True)
