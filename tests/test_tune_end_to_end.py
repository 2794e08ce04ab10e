"""tune -> profile -> report -> apply_profile, end to end on a tiny model."""

import numpy as np
import optuna
import pytest
import yaml
from PIL import Image

from conftest import generate
from mindiesd_tune import apply_profile, load_profile
from mindiesd_tune.errors import UserError
from mindiesd_tune.models import load
from mindiesd_tune.search_spaces import NEUTRAL_PARAMS
from mindiesd_tune.tuner import load_run, parse_budget, parse_floor, run_study, write_outputs
from mindiesd_tune.tuner.evaluator import to_uint8
from mindiesd_tune.tuner.pick import confirmations, speed_of


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    outcome = run_study(
        "tiny-flux-random", parse_budget("6t"), out, floors=[parse_floor("psnr>=20")], repeats=2, isolate=False,
        log=lambda s: None,
    )
    return out, outcome


@pytest.mark.slow
def test_outputs_are_written(run):
    out, outcome = run
    for name in ("profile.yaml", "report.html", "trials.csv", "study.db"):
        assert (out / name).is_file(), name
    assert outcome.profile_path == out / "profile.yaml"


def test_trial_zero_is_the_baseline(run):
    _, outcome = run
    t0 = outcome.study.trials[0]
    assert t0.params == NEUTRAL_PARAMS
    assert t0.user_attrs["metrics"]["psnr"] == float("inf")
    assert t0.user_attrs["counters"]["blocks_skipped"] == 0


def test_budget_in_trials_is_respected(run):
    _, outcome = run
    # presets beyond the budget stay queued (WAITING) for a resumed run; they did not run
    ran = [t for t in outcome.study.trials if t.state != optuna.trial.TrialState.WAITING]
    assert len(ran) == 6


def test_profile_has_the_design_shape(run):
    out, outcome = run
    data = yaml.safe_load((out / "profile.yaml").read_text())
    assert list(data) == ["schema", "model", "generation", "accel", "measured", "hardware", "study"]
    assert data["model"]["pipeline"] == "FluxPipeline" and data["model"]["family"] == "dit-image"
    assert len(data["model"]["fingerprint"]) == 16
    assert {"latency_s", "baseline_s", "speedup", "psnr", "ssim"} <= set(data["measured"])
    assert data["hardware"]["device"] == "cpu" and data["hardware"]["torch"]
    assert data["study"]["trial"] == outcome.profile.study["trial"]
    prof = load_profile(out / "profile.yaml")
    chosen = outcome.study.trials[prof.study["trial"]]
    speed = speed_of(chosen, confirmations(outcome.study))  # confirmed figures where the study re-measured it
    assert prof.measured["latency_s"] == pytest.approx(speed.latency_s, rel=1e-5)
    assert prof.measured["speedup"] == pytest.approx(speed.speedup, rel=1e-5)
    assert prof.measured["psnr"] == "inf" or prof.measured["psnr"] >= 20


def test_trials_table_has_a_row_per_trial(run):
    import pandas as pd

    out, _ = run
    df = pd.read_csv(out / "trials.csv")
    assert len(df) == 6
    assert {"trial", "state", "latency_s", "speedup", "psnr", "ssim", "param.cache.method", "feasible", "pareto"} <= set(df.columns)


def test_report_is_self_contained(run):
    out, _ = run
    page = (out / "report.html").read_text()
    assert "<script" in page and "Plotly" in page
    assert "<scriptsrc=" not in page.replace(" ", "")  # plotly.js is inlined, nothing is fetched
    assert 'id="pareto"' in page


def test_apply_profile_reproduces_the_chosen_trial(run):
    out, _ = run
    prof = load_profile(out / "profile.yaml")
    fresh = load("tiny-flux-random", device="cpu")
    handle = apply_profile(fresh.pipe, out / "profile.yaml")
    try:
        img = to_uint8(generate(fresh, prompt=prof.study["prompts"][0], seed=prof.study["seeds"][0], **prof.call_kwargs()))
    finally:
        handle.remove()
    saved = np.asarray(Image.open(out / "samples" / f"trial-{prof.study['trial']:04d}.png"))
    assert np.array_equal(img, saved)


def test_report_rebuilds_from_the_study_alone(run):
    out, outcome = run
    (out / "report.html").unlink()
    again = write_outputs(load_run(out), out)
    assert (out / "report.html").is_file()
    assert again.profile.study["trial"] == outcome.profile.study["trial"]


def test_existing_run_folder_is_not_overwritten(run):
    out, _ = run
    with pytest.raises(UserError, match="--resume"):
        run_study("tiny-flux-random", parse_budget("1t"), out, isolate=False, log=lambda s: None)


@pytest.mark.slow
def test_resume_continues_the_same_study_up_to_its_budget(tmp_path):
    run_study("tiny-flux-random", parse_budget("2t"), tmp_path, repeats=1, isolate=False, log=lambda s: None)
    outcome = run_study("tiny-flux-random", parse_budget("4t"), tmp_path, repeats=1, resume=True, isolate=False, log=lambda s: None)
    # presets the budget did not reach stay queued (WAITING); a screen may drop one (PRUNED)
    states = [t.state for t in outcome.study.trials if t.state != optuna.trial.TrialState.WAITING]
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert len(states) == 4 and all(s in finished for s in states)
    assert outcome.study.trials[0].params == NEUTRAL_PARAMS
