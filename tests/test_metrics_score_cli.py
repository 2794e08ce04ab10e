import json

import numpy as np
import pytest
from PIL import Image

from conftest import cli
from mindiesd_tune.models import shapes
from mindiesd_tune.models.weights import weights_path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """outputs/ and reference/ with the same eight shapes images (outputs as PNG, reference as .npy), and prompts."""
    root = tmp_path_factory.mktemp("score")
    b = shapes.sample(3, 8, split="heldout")
    u8 = shapes.to_uint8(b.images).permute(0, 2, 3, 1).numpy()
    (root / "out").mkdir(), (root / "ref").mkdir(), (root / "noisy").mkdir()
    rng = np.random.default_rng(0)
    for i, img in enumerate(u8):
        Image.fromarray(img).save(root / "out" / f"img_{i:02d}.png")
        np.save(root / "ref" / f"img_{i:02d}.npy", img)
        noisy = np.clip(img.astype(np.int16) + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(root / "noisy" / f"img_{i:02d}.png")
    (root / "prompts.txt").write_text("\n".join(b.captions) + "\n")
    return root


def test_identical_folders_give_psnr_inf_and_ssim_one_as_json(folders, capsys):
    code, out, _ = cli(capsys, "score", str(folders / "out"), "--reference", str(folders / "ref"), "--metrics", "psnr,ssim", "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"psnr", "ssim"}
    assert data["psnr"] == "inf" and data["ssim"] == pytest.approx(1.0)


def test_noisy_folder_scores_lower_and_set_metrics_carry_counts(folders, capsys):
    if not weights_path("demo-clip").is_file():
        pytest.skip("demo-clip weights are not in the package")
    code, out, err = cli(
        capsys, "score", str(folders / "noisy"), "--reference", str(folders / "ref"), "--prompts", str(folders / "prompts.txt"),
        "--metrics", "psnr,ssim,clip,fd_clip", "--clip-model", "demo-clip", "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    assert 20 < data["psnr"] < 40 and data["ssim"] < 1
    assert data["clip"] > 0
    assert data["fd_clip"]["n"] == data["fd_clip"]["n_reference"] == 8
    assert data["fd_clip"]["label"] == "Frechet distance on CLIP image features (demo-clip)"


def test_human_output_names_each_metric(folders, capsys):
    code, out, _ = cli(capsys, "score", str(folders / "noisy"), "--reference", str(folders / "ref"))
    assert code == 0
    assert "8 images" in out and "psnr" in out and "ssim" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--metrics", "clip", "--prompts", "PROMPTS"], "--clip-model"),
        (["--metrics", "psnr"], "--reference"),
        (["--metrics", "fvd", "--reference", "REF"], "scores videos"),
        (["--metrics", "fid", "--reference", "REF", "--inception", "/nowhere/inception.pth"], "--inception PATH"),
        (["--metrics", "vmaf"], "unknown metric 'vmaf'"),
        (["--metrics", "clip", "--prompts", "SHORT", "--clip-model", "demo-clip"], "1 prompts for 8 files"),
        (["--metrics", "clip", "--prompts", "PROMPTS", "--clip-model", "ViT-B-32:openai"], "no local weights for CLIP ViT-B-32:openai"),
    ],
)
def test_what_cannot_run_is_one_line_and_exit_code_two(folders, capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "short.txt").write_text("a red circle\n")
    subst = {"PROMPTS": str(folders / "prompts.txt"), "REF": str(folders / "ref"), "SHORT": str(tmp_path / "short.txt")}
    code, out, err = cli(capsys, "score", str(folders / "out"), *[subst.get(a, a) for a in args])
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1


def test_reference_files_are_matched_by_name(folders, capsys, tmp_path):
    (tmp_path / "ref").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "ref" / "other.png")
    code, _, err = cli(capsys, "score", str(folders / "out"), "--reference", str(tmp_path / "ref"))
    assert code == 2 and "no reference for img_00.png and 7 more" in err


def test_videos_are_scored_per_frame(tmp_path, capsys):
    clips = shapes.to_uint8(shapes.sample_video(0, 2, num_frames=5).images).permute(0, 2, 3, 4, 1).numpy()
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        for i, clip in enumerate(clips):
            frames = [Image.fromarray(f) for f in clip]
            frames[0].save(tmp_path / d / f"v{i}.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    code, out, err = cli(capsys, "score", str(tmp_path / "a"), "--reference", str(tmp_path / "b"), "--json")
    assert code == 0, err
    assert json.loads(out)["psnr"] == "inf"


def test_score_outputs_takes_arrays_as_the_tuner_has_them():
    from mindiesd_tune.metrics import score_outputs

    rng = np.random.default_rng(0)
    baseline = [rng.random((2, 16, 16, 3), dtype=np.float32) for _ in range(3)]
    same = score_outputs(baseline, ["psnr", "ssim"], reference=baseline)
    assert same.video and same.n == 3 and same.values == {"psnr": float("inf"), "ssim": pytest.approx(1.0)}
    worse = score_outputs([b * 0.9 for b in baseline], ["psnr", "ssim"], reference=baseline)
    assert worse.values["psnr"] < 40 and worse.values["ssim"] < 1
