"""Measurements: latency and memory, fidelity to the baseline, CLIP score, Frechet distances, the baseline store.

- latency: ``measure`` (warm-up, device sync, repeats, median and IQR), ``compare_interleaved``
  (baseline and candidate alternated in one run; the speed-up is a ratio), ``StageTimer`` /
  ``measure_stages`` (text encoding, denoising and decoding apart), peak memory.
- fidelity: ``psnr``, ``ssim``, ``ms_ssim`` (large enough images), ``lpips`` (backbone from the
  torch hub cache); per frame for video.
- clip_score: ``ClipScorer`` over open_clip or demo-clip; weights from local paths only.
- frechet: ``fid``, ``fvd``, ``fd_clip``, ``fd_clip_frames`` -> ``SetScore`` with sample counts.
- baseline_store: ``BaselineStore`` / ``BaselineKey``: baseline outputs cached on disk.
- score: ``score_outputs`` (arrays, e.g. a trial against the baseline) and ``score_folder``
  (files, behind ``mindiesd-tune score``): a list of metric names -> values.
"""

from .baseline_store import BaselineEntry, BaselineKey, BaselineStore
from .clip_score import DEMO_CLIP, ClipScorer, clip_score, default_clip_model, get_scorer
from .errors import MetricUnavailable
from .fidelity import FIDELITY_METRICS, fidelity, lpips, mean_over_frames, ms_ssim, psnr, ssim, to_nchw
from .frechet import SetScore, compare, fd_clip, fd_clip_frames, fid, frechet_distance, fvd, kernel_distance
from .latency import (
    Comparison,
    LatencyStats,
    StageTimer,
    StageTimes,
    compare_interleaved,
    measure,
    measure_stages,
    peak_memory_bytes,
    reset_peak_memory,
    speed_interval,
    summarize,
)
from .score import FolderScores, score_folder, score_outputs

# every metric name -> True when larger is better
METRIC_DIRECTIONS = {
    "psnr": True,
    "ssim": True,
    "ms_ssim": True,
    "lpips": False,
    "clip": True,
    "fid": False,
    "fvd": False,
    "fd_clip": False,
    "fd_clip_frames": False,
    "kid_clip": False,
    "kvd_clip": False,
    "kvd_i3d": False,
}

__all__ = [
    "DEMO_CLIP",
    "FIDELITY_METRICS",
    "FolderScores",
    "BaselineEntry",
    "BaselineKey",
    "BaselineStore",
    "ClipScorer",
    "Comparison",
    "LatencyStats",
    "METRIC_DIRECTIONS",
    "MetricUnavailable",
    "SetScore",
    "StageTimer",
    "StageTimes",
    "clip_score",
    "compare",
    "compare_interleaved",
    "default_clip_model",
    "fd_clip",
    "fd_clip_frames",
    "fid",
    "fidelity",
    "frechet_distance",
    "kernel_distance",
    "fvd",
    "get_scorer",
    "lpips",
    "mean_over_frames",
    "measure",
    "measure_stages",
    "ms_ssim",
    "peak_memory_bytes",
    "psnr",
    "reset_peak_memory",
    "score_folder",
    "score_outputs",
    "ssim",
    "speed_interval",
    "summarize",
    "to_nchw",
]
