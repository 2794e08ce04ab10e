"""`tune` on a video model (demo-wan) end to end: profile, report and table, with video samples."""

import base64
import io

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from PIL import Image, ImageSequence

from conftest import generate
from mindiesd_tune import apply_profile
from mindiesd_tune.cli import main
from mindiesd_tune.models import load
from mindiesd_tune.search_spaces import NEUTRAL_PARAMS
from mindiesd_tune.tuner import load_run
from mindiesd_tune.tuner.evaluator import to_uint8
from mindiesd_tune.tuner.pick import confirmations, failed_heldout, speed_of

PROMPT = "a red circle on a blue background moving left"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("video") / "run"
    # one prompt, no warm-up, one timed call per trial, in this process: five demo-wan calls in all
    # (the baseline, the step statistics the search space is centred on, three trials)
    try:
        main(["tune", "demo-wan", "--budget", "3t", "--out", str(out), "--prompt", PROMPT, "--repeats", "1",
              "--warmup", "0", "--no-interleave", "--no-isolate", "--no-baseline-cache", "--quiet"])
    except SystemExit as e:
        assert not e.code
    return out, load_run(out)


def test_profile_is_the_fastest_feasible_video_trial(run):
    out, study = run
    data = yaml.safe_load((out / "profile.yaml").read_text())
    assert data["model"]["name"] == "demo-wan"
    assert data["model"]["family"] == "dit-video" and data["model"]["pipeline"] == "WanPipeline"
    assert data["generation"]["num_frames"] == load("demo-wan", device="cpu").generation["num_frames"]
    assert data["study"]["prompts"] == [PROMPT] and data["study"]["seeds"] == [0]

    # presets beyond the 3-trial budget stay queued (WAITING); the three that ran all completed
    ran = [t for t in study.trials if t.state != optuna.trial.TrialState.WAITING]
    done = [t for t in ran if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(ran) == 3 and len(done) == 3  # every preset installs on Wan
    # CFG as two calls per step: batching them is searched, and off in the baseline
    assert study.trials[0].params == {**NEUTRAL_PARAMS, "steps.batch_cfg": False}
    feasible = [t for t in done if all(v <= 0 for v in t.constraints.values())]
    conf = confirmations(study)
    aside = failed_heldout(study)  # a point that missed the floors on the held-out prompts is never the pick
    faster = [t for t in feasible if speed_of(t, conf).beyond_noise and t.number and (str(t.number) in conf or not conf)
              and t.number not in aside]
    # the fastest by the confirmed speed-up, or the baseline when nothing beat it beyond timing noise
    fastest = max(faster, key=lambda t: speed_of(t, conf).speedup) if faster else study.trials[0]
    assert data["study"]["trial"] == fastest.number
    assert data["accel"]["cache"]["method"] == fastest.params["cache.method"]
    assert data["measured"]["latency_s"] == pytest.approx(speed_of(fastest, conf).latency_s, rel=1e-3)
    assert data["measured"]["psnr"] == "inf" or data["measured"]["psnr"] >= 30


def test_table_has_a_row_per_trial(run):
    out, study = run
    df = pd.read_csv(out / "trials.csv")
    ran = df[df["state"] != "waiting"]
    assert list(ran["trial"]) == [0, 1, 2] and set(ran["state"]) == {"complete"}
    assert df.loc[0, "param.cache.method"] == "none" and np.isinf(df.loc[0, "psnr"])
    for t in study.trials:
        if t.state == optuna.trial.TrialState.WAITING:
            continue
        assert df.loc[t.number, "psnr"] == pytest.approx(t.user_attrs["metrics"]["psnr"])


def test_every_trial_has_a_frame_strip_and_an_animated_sample(run):
    out, study = run
    frames = study.user_attrs["workload"]["generation"]["num_frames"]
    h, w = study.user_attrs["workload"]["generation"]["height"], study.user_attrs["workload"]["generation"]["width"]
    for t in study.trials:
        if t.state == optuna.trial.TrialState.WAITING:
            continue
        strip = Image.open(out / "samples" / f"trial-{t.number:04d}.png")
        anim = Image.open(out / "samples" / f"trial-{t.number:04d}.webp")
        assert strip.size == (frames * w, h)
        assert anim.n_frames == frames and anim.size == (w, h)
        # the strip and the animation are the same frames (the WebP is lossless)
        strip_frames = np.split(np.asarray(strip.convert("RGB")), frames, axis=1)
        for a, b in zip(ImageSequence.Iterator(anim), strip_frames):
            assert np.array_equal(np.asarray(a.convert("RGB")), b)


def test_report_plays_the_profile_trial_as_video(run):
    out, study = run
    chosen = yaml.safe_load((out / "profile.yaml").read_text())["study"]["trial"]
    page = (out / "report.html").read_text()
    assert f"Profile: trial {chosen}</b>" in page
    # the profile's trial plays as an animated WebP thumbnail with every frame of its video
    frames = study.user_attrs["workload"]["generation"]["num_frames"]
    section = page[page.index(f"Profile: trial {chosen}</b>"):]
    uri = section[section.index('src="data:image/webp;base64,') + len('src="data:image/webp;base64,'):]
    anim = Image.open(io.BytesIO(base64.b64decode(uri[:uri.index('"')])))
    assert anim.n_frames == frames


def test_applying_the_profile_reproduces_the_saved_video(run):
    out, _ = run
    loaded = load("demo-wan", device="cpu")
    handle = apply_profile(loaded.pipe, out / "profile.yaml")
    prof = yaml.safe_load((out / "profile.yaml").read_text())
    try:
        video = to_uint8(generate(loaded, prompt=PROMPT, seed=0, **handle.call_overrides))
    finally:
        handle.remove()
    saved = Image.open(out / "samples" / f"trial-{prof['study']['trial']:04d}.webp")
    saved = np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(saved)])
    assert video.shape == saved.shape and np.array_equal(video, saved)
