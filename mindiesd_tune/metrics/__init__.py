"""Measurements: latency (median of repeats, peak memory) and fidelity to the baseline (PSNR, SSIM)."""

from .fidelity import FIDELITY_METRICS, fidelity, psnr, ssim, to_nchw
from .latency import LatencyStats, measure, summarize

# metric name -> True when larger is better
HIGHER_IS_BETTER = {"psnr": True, "ssim": True}

__all__ = ["FIDELITY_METRICS", "HIGHER_IS_BETTER", "LatencyStats", "fidelity", "measure", "psnr", "ssim", "summarize", "to_nchw"]
