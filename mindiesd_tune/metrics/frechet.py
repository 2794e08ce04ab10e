"""Set-level Frechet distances: FID (Inception, via torchmetrics), FVD (I3D TorchScript) and CLIP-feature ones.

Every result carries its sample counts: a Frechet distance is biased upward by an amount that
shrinks with the number of samples, so two values compare only at equal counts (``compare``).
Weights come from local paths only; without I3D there is a Frechet distance on per-frame CLIP
features, named ``fd_clip_frames`` and never called FVD.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import require
from .errors import MetricUnavailable
from .fidelity import to_nchw

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"  # the FID Inception torch-fidelity caches
I3D_FILE = "i3d_torchscript.pt"  # StyleGAN-V's TorchScript port of the FVD I3D (Kinetics-400)
FVD_FRAMES = 16
FVD_SIZE = 224


@dataclass(frozen=True)
class SetScore:
    """A set metric with the sample counts it was computed on (``n`` outputs, ``n_reference`` reference)."""

    name: str  # fid, fvd, fd_clip, fd_clip_frames, ...
    value: float
    n: int
    n_reference: int
    label: str  # what it is, in words: "Frechet distance on per-frame CLIP features (demo-clip)"

    def as_dict(self) -> dict:
        return asdict(self)


def compare(a: SetScore, b: SetScore) -> float:
    """``a.value - b.value``, refused unless both are the same metric at equal sample counts."""
    if a.name != b.name or a.label != b.label:
        raise ValueError(f"cannot compare {a.label} with {b.label}")
    if (a.n, a.n_reference) != (b.n, b.n_reference):
        raise ValueError(
            f"{a.name} compares only at equal sample counts: {a.n} vs {a.n_reference} against {b.n} vs {b.n_reference}"
        )
    return a.value - b.value


# ---------------------------------------------------------------------------- the distance


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of (N, D) features, in float64."""
    x = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {x.shape}")
    return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` between two Gaussians.

    ``Tr((S1 S2)^(1/2))`` is taken as the sum of square roots of the eigenvalues of the symmetric
    ``S1^(1/2) S2 S1^(1/2)``, which stays real and exact where scipy's sqrtm of the product drifts.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root1 @ s2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)
    return max(value, 0.0)


def frechet_distance(features_a, features_b) -> float:
    """Frechet distance between Gaussians fitted to two (N, D) feature sets."""
    return frechet_distance_from_stats(*gaussian_stats(features_a), *gaussian_stats(features_b))


def kernel_distance(features_a, features_b, degree: int = 3, coef: float = 1.0) -> float:
    """The unbiased estimate of the squared maximum mean discrepancy between two (N, D) feature
    sets, with the polynomial kernel ``(x.y / D + coef) ** degree`` of the kernel inception
    distance (Binkowski et al. 2018), on any features. Unlike a Frechet distance it has no bias
    at small N: its expectation is 0 for two sets from one distribution, so a handful of outputs
    gives an estimate that is noisy but centred (one estimate may be slightly negative).

    With sets of equal size the U-statistic over pairs i != j (Gretton et al. 2012, MMD_u^2 with
    m = n) leaves out each pair's own cross term: a set against itself is exactly 0, which
    matters when the sets are a trial's outputs and the baseline's for the same prompts."""
    x = np.asarray(features_a.detach().cpu() if isinstance(features_a, torch.Tensor) else features_a, np.float64)
    y = np.asarray(features_b.detach().cpu() if isinstance(features_b, torch.Tensor) else features_b, np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) < 2 or len(y) < 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need two (N >= 2, D) feature sets of one D, got {x.shape} and {y.shape}")
    d = x.shape[1]

    def k(a, b):
        return (a @ b.T / d + coef) ** degree

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m, n = len(x), len(y)
    within = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    if m == n:
        return float(within - 2 * (kxy.sum() - np.trace(kxy)) / (m * (m - 1)))
    return float(within - 2 * kxy.mean())


# ---------------------------------------------------------------------------- FID


def find_local_weights(path: str | Path | None, filename: str) -> Path | None:
    """``path`` when given (it must exist), else ``filename`` in the torch hub cache when it is there."""
    if path is not None:
        p = Path(path).expanduser()
        return p if p.is_file() else None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    return cached if cached.is_file() else None


def fid(
    outputs,
    reference,
    inception_weights: str | Path | None = None,
    feature_extractor: torch.nn.Module | None = None,
    feature_name: str | None = None,
    feature: int = 2048,
    batch_size: int = 32,
) -> SetScore:
    """FID of image sets (N,H,W,C) in [0, 1] through torchmetrics.

    With ``inception_weights`` (or the FID Inception in the torch hub cache) this is the standard
    FID. With ``feature_extractor`` (a module mapping float (B,3,H,W) in [0,1] to (B, D)) it is the
    Frechet distance on those features, named ``fd_<feature_name>``.
    """
    if feature_extractor is None:
        require("torch_fidelity", "metrics", "fid (the Inception network)", "torch-fidelity")
    from torchmetrics.image.fid import FrechetInceptionDistance

    if feature_extractor is not None:
        name = f"fd_{feature_name or type(feature_extractor).__name__.lower()}"
        label = f"Frechet distance on {feature_name or type(feature_extractor).__name__} features"
        metric = FrechetInceptionDistance(feature=feature_extractor, normalize=True)
    else:
        weights = find_local_weights(inception_weights, INCEPTION_FILE)
        if weights is None:
            where = inception_weights or Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
            raise MetricUnavailable(
                f"fid needs the FID Inception weights ({INCEPTION_FILE}) at a local path; none at {where}; "
                "pass its path (--inception PATH) or use fd_clip"
            )
        try:
            metric = FrechetInceptionDistance(feature=feature, normalize=True, feature_extractor_weights_path=str(weights))
        except ModuleNotFoundError as e:
            raise MetricUnavailable(f"fid needs torch-fidelity (pip install 'mindiesd-tune[metrics]'): {e}") from None
        name, label = "fid", f"FID (Inception pool {feature})"
    a, b = to_nchw(outputs), to_nchw(reference)
    if len(a) < 2 or len(b) < 2:
        raise MetricUnavailable(f"{name} needs at least 2 images per set, got {len(a)} and {len(b)}")
    with torch.no_grad():
        for x, real in ((b, True), (a, False)):
            for i in range(0, len(x), batch_size):
                metric.update(x[i : i + batch_size].clamp(0, 1), real=real)
        value = float(metric.compute())
    return SetScore(name, max(value, 0.0), len(a), len(b), label)


# ---------------------------------------------------------------------------- FVD


def fvd_clips(videos, num_frames: int = FVD_FRAMES, size: int = FVD_SIZE) -> torch.Tensor:
    """Videos (F,H,W,C) in [0,1] -> I3D input (N, 3, 16, 224, 224) in [-1, 1]: first 16 frames, centre crop."""
    from .clip_score import resize_center_crop

    out = []
    for v in videos:
        v = torch.as_tensor(np.asarray(v), dtype=torch.float32)
        if v.ndim != 4:
            raise ValueError(f"a video is (F, H, W, C), got shape {tuple(v.shape)}")
        if len(v) < num_frames:
            raise MetricUnavailable(f"fvd needs clips of {num_frames} frames, got {len(v)}; use fd_clip_frames")
        frames = v[:num_frames].permute(0, 3, 1, 2)  # (T, C, H, W)
        frames = resize_center_crop(frames, (size, size), "bilinear")
        out.append(frames.clamp(0, 1).permute(1, 0, 2, 3) * 2 - 1)
    return torch.stack(out)


def load_i3d(path: str | Path | None, device: str | torch.device = "cpu"):
    weights = find_local_weights(path, I3D_FILE)
    if weights is None:
        raise MetricUnavailable(
            f"fvd needs the I3D TorchScript model ({I3D_FILE}) at a local path; none at "
            f"{path or Path(torch.hub.get_dir()) / 'checkpoints' / I3D_FILE}; pass --i3d PATH or use fd_clip_frames "
            "(a Frechet distance on per-frame CLIP features, not FVD)"
        )
    return torch.jit.load(str(weights), map_location=device).eval()


@torch.no_grad()
def i3d_features(videos, detector, batch_size: int = 4, device: str | torch.device = "cpu") -> torch.Tensor:
    """Logit-layer features (N, 400) of the standard FVD I3D for videos (F,H,W,C) in [0, 1]."""
    feats = []
    videos = list(videos)
    for i in range(0, len(videos), batch_size):
        clips = fvd_clips(videos[i : i + batch_size]).to(device)
        feats.append(detector(clips, rescale=False, resize=False, return_features=True).float().cpu())
    return torch.cat(feats)


def fvd(outputs, reference, i3d_weights: str | Path | None = None, device: str | torch.device = "cpu") -> SetScore:
    """Frechet video distance with the standard I3D (16-frame clips, 224 centre crop, values in [-1, 1])."""
    outputs, reference = list(outputs), list(reference)
    if len(outputs) < 2 or len(reference) < 2:
        raise MetricUnavailable(f"fvd needs at least 2 videos per set, got {len(outputs)} and {len(reference)}")
    detector = load_i3d(i3d_weights, device)
    value = frechet_distance(i3d_features(outputs, detector, device=device), i3d_features(reference, detector, device=device))
    return SetScore("fvd", value, len(outputs), len(reference), f"FVD (I3D, {FVD_FRAMES} frames, {FVD_SIZE} centre crop)")


# ---------------------------------------------------------------------------- CLIP features


def fd_clip(outputs, reference, scorer) -> SetScore:
    """Frechet distance on CLIP image features of two image sets (N,H,W,C); ``scorer`` is a ClipScorer."""
    a, b = scorer.image_features(outputs), scorer.image_features(reference)
    _at_least_two("fd_clip", len(a), len(b))
    return SetScore("fd_clip", frechet_distance(a, b), len(a), len(b), f"Frechet distance on CLIP image features ({scorer.spec})")


def fd_clip_frames(outputs, reference, scorer) -> SetScore:
    """Frechet distance on per-frame CLIP features of two video sets; samples are frames. Not FVD."""
    frames: Callable = lambda vids: torch.cat([scorer.video_frame_features(v) for v in vids])  # noqa: E731
    a, b = frames(outputs), frames(reference)
    _at_least_two("fd_clip_frames", len(a), len(b))
    return SetScore(
        "fd_clip_frames", frechet_distance(a, b), len(a), len(b), f"Frechet distance on per-frame CLIP features ({scorer.spec})"
    )


def _at_least_two(name: str, n: int, m: int) -> None:
    if n < 2 or m < 2:
        raise MetricUnavailable(f"{name} needs at least 2 samples per set, got {n} and {m}")
