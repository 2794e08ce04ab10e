import math

import numpy as np
import pytest
import torch

from mindiesd_tune.metrics import MetricUnavailable, fidelity, lpips, ms_ssim, psnr, ssim
from mindiesd_tune.metrics.fidelity import MS_SSIM_MIN_SIDE, psnr_per_frame, ssim_per_frame


def _img(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_identical_video_gives_psnr_inf_and_ssim_one_on_every_frame():
    vid = _img((4, 24, 24, 3))
    assert psnr_per_frame(vid, vid) == [math.inf] * 4
    assert ssim_per_frame(vid, vid) == pytest.approx([1.0] * 4)
    assert fidelity(vid, vid) == {"psnr": math.inf, "ssim": pytest.approx(1.0)}


def test_video_psnr_is_the_mean_over_frames_and_identical_frames_do_not_swamp_it():
    rng = np.random.default_rng(1)
    ref = _img((3, 16, 16, 3))
    out = ref.copy()
    out[1] = np.clip(ref[1] + rng.normal(0, 0.01, ref[1].shape), 0, 1)
    out[2] = np.clip(ref[2] + rng.normal(0, 0.1, ref[2].shape), 0, 1)
    per = psnr_per_frame(out, ref)
    assert per[0] == math.inf and per[1] > per[2]
    assert psnr(out, ref) == pytest.approx((per[1] + per[2]) / 2)
    assert ssim(out, ref) == pytest.approx(np.mean(ssim_per_frame(out, ref)))


def test_psnr_of_known_noise():
    ref = np.full((32, 32, 3), 0.5, np.float32)
    out = ref + 0.01  # mse 1e-4 -> 40 dB
    assert psnr(out, ref) == pytest.approx(40.0, abs=1e-3)


def test_ms_ssim_runs_where_the_size_allows_and_says_why_not_otherwise():
    side = MS_SSIM_MIN_SIDE
    img = _img((side, side, 3))
    noisy = np.clip(img + np.random.default_rng(2).normal(0, 0.05, img.shape), 0, 1).astype(np.float32)
    assert ms_ssim(img, img) == pytest.approx(1.0, abs=1e-5)
    assert ms_ssim(noisy, img) < 0.99
    small = _img((64, 64, 3))
    with pytest.raises(MetricUnavailable, match=f"at least {side}x{side}"):
        ms_ssim(small, small)


def test_lpips_without_backbone_weights_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    img = _img((32, 32, 3))
    with pytest.raises(MetricUnavailable, match="squeezenet1_1-b8a52dc0.pth"):
        lpips(img, img, net="squeeze")


@pytest.mark.slow
def test_lpips_with_backbone_weights_in_the_hub_cache(tmp_path, monkeypatch):
    # Random squeezenet weights stand in for the ImageNet ones: the plumbing, not the values, is under test.
    import torchvision

    (tmp_path / "checkpoints").mkdir()
    torch.manual_seed(0)
    torch.save(torchvision.models.squeezenet1_1().state_dict(), tmp_path / "checkpoints" / "squeezenet1_1-b8a52dc0.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    vid = _img((2, 32, 32, 3))
    other = _img((2, 32, 32, 3), seed=5)
    assert lpips(vid, vid, net="squeeze") == pytest.approx(0.0, abs=1e-6)
    assert lpips(other, vid, net="squeeze") > 0


def test_unknown_metric_is_named():
    img = _img((8, 8, 3))
    with pytest.raises(ValueError, match="'vmaf'"):
        fidelity(img, img, ("psnr", "vmaf"))
