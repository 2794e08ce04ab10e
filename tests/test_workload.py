"""The user's workload: size, frames, steps and prompts of a saved diffusers folder, from the
model's own defaults or the options, refused before any trial when the model cannot take it."""

import json

import pytest

from conftest import cli
from mindiesd_tune import models
from mindiesd_tune.errors import UserError
from mindiesd_tune.models.prompts import DEMO_IMAGE_PROMPTS, IMAGE_PROMPTS, VIDEO_PROMPTS, default_prompts
from mindiesd_tune.profile import load_profile
from mindiesd_tune.workload import check_size, model_generation, pair, parse_seeds, read_prompts

FAST = ("--budget", "2t", "--no-isolate", "--repeats", "1", "--warmup", "0", "--no-baseline-cache", "--quiet")


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory):
    """A tiny SD3 saved with save_pretrained: sample size 8 x VAE factor 2 -> 16 px by default;
    pos_embed_max_size 8 x patch 2 x VAE factor 2 -> at most 32 px."""
    import tiny_pipelines

    path = tmp_path_factory.mktemp("models") / "sd3"
    pipe = tiny_pipelines.sd3().pipe
    pipe.vae.register_to_config(shift_factor=0.0)  # the tiny VAE leaves it unset; decoding needs a number
    pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "wan"
    models.load("tiny-wan-random", device="cpu").pipe.save_pretrained(path)
    return path


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a lighthouse on a cliff\n\na bowl of ramen\n")
    return path


def test_defaults_come_from_the_model(sd3_folder, wan_folder):
    sd3 = models.load(str(sd3_folder), device="cpu")
    assert sd3.generation["height"] == sd3.generation["width"] == 16  # transformer sample size x VAE factor
    assert sd3.generation["num_inference_steps"] == 28 and sd3.generation["guidance_scale"] == 7.0
    assert sd3.generation["max_sequence_length"] == 8  # its T5 tokenizer takes 8 tokens, not the call's 256
    wan = models.load(str(wan_folder), device="cpu")  # also: a Wan folder loads without accelerate
    assert (wan.generation["height"], wan.generation["width"], wan.generation["num_frames"]) == (480, 832, 81)
    assert model_generation(wan.pipe) == wan.generation


def test_sizes_the_model_cannot_take_are_refused_naming_the_limit(sd3_folder):
    pipe = models.load(str(sd3_folder), device="cpu").pipe
    check_size(pipe, {"height": 32, "width": 16})
    with pytest.raises(UserError, match=r"at most 32 px \(SD3Transformer2DModel pos_embed_max_size 8"):
        check_size(pipe, {"height": 64, "width": 16})
    with pytest.raises(UserError, match="multiple of 4 px"):
        check_size(pipe, {"height": 16, "width": 18})


def test_real_models_get_the_varied_prompt_sets_and_demo_models_the_demo_prompts():
    assert default_prompts(builtin=True, video=False) == DEMO_IMAGE_PROMPTS
    assert default_prompts(builtin=False, video=False) == IMAGE_PROMPTS
    assert default_prompts(builtin=False, video=True) == VIDEO_PROMPTS
    assert len(IMAGE_PROMPTS) >= 8 and len(VIDEO_PROMPTS) >= 8
    assert not any("background" in p for p in IMAGE_PROMPTS + VIDEO_PROMPTS)  # not the demo's shapes


def test_prompt_files_and_seeds(tmp_path, prompts_file):
    assert read_prompts(prompts_file) == ["a lighthouse on a cliff", "a bowl of ramen"]
    assert parse_seeds("0, 1") == [0, 1]
    assert pair(["a", "b"], [3, 4]) == (["a", "b"], [3, 4])
    assert pair(["a", "b"], [7]) == (["a", "b"], [7, 7])
    assert pair(["a"], [0, 1]) == (["a", "a"], [0, 1])
    assert pair(["a", "b"], None, 5) == (["a", "b"], [5, 6])
    with pytest.raises(UserError, match="whole numbers"):
        parse_seeds("0,x")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(UserError, match="no prompt"):
        read_prompts(tmp_path / "empty.txt")


