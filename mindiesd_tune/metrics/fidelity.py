"""Fidelity of an accelerated output to the unaccelerated one (same prompt, same seed), per frame for video."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import require
from .errors import MetricUnavailable

# MS-SSIM as Wang et al. define it: five scales, 11x11 Gaussian window.
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_KERNEL = 11
MS_SSIM_MIN_SIDE = (MS_SSIM_KERNEL - 1) * (len(MS_SSIM_BETAS) - 1) ** 2 + (len(MS_SSIM_BETAS) - 1) ** 2

# LPIPS backbone -> (torchvision constructor, checkpoint file torchvision caches under <torch hub>/checkpoints)
LPIPS_BACKBONES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


def to_nchw(x) -> torch.Tensor:
    """Images (H,W,C), (N,H,W,C) or video (N,F,H,W,C) in [0,1] -> float tensor (N*F, C, H, W)."""
    t = x.detach().float().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=torch.float32)
    if t.ndim == 3:
        t = t[None]
    if t.ndim == 5:
        t = t.flatten(0, 1)
    if t.ndim != 4:
        raise ValueError(f"expected images or video frames, got shape {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2).contiguous()


def _pair(pred, target) -> tuple[torch.Tensor, torch.Tensor]:
    p, t = to_nchw(pred), to_nchw(target)
    if p.shape != t.shape:
        raise ValueError(f"shapes differ: {tuple(p.shape)} against {tuple(t.shape)}")
    return p, t


def mean_over_frames(values) -> float:
    """Mean of per-frame scores; identical frames (inf dB) count only when every frame is identical.

    An inf would swamp the mean, so the finite frames speak for the ones that differ.
    """
    values = [float(v) for v in values]
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values):
        return math.inf if not finite else float(np.mean(finite))
    return float(np.mean(values))


def psnr_per_frame(pred, target) -> list[float]:
    """Peak signal-to-noise ratio in dB of each image or frame (data range 1); inf where identical."""
    p, t = _pair(pred, target)
    mse = ((p.double() - t.double()) ** 2).flatten(1).mean(1)
    return [math.inf if m == 0 else float(-10.0 * math.log10(m)) for m in mse.tolist()]


def psnr(pred, target) -> float:
    """PSNR in dB, mean over frames; inf when identical."""
    return mean_over_frames(psnr_per_frame(pred, target))


def _odd(n: int) -> int:
    return n if n % 2 else n - 1


def ssim_per_frame(pred, target) -> list[float]:
    """Structural similarity of each image or frame (data range 1); 1.0 where identical."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    p, t = _pair(pred, target)
    kernel = min(11, _odd(min(p.shape[-2:])))
    out = structural_similarity_index_measure(p, t, data_range=1.0, kernel_size=kernel, reduction="none")
    return [float(v) for v in out.reshape(-1)]


def ssim(pred, target) -> float:
    """SSIM, mean over frames; 1.0 when identical."""
    return float(np.mean(ssim_per_frame(pred, target)))


def ms_ssim_per_frame(pred, target) -> list[float]:
    """Multi-scale SSIM of each frame (5 scales, 11x11 window); needs sides of MS_SSIM_MIN_SIDE pixels."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    p, t = _pair(pred, target)
    if min(p.shape[-2:]) < MS_SSIM_MIN_SIDE:
        raise MetricUnavailable(
            f"ms_ssim needs images of at least {MS_SSIM_MIN_SIDE}x{MS_SSIM_MIN_SIDE} pixels, got "
            f"{p.shape[-2]}x{p.shape[-1]}; use ssim"
        )
    out = multiscale_structural_similarity_index_measure(
        p, t, data_range=1.0, kernel_size=MS_SSIM_KERNEL, betas=MS_SSIM_BETAS, reduction="none"
    )
    return [float(v) for v in out.reshape(-1)]


def ms_ssim(pred, target) -> float:
    """MS-SSIM, mean over frames; 1.0 when identical."""
    return float(np.mean(ms_ssim_per_frame(pred, target)))


def lpips_backbone_path(net: str = "alex") -> Path:
    """Where torchvision keeps the LPIPS backbone's ImageNet weights (the torch hub cache)."""
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"lpips backbone must be one of {sorted(LPIPS_BACKBONES)}, got {net!r}")
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONES[net]


_LPIPS_CACHE: dict[tuple[str, str], torch.nn.Module] = {}


def _lpips_model(net: str):
    path = lpips_backbone_path(net)
    key = (net, str(path))
    if key not in _LPIPS_CACHE:
        if not path.is_file():
            raise MetricUnavailable(
                f"lpips needs the {net} backbone weights at {path} (torchvision's {path.name}); "
                "copy the file there or point TORCH_HOME at a cache that has it"
            )
        require("torchvision", "metrics", f"lpips (the {net} backbone)")
        from torchmetrics.functional.image.lpips import _LPIPS

        # The backbone loads from the hub cache (found above, so nothing is fetched); the
        # linear calibration layers ship inside torchmetrics.
        _LPIPS_CACHE[key] = _LPIPS(pretrained=True, net=net, resize=None).eval()
    return _LPIPS_CACHE[key]


@torch.no_grad()
def lpips_per_frame(pred, target, net: str = "alex", batch_size: int = 16) -> list[float]:
    """LPIPS distance of each frame (0 when identical, larger is worse); backbone weights from the hub cache."""
    p, t = _pair(pred, target)
    model = _lpips_model(net)
    out = []
    for i in range(0, len(p), batch_size):
        a, b = p[i : i + batch_size] * 2 - 1, t[i : i + batch_size] * 2 - 1
        out += [float(v) for v in model(a, b, normalize=False).reshape(-1)]
    return out


def lpips(pred, target, net: str = "alex") -> float:
    """LPIPS, mean over frames; 0 when identical."""
    return float(np.mean(lpips_per_frame(pred, target, net)))


FIDELITY_METRICS = {"psnr": psnr, "ssim": ssim, "ms_ssim": ms_ssim, "lpips": lpips}


def fidelity(pred, target, metrics=("psnr", "ssim")) -> dict[str, float]:
    """``{metric: value}`` of ``pred`` against ``target``; raises MetricUnavailable for one that cannot run."""
    unknown = [m for m in metrics if m not in FIDELITY_METRICS]
    if unknown:
        raise ValueError(f"unknown fidelity metric {unknown[0]!r} (known: {', '.join(FIDELITY_METRICS)})")
    return {name: FIDELITY_METRICS[name](pred, target) for name in metrics}
