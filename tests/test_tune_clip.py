"""`tune --objective clip` end to end: demo-flux scored by the demo-clip scorer."""

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from PIL import Image

from mindiesd_tune.cli import main
from mindiesd_tune.metrics import get_scorer
from mindiesd_tune.search_spaces import NEUTRAL_PARAMS
from mindiesd_tune.tuner import load_run
from mindiesd_tune.tuner.pick import confirmations, failed_heldout, speed_of

PROMPT = "a red circle on a blue background"
pytestmark = pytest.mark.slow
# The saved samples are the outputs rounded to uint8; that moves demo-clip's score by about 0.1.
SAMPLE_CLIP_TOL = 0.5


def ran(study):
    """The trials the 3-trial budget ran; presets beyond it stay queued (WAITING)."""
    return [t for t in study.trials if t.state != optuna.trial.TrialState.WAITING]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip") / "run"
    # one prompt, no warm-up, one timed call per trial, in this process: five demo-flux calls in all
    try:
        main(["tune", "demo-flux", "--objective", "clip", "--budget", "3t", "--out", str(out), "--prompt", PROMPT,
              "--repeats", "1", "--warmup", "0", "--no-interleave", "--no-isolate", "--no-baseline-cache", "--quiet"])
    except SystemExit as e:
        assert not e.code
    return out, load_run(out)


def test_clip_is_the_maximised_quality_objective(run):
    _, study = run
    assert study.user_attrs["objective"] == "clip" and study.user_attrs["objective_direction"] == "maximize"
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE, optuna.study.StudyDirection.MAXIMIZE]
    done = [t for t in ran(study) if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(ran(study)) == 3 and len(done) == 3
    for t in done:
        clip = t.user_attrs["metrics"]["clip"]
        assert 0 < clip <= 100 and t.values[1] == pytest.approx(clip)
        assert {"psnr", "ssim"} <= set(t.user_attrs["metrics"])  # the default floor still needs PSNR
        assert "psnr>=30" in t.constraints
    # the baseline trial reproduces the baseline output, so it scores what the baseline scored
    base = study.trials[0]
    assert base.params == {**NEUTRAL_PARAMS, "steps.batch_cfg": False}  # true CFG: batching its calls is searched, off here
    assert base.user_attrs["metrics"]["clip"] == pytest.approx(study.user_attrs["baseline_metrics"]["clip"])


def test_recorded_clip_scores_the_trials_own_sample_and_prompt(run):
    out, study = run
    scorer = get_scorer("demo-clip")
    for t in ran(study):
        sample = np.asarray(Image.open(out / "samples" / f"trial-{t.number:04d}.png").convert("RGB"), dtype=np.float32) / 255
        assert scorer.score([sample], [PROMPT]) == pytest.approx(t.user_attrs["metrics"]["clip"], abs=SAMPLE_CLIP_TOL)
        # and it is a score of the prompt: a picture of a red circle does not match a green square
        assert scorer.score([sample], ["a white square on a green background"]) < t.user_attrs["metrics"]["clip"] - 10


def test_profile_and_table_carry_the_clip_score(run):
    out, study = run
    data = yaml.safe_load((out / "profile.yaml").read_text())
    chosen = study.trials[data["study"]["trial"]]
    feasible = [t for t in ran(study) if t.state == optuna.trial.TrialState.COMPLETE
                and all(v <= 0 for v in t.constraints.values())]
    conf = confirmations(study)
    aside = failed_heldout(study)  # a point that missed the floors on the held-out prompts is never the pick
    faster = [t for t in feasible if speed_of(t, conf).beyond_noise and t.number and (str(t.number) in conf or not conf)
              and t.number not in aside]
    if faster:  # the fastest by the confirmed speed-up
        assert chosen.number == max(faster, key=lambda t: speed_of(t, conf).speedup).number
    else:  # nothing beat the baseline beyond timing noise
        assert chosen.number == 0
    assert data["model"]["name"] == "demo-flux"
    assert data["measured"]["clip"] == pytest.approx(chosen.user_attrs["metrics"]["clip"], rel=1e-3)
    df = pd.read_csv(out / "trials.csv")
    assert "clip" in df.columns and len(df) == 3
    for t in ran(study):
        assert df.loc[df["trial"] == t.number, "clip"].item() == pytest.approx(t.user_attrs["metrics"]["clip"])


def test_report_plots_clip_as_the_objective(run):
    out, _ = run
    page = (out / "report.html").read_text()
    # the objective's front is "pareto"; the other metrics get their own plots
    assert 'id="pareto"' in page and 'id="pareto-psnr"' in page and 'id="pareto-clip"' not in page
    assert "<th>objective</th><td>clip" in page