@pytest.mark.slow
@pytest.mark.parametrize("which", ["sd3", "wan"])
def test_tune_a_saved_folder_at_the_users_workload_and_bench_reproduces_it(which, sd3_folder, wan_folder, prompts_file,
                                                                          tmp_path, capsys):
    folder = sd3_folder if which == "sd3" else wan_folder
    frames = ["--frames", "5"] if which == "wan" else []
    workload = ["--steps", "2", "--prompts", str(prompts_file), "--seeds", "3,4", *frames, *FAST]
    out = tmp_path / "run"
    if which == "sd3":  # too large: refused before any trial, and nothing is left to block the next start
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        code, stdout, err = cli(capsys, "tune", str(folder), "--height", "64", "--width", "16", "--out", str(out), *workload)
        assert code == 2
        assert "--height 64" in err and "at most 32 px" in err and "pos_embed_max_size 8" in err
        assert "Traceback" not in err and "trial" not in stdout
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # only what was there before
    code, _, err = cli(capsys, "tune", str(folder), "--height", "16", "--width", "32", "--out", str(out), *workload)
    assert code == 0, err  # no --resume needed after the refused start
    prof = load_profile(out / "profile.yaml")
    g = prof.generation
    assert (g["height"], g["width"], g["num_inference_steps"]) == (16, 32, 2)
    assert g["num_frames"] == (5 if which == "wan" else None)
    assert prof.study["prompts"] == ["a lighthouse on a cliff", "a bowl of ramen"] and prof.study["seeds"] == [3, 4]

    code, stdout, err = cli(capsys, "bench", str(folder), "--profile", str(out / "profile.yaml"), "--json",
                            "--repeats", "1", "--precision", "0", "--warmup", "0", "--device", "cpu")
    assert code == 0, err
    assert "16x32 px" in err and "2 steps" in err and "2 prompt(s), seeds 3,4" in err
    assert json.loads(stdout.strip().splitlines()[-1])["prompts"] == 2


def test_a_refused_start_in_a_new_folder_leaves_no_folder(sd3_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = cli(capsys, "tune", str(sd3_folder), "--width", "18", "--out", str(out), *FAST)
    assert code == 2 and "--width 18" in err and "multiple of 4 px" in err
    assert not out.exists()


def test_an_option_the_pipeline_does_not_take_is_refused(sd3_folder, tmp_path, capsys):
    code, _, err = cli(capsys, "run", str(sd3_folder), "--prompt", "a cat", "--true-cfg", "4",
                       "--out", str(tmp_path / "x.png"), "--device", "cpu")
    assert code == 2 and "--true-cfg" in err and "true_cfg_scale" in err and "Traceback" not in err


def test_run_takes_the_workload_options(sd3_folder, tmp_path, capsys):
    from PIL import Image

    code, stdout, err = cli(capsys, "run", str(sd3_folder), "--prompt", "a cat", "--height", "16", "--width", "32",
                            "--steps", "2", "--seeds", "0,1", "--out", str(tmp_path / "x.png"), "--device", "cpu")
    assert code == 0, err
    for i in (0, 1):
        assert Image.open(tmp_path / f"x-{i}.png").size == (32, 16)


def test_a_study_left_without_trials_by_a_killed_start_does_not_block_the_next(tmp_path):
    import optuna

    from mindiesd_tune.tuner import parse_budget, run_study
    from mindiesd_tune.tuner.storage import default_storage, write_run_json

    out = tmp_path / "run"
    out.mkdir()
    url = default_storage(out, 1)  # what a start killed while its model loaded leaves behind
    optuna.create_study(study_name="fake", storage=url, directions=["minimize", "maximize"])
    write_run_json(out, url, "fake")
    outcome = run_study("fake", parse_budget("2t"), out, worker_factory="fakes:make_fake", isolate=False, quiet=True)
    assert outcome.profile is not None
    # a study with trials still needs --resume
    with pytest.raises(UserError, match="--resume"):
        run_study("fake", parse_budget("2t"), out, worker_factory="fakes:make_fake", isolate=False, quiet=True)
