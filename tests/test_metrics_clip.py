import json

import numpy as np
import pytest
import torch

from mindiesd_tune.metrics import ClipScorer, MetricUnavailable, default_clip_model
from mindiesd_tune.metrics.clip_score import sample_frames
from mindiesd_tune.models import shapes
from mindiesd_tune.models.weights import weights_path


def _has_demo_clip():
    return weights_path("demo-clip").is_file()


needs_demo_clip = pytest.mark.skipif(not _has_demo_clip(), reason="demo-clip weights are not in the package")


@pytest.fixture(scope="module")
def scorer():
    return ClipScorer("demo-clip", batch_size=64)


@pytest.fixture(scope="module")
def captioned():
    b = shapes.sample(0, 96, split="heldout")
    return ((b.images + 1) / 2).permute(0, 2, 3, 1).numpy(), b.captions


@needs_demo_clip
@pytest.mark.slow
def test_matching_captions_score_higher_than_shuffled_ones(scorer, captioned):
    images, captions = captioned
    shuffled = [captions[i] for i in np.random.default_rng(0).permutation(len(captions))]
    right, wrong = np.array(scorer.scores(images, captions)), np.array(scorer.scores(images, shuffled))
    assert right.mean() > wrong.mean() + 10
    assert (right > wrong).mean() > 0.8


@needs_demo_clip
@pytest.mark.slow
def test_batching_does_not_change_the_scores(scorer, captioned):
    images, captions = captioned
    small = ClipScorer("demo-clip", batch_size=7)
    assert small.scores(images[:20], captions[:20]) == pytest.approx(scorer.scores(images[:20], captions[:20]), abs=1e-3)


@needs_demo_clip
def test_a_video_scores_as_the_mean_over_its_sampled_frames(scorer, captioned):
    images, captions = captioned
    video = images[:12]  # twelve different frames under one caption
    frames = sample_frames(12, scorer.video_frames)
    per_frame = scorer.scores(video[frames], [captions[0]] * len(frames))
    assert len(frames) == scorer.video_frames < 12 and len(set(per_frame)) > 1
    assert scorer.scores([video], [captions[0]])[0] == pytest.approx(np.mean(per_frame), abs=1e-3)


def test_frames_are_sampled_evenly():
    assert sample_frames(5, 8) == [0, 1, 2, 3, 4]
    assert sample_frames(33, 5) == [0, 8, 16, 24, 32]


def test_demo_models_default_to_demo_clip_and_real_ones_to_nothing():
    assert default_clip_model("demo-flux") == "demo-clip"
    assert default_clip_model("black-forest-labs/FLUX.1-dev") is None


@pytest.mark.parametrize("spec", ["ViT-B-32:openai", "ViT-B-32", "ViT-B-32:/nowhere/weights.safetensors", "hf-hub:org/model", ""])
def test_a_real_model_without_local_weights_fails_fast_saying_how_to_supply_them(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.cache/clip
    with pytest.raises(MetricUnavailable) as e:
        ClipScorer(spec)
    msg = str(e.value)
    assert "\n" not in msg and "local-dir:" in msg


def test_a_local_dir_checkpoint_loads_through_open_clip(tmp_path):
    import open_clip
    from safetensors.torch import save_file

    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "open_clip_model.safetensors"))
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    s = ClipScorer(f"local-dir:{tmp_path}", batch_size=2)
    imgs = np.random.default_rng(0).random((3, 48, 40, 3), dtype=np.float32)
    feats = s.image_features(imgs)
    assert feats.shape == (3, 32) and torch.allclose(feats.norm(dim=-1), torch.ones(3))
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.encode_image(s._preprocess(torch.tensor(imgs).permute(0, 3, 1, 2))), dim=-1)
    assert torch.allclose(feats, expected, atol=1e-5)  # the checkpoint, not a fresh init, was loaded
    assert len(s.scores(imgs, ["a red circle", "a cat", "x"])) == 3


def test_an_architecture_with_a_checkpoint_file_loads_without_any_download(tmp_path):
    import open_clip
    from safetensors.torch import save_file

    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "TinyTestCLIP.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "cfg")
    torch.manual_seed(1)
    model = open_clip.model.CLIP(**cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    s = ClipScorer(f"TinyTestCLIP:{tmp_path / 'w.safetensors'}")
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.encode_text(open_clip.get_tokenizer("TinyTestCLIP")(["a red circle"])), dim=-1)
    assert torch.allclose(s.text_features(["a red circle"]), expected, atol=1e-5)
