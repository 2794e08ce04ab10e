"""Fidelity of an accelerated output to the unaccelerated one (same prompt, same seed)."""

from __future__ import annotations

import math

import numpy as np
import torch


def to_nchw(x) -> torch.Tensor:
    """Images (H,W,C), (N,H,W,C) or video (N,F,H,W,C) in [0,1] -> float tensor (N*F, C, H, W)."""
    t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    if t.ndim == 3:
        t = t[None]
    if t.ndim == 5:
        t = t.flatten(0, 1)
    if t.ndim != 4:
        raise ValueError(f"expected images or video frames, got shape {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2).contiguous()


def psnr(pred, target) -> float:
    """Peak signal-to-noise ratio in dB over all frames (data range 1); inf when identical."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    p, t = to_nchw(pred), to_nchw(target)
    if torch.equal(p, t):
        return math.inf
    return float(peak_signal_noise_ratio(p, t, data_range=1.0))


def ssim(pred, target) -> float:
    """Structural similarity, mean over frames (data range 1); 1.0 when identical."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    p, t = to_nchw(pred), to_nchw(target)
    kernel = min(11, _odd(min(p.shape[-2:])))
    return float(structural_similarity_index_measure(p, t, data_range=1.0, kernel_size=kernel))


def _odd(n: int) -> int:
    return n if n % 2 else n - 1


FIDELITY_METRICS = {"psnr": psnr, "ssim": ssim}


def fidelity(pred, target, metrics=("psnr", "ssim")) -> dict[str, float]:
    return {name: FIDELITY_METRICS[name](pred, target) for name in metrics}
