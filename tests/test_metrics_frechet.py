import numpy as np
import pytest
import torch

from mindiesd_tune.metrics import MetricUnavailable, SetScore, compare, fid, frechet_distance, fvd
from mindiesd_tune.metrics.frechet import fvd_clips, i3d_features, load_i3d


def test_identical_feature_sets_are_at_distance_zero():
    x = np.random.default_rng(0).normal(size=(200, 16))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_a_shift_of_the_mean_costs_its_squared_length():
    x = np.random.default_rng(0).normal(size=(300, 8))
    shift = np.arange(8) * 0.1
    assert frechet_distance(x, x + shift) == pytest.approx((shift**2).sum(), rel=1e-6)


def test_two_sample_bias_falls_as_the_sample_count_grows():
    # Both sets come from the same N(0, I): the true distance is 0, the estimate is biased upward.
    d, seeds = 8, range(6)

    def mean_fd(n):
        return np.mean([frechet_distance(*np.random.default_rng(s).normal(size=(2, n, d))) for s in seeds])

    bias = [mean_fd(n) for n in (25, 100, 400)]
    assert bias[0] > bias[1] > bias[2] > 0
    assert bias[2] < 0.35 * bias[0]


def test_set_scores_compare_only_at_equal_counts():
    a = SetScore("fid", 10.0, 100, 100, "FID (Inception pool 2048)")
    assert compare(a, SetScore("fid", 7.5, 100, 100, a.label)) == 2.5
    with pytest.raises(ValueError, match="equal sample counts"):
        compare(a, SetScore("fid", 7.5, 50, 100, a.label))
    with pytest.raises(ValueError, match="cannot compare"):
        compare(a, SetScore("fd_clip", 7.5, 100, 100, "Frechet distance on CLIP image features (demo-clip)"))


class Pool(torch.nn.Module):
    """A cheap feature extractor: 4x4 average colours."""

    num_features = 48

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x.float(), 4).flatten(1)


def test_fid_with_a_custom_feature_extractor_reports_counts():
    imgs = np.random.default_rng(0).random((60, 16, 16, 3), dtype=np.float32)
    same = fid(imgs, imgs, feature_extractor=Pool(), feature_name="pool")
    assert same.name == "fd_pool" and same.n == same.n_reference == 60
    assert same.value == pytest.approx(0.0, abs=1e-3)
    darker = fid(imgs * 0.5, imgs, feature_extractor=Pool(), feature_name="pool")
    assert darker.value > 1.0


def test_fid_without_inception_weights_fails_with_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    imgs = np.zeros((4, 8, 8, 3), np.float32)
    with pytest.raises(MetricUnavailable, match="pt_inception-2015-12-05-6726825d.pth") as e:
        fid(imgs, imgs)
    assert "\n" not in str(e.value)
    with pytest.raises(MetricUnavailable, match="none at"):
        fid(imgs, imgs, inception_weights=tmp_path / "missing.pth")


@pytest.mark.slow
def test_fid_with_local_inception_weights(tmp_path):
    # Random Inception weights at a local path: FID's plumbing through torchmetrics and torch-fidelity.
    pytest.importorskip("torch_fidelity")
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    original = FeatureExtractorInceptionV3.load_state_dict
    FeatureExtractorInceptionV3.load_state_dict = lambda self, sd, *a, **k: None
    try:
        torch.manual_seed(0)
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["64"], feature_extractor_weights_path=str(empty))
    finally:
        FeatureExtractorInceptionV3.load_state_dict = original
    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), weights)
    imgs = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    score = fid(imgs, imgs, inception_weights=weights, feature=64)
    assert score.name == "fid" and score.n == 4 and score.value == pytest.approx(0.0, abs=1e-2)


@pytest.fixture(scope="module")
def fake_i3d(tmp_path_factory):
    """A TorchScript stand-in with the I3D call signature whose 'features' describe its input."""

    class FakeI3D(torch.nn.Module):
        def forward(self, x: torch.Tensor, rescale: bool, resize: bool, return_features: bool) -> torch.Tensor:
            n = x.shape[0]
            dims = torch.tensor([float(x.shape[1]), float(x.shape[2]), float(x.shape[3]), float(x.shape[4])])
            stats = torch.stack([x.flatten(1).amin(1), x.flatten(1).amax(1)], 1)
            flags = torch.tensor([float(rescale), float(resize), float(return_features)])
            return torch.cat([dims.expand(n, 4), stats, flags.expand(n, 3), x.mean((3, 4)).flatten(1)], 1)

    path = tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt"
    torch.jit.script(FakeI3D()).save(str(path))
    return path


def _videos(n, frames=16, size=32, seed=0):
    return list(np.random.default_rng(seed).random((n, frames, size, size, 3), dtype=np.float32))


def test_fvd_feeds_i3d_sixteen_frame_224_clips_in_minus_one_to_one(fake_i3d):
    vids = _videos(3, frames=20, size=40)
    feats = i3d_features(vids, load_i3d(fake_i3d))
    assert feats[:, :4].tolist() == [[3, 16, 224, 224]] * 3
    assert feats[:, 4].min() >= -1 and feats[:, 4].min() < -0.9
    assert feats[:, 5].max() <= 1 and feats[:, 5].max() > 0.9
    assert feats[:, 6:9].tolist() == [[0, 0, 1]] * 3  # rescale=False, resize=False, return_features=True


@pytest.mark.slow
def test_fvd_of_identical_sets_is_zero_and_counts_videos(fake_i3d):
    vids = _videos(4)
    score = fvd(vids, vids, i3d_weights=fake_i3d)
    assert score.name == "fvd" and (score.n, score.n_reference) == (4, 4)
    assert score.value == pytest.approx(0.0, abs=1e-6)
    assert fvd(_videos(4, seed=1), vids, i3d_weights=fake_i3d).value > 0


def test_fvd_needs_sixteen_frames_and_the_i3d_file(fake_i3d, tmp_path, monkeypatch):
    with pytest.raises(MetricUnavailable, match="16 frames, got 9"):
        fvd_clips(_videos(1, frames=9))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(MetricUnavailable, match="fd_clip_frames") as e:
        fvd(_videos(2), _videos(2))
    assert "not FVD" in str(e.value)


def _demo_clip():
    from mindiesd_tune.metrics import ClipScorer
    from mindiesd_tune.models.weights import weights_path

    if not weights_path("demo-clip").is_file():
        pytest.skip("demo-clip weights are not in the package")
    return ClipScorer("demo-clip")


@pytest.mark.slow
def test_without_i3d_videos_get_a_frechet_distance_on_clip_frames_named_as_such():
    from mindiesd_tune.metrics import fd_clip_frames
    from mindiesd_tune.models import shapes

    scorer = _demo_clip()
    to_np = lambda b: list(((b.images + 1) / 2).permute(0, 2, 3, 4, 1).numpy())  # noqa: E731
    vids, others = to_np(shapes.sample_video(0, 6, num_frames=5)), to_np(shapes.sample_video(1, 6, num_frames=5))
    same = fd_clip_frames(vids, vids, scorer)
    assert same.name == "fd_clip_frames" and "fvd" not in same.label.lower()
    assert same.label == "Frechet distance on per-frame CLIP features (demo-clip)"
    assert (same.n, same.n_reference) == (30, 30)  # samples are frames
    assert same.value == pytest.approx(0.0, abs=1e-4)
    assert fd_clip_frames(others, vids, scorer).value > 1e-2
