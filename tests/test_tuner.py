"""The tuner's contract: constraints, samplers, presets, pruning, budgets, failures, workers, picking."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from mindiesd_tune.search_spaces import NEUTRAL_PARAMS, presets
from mindiesd_tune.tuner import export, load_run, parse_budget, parse_floor, run_study

TESTS = Path(__file__).parent
COMPLETE, FAIL, PRUNED = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED
WAITING = optuna.trial.TrialState.WAITING


def fake_study(out, budget="12t", model="fake", **kw):
    kw.setdefault("isolate", False)
    kw.setdefault("floors", [parse_floor("psnr>=40")])
    return run_study(model, parse_budget(budget), out, worker_factory="fakes:make_fake", log=lambda s: None, **kw)


def test_presets_come_first_and_trial_zero_is_the_baseline(tmp_path):
    study = fake_study(tmp_path).study
    assert study.trials[0].params == NEUTRAL_PARAMS
    for t, preset in zip(study.trials[1:], presets("dit-image")[1:]):
        assert t.params == preset


@pytest.mark.slow
def test_floors_are_optuna_constraints_and_infeasible_trials_never_win(tmp_path):
    outcome = fake_study(tmp_path, floors=[parse_floor("psnr>=50")], prune_margin=None)
    done = [t for t in outcome.study.trials if t.state == COMPLETE]
    assert all("psnr>=50" in t.constraints for t in done)
    infeasible = [t for t in done if t.constraints["psnr>=50"] > 0]
    assert infeasible, "the fake space has points below the floor"
    chosen = outcome.study.trials[outcome.profile.study["trial"]]
    assert chosen.user_attrs["metrics"]["psnr"] >= 50
    # nothing feasible but the baseline (identical output: infinite PSNR) -> the baseline is the profile
    none_ok = fake_study(tmp_path / "strict", "6t", floors=[parse_floor("psnr>=1000")], prune_margin=None)
    assert none_ok.profile.study["trial"] == 0


def test_relative_floor_scales_the_baseline_value(tmp_path):
    outcome = fake_study(tmp_path, "6t", floors=[parse_floor("ssim>=0.9x")], prune_margin=None)
    for t in outcome.study.trials:
        if t.state == COMPLETE:  # the fake's baseline SSIM is 1, so the bound is 0.9
            assert t.constraints["ssim>=0.9x"] == pytest.approx(0.9 - t.user_attrs["metrics"]["ssim"])


def test_memory_cap_makes_trials_infeasible(tmp_path):
    outcome = fake_study(tmp_path, "4t", max_memory_bytes=500, prune_margin=None)  # the fake peaks at 1000 bytes
    assert all(t.constraints["memory"] > 0 for t in outcome.study.trials if t.state == COMPLETE)
    assert "no trial met" in outcome.reason and outcome.profile.measured["feasible"] is False


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "gp", "random"])
@pytest.mark.slow
def test_samplers_are_seeded_and_reproducible(tmp_path, sampler):
    if sampler == "gp":  # past its random start-up, Optuna's GPSampler needs scipy for every point
        pytest.importorskip("scipy")
    # past the presets and the refinement of the best one (tpe, nsga2, gp), so the sampler draws too
    a = fake_study(tmp_path / "a", "15t", sampler=sampler, seed=3).study
    b = fake_study(tmp_path / "b", "15t", sampler=sampler, seed=3).study
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    c = fake_study(tmp_path / "c", "15t", sampler=sampler, seed=4).study
    assert [t.params for t in c.trials] != [t.params for t in a.trials]


def test_cheap_first_evaluation_prunes_with_a_reason(tmp_path):
    outcome = fake_study(tmp_path, "10t", floors=[parse_floor("psnr>=55")], prune_margin=0.05)
    pruned = [t for t in outcome.study.trials if t.state == PRUNED]
    assert pruned and all("misses psnr>=55" in t.user_attrs["prune_reason"] for t in pruned)
    df = pd.read_csv(tmp_path / "trials.csv")
    assert (df["state"] == "pruned").sum() == len(pruned)


@pytest.mark.slow
def test_time_budget_ends_the_study(tmp_path):
    outcome = fake_study(tmp_path, "10s")
    # the search stops when the plan has no room for another trial, however many this machine
    # ran by then (tuner.plan's own tests check the arithmetic against a fake clock)
    assert outcome.stop_reason == "time budget spent"
    assert len(outcome.study.trials) >= 1 and (tmp_path / "profile.yaml").is_file()
    timing = outcome.study.user_attrs["timing"]
    assert timing["budget_seconds"] == 10 and timing["wall_seconds"] > 0 and "confirm_seconds" in timing


@pytest.mark.slow
def test_failures_are_isolated_and_the_worker_restarted(tmp_path):
    # warmup_steps 1 raises, 3 kills the evaluator process, 4 gives NaN; the study goes on
    outcome = fake_study(tmp_path, "4t", model="fake-faulty", isolate=True)
    study = outcome.study
    # then a good point, so the trial after the failures does not depend on what the sampler draws
    for warm in (1, 3, 4, 2):
        study.enqueue_trial({"cache.method": "first_block", "cache.threshold": 0.2, "cache.warmup_steps": warm,
                             "cache.max_cached_steps": -1, "sparse.method": "none"})
    # a budget that reaches the enqueued points behind the presets the first run left queued
    outcome = fake_study(tmp_path, f"{len(study.trials)}t", model="fake-faulty", isolate=True, resume=True)
    trials = outcome.study.trials
    reasons = {t.params.get("cache.warmup_steps"): t.user_attrs.get("fail_reason", "") for t in trials if t.state == FAIL}
    assert "boom" in reasons[1] and "WorkerDied" in reasons[3] and "NaN" in reasons[4]
    # the restarted worker evaluated the next trial (a refinement it queued may wait behind the budget)
    ran = [t for t in trials if t.state != optuna.trial.TrialState.WAITING]
    assert [t.state for t in ran[-1:]] == [COMPLETE] and ran[-1].params["cache.warmup_steps"] == 2


@pytest.mark.slow
def test_pick_fastest_knee_and_trial_and_export(tmp_path):
    outcome = fake_study(tmp_path, "14t", floors=[parse_floor("psnr>=30")], prune_margin=None)
    fastest = outcome.profile.study["trial"]
    knee = export(tmp_path, "knee").profile.study["trial"]
    assert outcome.study.trials[knee].user_attrs["latency_s"] >= outcome.study.trials[fastest].user_attrs["latency_s"]
    again = export(tmp_path, "trial:0")
    assert again.profile.study["trial"] == 0 and (tmp_path / "profile.yaml").read_text().count("trial: 0") == 1
    from mindiesd_tune.errors import UserError

    with pytest.raises(UserError, match="trial 999"):
        export(tmp_path, "trial:999")


@pytest.mark.slow
def test_two_local_workers_share_a_journal_without_losing_or_repeating_trials(tmp_path):
    fake_study(tmp_path, "10t", workers=2, isolate=True)
    assert (tmp_path / "journal.log").is_file()
    # refinements queued after the last trial may still wait, for a resumed study to run
    trials = [t for t in load_run(tmp_path).trials if not t.user_attrs.get("over_budget") and t.state != WAITING]
    assert len({t.number for t in trials}) == len(trials)
    assert len([t for t in trials if "repeat_of" not in t.user_attrs]) == 10  # repeats cost no budget
    assert all(t.state in (COMPLETE, PRUNED) for t in trials)
    assert {t.user_attrs["worker"] for t in trials} == {"w0", "w1"}


def _cli(*args, **kw):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, "-m", "mindiesd_tune.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _wait_for_trials(out: Path, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / "samples").is_dir() and len(list((out / "samples").glob("*.png"))) >= n:
            return
        time.sleep(0.2)
    raise AssertionError("the study did not get going")


@pytest.mark.slow
def test_ctrl_c_keeps_finished_trials_and_writes_outputs(tmp_path):
    out = tmp_path / "run"
    # the default set-up: the evaluator child ignores Ctrl-C and finishes its trial
    p = _cli("tune", "tiny-flux-random", "--budget", "10m", "--out", str(out), "--repeats", "1")
    _wait_for_trials(out, 2)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr
    assert "stopping after the current trial" in stdout
    assert "trial   0" in stdout  # plain progress lines when stdout is not a terminal
    for name in ("profile.yaml", "report.html", "trials.csv"):
        assert (out / name).is_file()
    states = [t.state for t in load_run(out).trials]
    # finished trials are kept (a screen parked until it ranks among the best is finished too);
    # queued presets may still wait; nothing is left half-run
    assert states.count(COMPLETE) + states.count(PRUNED) >= 2 and states[0] == COMPLETE
    assert all(s in (COMPLETE, PRUNED, optuna.trial.TrialState.WAITING) for s in states)


@pytest.mark.slow
def test_killed_study_resumes_without_losing_or_repeating_trials(tmp_path):
    out = tmp_path / "run"
    p = _cli("tune", "tiny-flux-random", "--budget", "10m", "--out", str(out), "--repeats", "1", "--no-isolate")
    _wait_for_trials(out, 3)
    p.kill()
    p.communicate()
    before = {t.number: (t.params, t.values) for t in load_run(out).trials if t.state == COMPLETE}
    running = [t.params for t in load_run(out).trials if t.state == optuna.trial.TrialState.RUNNING]
    n = len(load_run(out).trials)
    r = _cli("tune", "tiny-flux-random", "--budget", f"{n + 2}t", "--out", str(out), "--repeats", "1", "--no-isolate", "--resume")
    _, err = r.communicate(timeout=300)
    assert r.returncode == 0, err
    study = load_run(out)
    after = {t.number: (t.params, t.values) for t in study.trials if t.state == COMPLETE}
    assert all(after[k] == v for k, v in before.items())  # nothing finished was lost or changed
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    redone = [t.params for t in study.trials[n:]]
    # the interrupted point was evaluated again (a trial killed while sampling has only part of its
    # parameters; the re-run completes them)
    assert all(any(p.items() <= r.items() for r in redone) for p in running), (running, redone)


@pytest.mark.slow
def test_progress_prints_plain_lines_without_a_terminal(tmp_path):
    lines = []
    run_study("fake", parse_budget("3t"), tmp_path, worker_factory="fakes:make_fake", isolate=False,
              progress=False, log=lines.append)
    trial_lines = [line for line in lines if line.startswith("trial ")]
    assert len(trial_lines) == 3 and "1.00x" in trial_lines[0]
    quiet = []
    run_study("fake", parse_budget("3t"), tmp_path / "q", worker_factory="fakes:make_fake", isolate=False,
              quiet=True, log=quiet.append)
    assert not [line for line in quiet if line.startswith("trial ")]


def test_a_pruned_trial_is_never_timed_and_reports_its_evaluation_time():
    # multi-fidelity: one untimed call on the first prompt decides; a pruned point costs that call
    # and carries no latency. Its call and scoring are evaluator time, not study overhead.
    from mindiesd_tune.accel import AccelConfig, BlockCacheConfig
    from mindiesd_tune.tuner.objectives import Constraints
    from mindiesd_tune.tuner.worker import WorkerSpec, build_evaluator, evaluate_message

    ev, _ = build_evaluator(WorkerSpec(model="tiny-flux-random", prompts=("a red circle", "a blue square"), warmup=1, repeats=2))
    constraints = Constraints(floors=[parse_floor("psnr>=1000")])
    calls = []
    generate = ev.generate
    ev.generate = lambda *a, **k: calls.append(a) or generate(*a, **k)
    outcome = evaluate_message(
        ev, AccelConfig(cache=BlockCacheConfig(block_start=1, step_interval=2)).to_dict(), constraints.spec(), 0.05
    )
    partial = outcome.result
    assert outcome.kind == "pruned" and "misses psnr>=1000" in outcome.reason
    assert len(calls) == 1 and "latency" not in partial and "baseline_latency" not in partial
    assert partial["eval_seconds"] > 0
