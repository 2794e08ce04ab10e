import math

import numpy as np
import pytest

from mindiesd_tune.metrics import measure, psnr, ssim, summarize


def test_identical_images_give_psnr_inf_and_ssim_one():
    img = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    assert psnr(img, img) == math.inf
    assert ssim(img, img) == pytest.approx(1.0)


def test_fidelity_falls_with_noise():
    rng = np.random.default_rng(0)
    img = rng.random((32, 32, 3), dtype=np.float32)
    small = np.clip(img + rng.normal(0, 0.01, img.shape), 0, 1).astype(np.float32)
    large = np.clip(img + rng.normal(0, 0.1, img.shape), 0, 1).astype(np.float32)
    assert psnr(small, img) > psnr(large, img) > 10
    assert ssim(small, img) > ssim(large, img)
    assert psnr(small, img) == pytest.approx(40, abs=1.5)  # sigma 0.01 -> about 40 dB


def test_video_frames_are_scored():
    rng = np.random.default_rng(1)
    vid = rng.random((5, 16, 16, 3), dtype=np.float32)
    assert psnr(vid, vid) == math.inf
    assert ssim(vid * 0.5, vid) < 1


def test_latency_median_and_iqr_on_a_fake_clock():
    ticks = iter([0, 1, 10, 12, 20, 23, 30, 34, 40, 45])  # durations 1, 2, 3, 4, 5
    calls = []
    stats, out = measure(lambda: calls.append(1) or len(calls), warmup=2, repeats=5, clock=lambda: next(ticks))
    assert len(calls) == 7 and out == 7
    assert stats.median_s == 3 and stats.min_s == 1
    assert stats.iqr_s == 2  # q3 4 - q1 2
    assert stats.samples == [1, 2, 3, 4, 5]
    assert stats.peak_memory_bytes > 0  # process RSS on the CPU


def test_summary_of_few_samples():
    s = summarize([0.3, 0.1, 0.2])
    assert s.median_s == 0.2 and s.iqr_s == pytest.approx(0.2)
