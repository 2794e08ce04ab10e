"""Scores for a folder of the user's own images or videos: the library behind ``mindiesd-tune score``.

Files are taken in file-name order; a reference file matches by file name (its stem, so
``a.png`` matches ``a.npy``); prompts are one per line in the same order. Images: .png, .jpg,
.jpeg, .bmp, .webp; videos: .gif, .mp4 (imageio), animated .webp; either: .npy arrays in [0, 1]
(float) or 0..255 (uint8), shaped (H, W, C) or (F, H, W, C).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError, require
from .errors import MetricUnavailable

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VIDEO_SUFFIXES = (".gif", ".mp4")
MEDIA_SUFFIXES = IMAGE_SUFFIXES + VIDEO_SUFFIXES + (".npy",)

FIDELITY = ("psnr", "ssim", "ms_ssim", "lpips")
SET_METRICS = ("fid", "fvd", "fd_clip", "fd_clip_frames")
ALIGNMENT = ("clip",)
ALL_METRICS = FIDELITY + ALIGNMENT + SET_METRICS


@dataclass
class FolderScores:
    """``values``: metric -> float (per-output metrics, mean over outputs) or SetScore (set metrics)."""

    values: dict = field(default_factory=dict)
    n: int = 0
    video: bool = False

    def lines(self, folder) -> list[str]:
        """The table ``mindiesd-tune score`` prints: the folder, then one line per metric."""
        out = [f"{folder}: {self.n} {'videos' if self.video else 'images'}"]
        for name, value in self.values.items():
            if hasattr(value, "label"):
                out.append(f"  {name:15s} {value.value:10.4f}   n={value.n} vs {value.n_reference}; {value.label}")
            else:
                out.append(f"  {name:15s} {value:10.4f}")
        return out

    def as_json(self) -> dict:
        """One object whose keys are the metric names; set metrics carry their sample counts."""
        out = {}
        for name, v in self.values.items():
            if hasattr(v, "as_dict"):
                d = v.as_dict()
                out[name] = {"value": _finite(d["value"]), "n": d["n"], "n_reference": d["n_reference"], "label": d["label"]}
            else:
                out[name] = _finite(v)
        return out


def _finite(v: float):
    # JSON has no inf: identical outputs give PSNR "inf", kept as a string rather than a wrong number
    return "inf" if isinstance(v, float) and math.isinf(v) else v


def list_media(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
    if not files:
        raise UserError(f"{folder}: no images or videos ({', '.join(MEDIA_SUFFIXES)})")
    return files


def load_media(path: str | Path) -> np.ndarray:
    """One file -> float32 in [0, 1]: (H, W, 3) for an image, (F, H, W, 3) for a video."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    elif suffix == ".mp4":
        iio = require("imageio.v3", "video", "reading .mp4", "imageio with imageio-ffmpeg")
        arr = np.asarray(iio.imread(path), dtype=np.float32) / 255.0
    else:
        from PIL import Image, ImageSequence

        with Image.open(path) as im:
            frames = [np.asarray(f.convert("RGB"), dtype=np.float32) / 255.0 for f in ImageSequence.Iterator(im)]
        arr = frames[0] if len(frames) == 1 and suffix in IMAGE_SUFFIXES else np.stack(frames)
    if arr.ndim not in (3, 4) or arr.shape[-1] not in (1, 3):
        raise UserError(f"{path}: expected (H, W, C) or (F, H, W, C) with 1 or 3 channels, got shape {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.clip(arr, 0.0, 1.0)


def read_prompts(path: str | Path) -> list[str]:
    lines = Path(path).read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def chosen_metrics(metrics: str | None, reference, prompts, clip_model: str | None) -> list[str]:
    """``--metrics`` parsed, or by default psnr and ssim with a reference and clip with prompts and a CLIP model."""
    if metrics is not None:
        return parse_metrics(metrics)
    chosen = (["psnr", "ssim"] if reference is not None else []) + (["clip"] if prompts is not None and clip_model else [])
    if not chosen:
        raise UserError("nothing to score: give --reference DIR, or --prompts FILE with --clip-model, or --metrics")
    return chosen


def parse_metrics(text: str) -> list[str]:
    names = [m.strip().lower().replace("-", "_") for m in text.split(",") if m.strip()]
    for m in names:
        if m not in ALL_METRICS:
            raise UserError(f"unknown metric {m!r} (known: {', '.join(ALL_METRICS)})")
    return names


def score_folder(
    folder: str | Path,
    metrics: list[str],
    prompts: list[str] | None = None,
    reference: str | Path | None = None,
    clip_model: str | None = None,
    inception: str | Path | None = None,
    i3d: str | Path | None = None,
    lpips_net: str = "alex",
    device: str = "cpu",
) -> FolderScores:
    """Score every file of ``folder``; each metric must be able to run, or a one-line error says why not."""
    files = list_media(folder)
    outputs = [load_media(f) for f in files]
    refs = None
    if any(m in FIDELITY or m in SET_METRICS for m in metrics):
        if reference is None:
            needs = [m for m in metrics if m in FIDELITY or m in SET_METRICS]
            raise UserError(f"{', '.join(needs)} need a reference folder (--reference DIR)")
        refs = [load_media(r) for r in _matching(files, list_media(reference), reference)]
    if "clip" in metrics and prompts is not None and len(prompts) != len(outputs):
        raise UserError(f"{len(prompts)} prompts for {len(outputs)} files; give one prompt per file, in file-name order")
    return score_outputs(outputs, metrics, prompts, refs, clip_model, inception, i3d, lpips_net, device)


def score_outputs(
    outputs: list[np.ndarray],
    metrics: list[str],
    prompts: list[str] | None = None,
    reference: list[np.ndarray] | None = None,
    clip_model: str | None = None,
    inception: str | Path | None = None,
    i3d: str | Path | None = None,
    lpips_net: str = "alex",
    device: str = "cpu",
) -> FolderScores:
    """Score outputs (one float array in [0, 1] per prompt: (H,W,C) or (F,H,W,C)) against ``reference``
    (the baseline outputs, same order) and ``prompts``. Per-output metrics are means over outputs."""
    video = _check_inputs(outputs, metrics, prompts, reference)
    result = FolderScores(n=len(outputs), video=video)
    scorer = _ClipScorer(clip_model, device)
    for m in metrics:
        result.values[m] = _score(m, outputs, reference, prompts, video, scorer, lpips_net, inception, i3d, device)
    return result


def _check_inputs(outputs: list[np.ndarray], metrics: list[str], prompts: list[str] | None,
                  refs: list[np.ndarray] | None) -> bool:
    """Refuse outputs, references and prompts that do not fit ``metrics``; whether the outputs are videos."""
    if not outputs:
        raise UserError("nothing to score")
    video = np.ndim(outputs[0]) == 4
    if any((np.ndim(o) == 4) != video for o in outputs):
        raise UserError("the outputs mix images and videos")
    if refs is None and any(m in FIDELITY or m in SET_METRICS for m in metrics):
        raise UserError(f"{', '.join(m for m in metrics if m in FIDELITY or m in SET_METRICS)} need reference outputs")
    if refs is not None and len(refs) != len(outputs):
        raise UserError(f"{len(outputs)} outputs but {len(refs)} references")
    if "clip" in metrics:
        if prompts is None:
            raise UserError("clip needs the prompts (--prompts FILE, one per line in file-name order)")
        if len(prompts) != len(outputs):
            raise UserError(f"{len(prompts)} prompts for {len(outputs)} outputs")
    return video


class _ClipScorer:
    """The CLIP scorer, loaded on the first metric that needs it."""

    def __init__(self, clip_model: str | None, device: str):
        self.clip_model, self.device, self._scorer = clip_model, device, None

    def __call__(self):
        if self._scorer is None:
            if not self.clip_model:
                raise UserError(
                    "clip-feature metrics need --clip-model: NAME:/path/to/weights, local-dir:/path, "
                    "NAME:TAG with cached weights, or demo-clip for demo outputs"
                )
            from .clip_score import get_scorer as cached

            self._scorer = cached(self.clip_model, str(self.device))
        return self._scorer


def _score(m: str, outputs, refs, prompts, video: bool, scorer: _ClipScorer, lpips_net: str, inception, i3d, device) -> float:
    """One metric over all the outputs."""
    if m in FIDELITY:
        from .fidelity import FIDELITY_METRICS, lpips, mean_over_frames

        fn = (lambda a, b: lpips(a, b, lpips_net)) if m == "lpips" else FIDELITY_METRICS[m]
        for o, r in zip(outputs, refs):
            if np.shape(o) != np.shape(r):
                raise UserError(f"{m}: an output of shape {np.shape(o)} has a reference of shape {np.shape(r)}")
        per_output = [fn(o, r) for o, r in zip(outputs, refs)]
        return mean_over_frames(per_output) if m == "psnr" else float(np.mean(per_output))
    if m == "clip":
        return scorer().score(outputs, prompts)
    if m == "fid":
        from .frechet import fid

        _images_only(m, video)
        return fid(_stack(outputs, m), _stack(refs, m), inception_weights=inception)
    if m == "fvd":
        from .frechet import fvd

        _videos_only(m, video)
        return fvd(outputs, refs, i3d_weights=i3d, device=device)
    if m == "fd_clip":
        from .frechet import fd_clip

        _images_only(m, video)
        return fd_clip(_stack(outputs, m), _stack(refs, m), scorer())
    if m == "fd_clip_frames":
        from .frechet import fd_clip_frames

        _videos_only(m, video)
        return fd_clip_frames(outputs, refs, scorer())
    raise UserError(f"unknown metric {m!r} (known: {', '.join(ALL_METRICS)})")


def _matching(files: list[Path], ref_files: list[Path], reference) -> list[Path]:
    by_stem = {p.stem: p for p in ref_files}
    missing = [f.name for f in files if f.stem not in by_stem]
    if missing:
        raise UserError(f"{reference}: no reference for {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    return [by_stem[f.stem] for f in files]


def _stack(arrays: list[np.ndarray], metric: str) -> np.ndarray:
    if len({a.shape for a in arrays}) > 1:
        raise UserError(f"{metric}: the images differ in size")
    return np.stack(arrays)


def _images_only(metric: str, video: bool) -> None:
    if video:
        alt = "fvd or fd_clip_frames" if metric in ("fid", "fd_clip") else "an image metric"
        raise MetricUnavailable(f"{metric} scores images; for videos use {alt}")


def _videos_only(metric: str, video: bool) -> None:
    if not video:
        raise MetricUnavailable(f"{metric} scores videos; for images use fid or fd_clip")
