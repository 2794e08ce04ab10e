"""The budget is a promise: the plan's arithmetic against a fake clock, screening before full
timing, a resume that keeps the study, and the outputs after a Ctrl-C in the confirmation.

No assertion here depends on how fast the machine is: the plan runs on an injected clock, the
studies on the fake evaluator (tests/fakes.py), whose costs are known.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from mindiesd_tune.errors import UserError
from mindiesd_tune.tuner import load_run, parse_budget, parse_floor, run_study
from mindiesd_tune.tuner.plan import USEFUL_TRIALS, Costs, Plan

TESTS = Path(__file__).parent
TrialState = optuna.trial.TrialState


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _plan(budget_s=600.0, call_s=2.0, prompts=2, clock=None):
    clock = clock or Clock()
    return Plan(Costs(call_s, prompts), start=clock.t, budget_s=budget_s, clock=clock), clock


def test_the_phases_share_the_budget_and_end_with_it():
    plan, clock = _plan()
    assert plan.end == clock.t + 600
    # outputs last, confirmation before them, the search before that
    assert plan.search_end + plan.confirm_s + plan.output_s == pytest.approx(plan.end)
    assert plan.search_end > plan.start and plan.confirm_s > 0 and plan.output_s > 0
    clock.t = plan.search_end + 5  # the search ran over by 5 s: the confirmation is that much shorter
    assert plan.confirm_left() == pytest.approx(plan.confirm_s - 5)
    clock.t = plan.end
    assert plan.confirm_left() == 0.0


def test_the_planner_stops_scheduling_when_the_time_left_is_below_a_trials_cost():
    plan, clock = _plan()
    assert plan.room_for("trial")  # nothing measured yet: the estimate from one call, the whole search ahead
    clock.t = plan.search_end - plan.trial_s() + 0.1
    assert not plan.room_for("trial")  # the estimate alone stops it too
    clock.t = plan.start
    for _ in range(5):
        plan.record("screen", 6.0)
    plan.record("full", 30.0)
    cost = plan.trial_s()  # a screen, and the share of screens promoted times a full timing
    assert cost == pytest.approx(6.0 + (1 / 5) * 30.0)
    clock.t = plan.search_end - cost - 0.1
    assert plan.room_for("trial")
    clock.t = plan.search_end - cost + 0.1
    assert not plan.room_for("trial")
    # a screened point goes on to full timing only when that fits too
    clock.t = plan.search_end - 29
    assert plan.room_for("screen") and not plan.room_for("full")
    # the last chance for a full timing: one fits, a screen and one after it do not
    clock.t = plan.search_end - 35
    assert plan.last_full() and plan.room_for("full")
    clock.t = plan.search_end - 37
    assert not plan.last_full()


def test_the_confirmations_share_is_the_searchs_until_there_is_something_to_confirm():
    plan, clock = _plan()
    clock.t = plan.search_end + 10  # past the search's share: only a search with nothing to confirm goes on
    assert not plan.room_for("trial") and plan.room_for("trial", hold_confirmation=False)
    clock.t = plan.end - plan.output_s - plan.trial_s() + 0.1  # the outputs' share is never the search's
    assert not plan.room_for("trial", hold_confirmation=False)


def test_the_unaccelerated_trial_gets_fewer_rounds_where_the_budget_is_tight():
    roomy, _ = _plan(budget_s=3600.0, call_s=1.0)
    assert roomy.neutral_rounds() == 6
    tight, _ = _plan(budget_s=240.0, call_s=6.7)  # demo-flux at 256 px on the 2-core dev machine
    assert tight.neutral_rounds() == 2
    middling, _ = _plan(budget_s=400.0, call_s=3.0)  # a tenth of its search is 5 rounds: 4, even
    assert middling.neutral_rounds() == 4
    assert Plan(Costs(1.0, 2), start=0.0, budget_s=None).neutral_rounds() == 6


def test_a_budget_that_buys_too_few_trials_says_so_and_names_one_that_would_do():
    small, _ = _plan(budget_s=120.0)
    lines = small.lines()
    assert lines[0].startswith("plan:") and "one call 2.0 s" in lines[0] and "confirmation round" in lines[0]
    assert small.trials_bought() < USEFUL_TRIALS
    warning = [line for line in lines if "too few for a useful study" in line]
    assert warning and "--budget " in warning[0]
    advised = float(warning[0].split("--budget ")[1].rstrip("m")) * 60
    enough, _ = _plan(budget_s=advised)
    assert enough.trials_bought() >= USEFUL_TRIALS
    assert not [line for line in enough.lines() if "too few" in line]


def test_without_a_time_budget_nothing_is_held_back():
    plan = Plan(Costs(1.0, 2), start=0.0, budget_s=None)
    assert plan.search_end is None and plan.room_for("trial") and plan.room_for("full")
    assert plan.confirm_left(search_seconds=300.0) == 150.0  # half the search's time


def fake_study(out, budget="12t", model="fake", **kw):
    kw.setdefault("isolate", False)
    kw.setdefault("floors", [parse_floor("psnr>=40")])
    kw.setdefault("prune_margin", None)
    return run_study(model, parse_budget(budget), out, worker_factory="fakes:make_fake", log=lambda s: None, **kw)


@pytest.mark.slow
def test_trials_are_screened_first_and_only_candidates_for_the_front_are_timed_in_full(tmp_path):
    outcome = fake_study(tmp_path, "24t", model="fake-screened")
    trials = outcome.study.trials
    base = trials[0]
    assert base.user_attrs["fidelity"] == "full" and "screen" not in base.user_attrs  # the timing check: in full
    ran = [t for t in trials[1:] if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "repeat_of" not in t.user_attrs]
    # every point but the unaccelerated one is screened first, the presets too
    assert {bool(t.user_attrs.get("preset")) for t in ran} == {True, False}
    others = ran
    assert all("screen" in t.user_attrs for t in others)
    screened_out = [t for t in others if t.state == TrialState.PRUNED]
    assert screened_out, "some points of the fake's space are slower and worse than one timed in full"
    for t in screened_out:
        assert t.user_attrs["prune_reason"].startswith("screened at") and t.user_attrs["fidelity"] == "screen"
        assert "latency_s" not in t.user_attrs  # a screen's ratio is never stored as a speed-up
    full = [t for t in others if t.state == TrialState.COMPLETE]
    assert full and all(t.user_attrs["fidelity"] == "full" for t in full)
    text = (tmp_path / "trials.csv").read_text()
    assert "fidelity" in text.splitlines()[0]


def test_screening_off_times_every_trial_in_full(tmp_path):
    outcome = fake_study(tmp_path, "10t", model="fake-screened", screening=False)
    assert not [t for t in outcome.study.trials if "screen" in t.user_attrs]


@pytest.mark.slow
def test_a_resume_runs_the_stored_study_and_refuses_another_one(tmp_path):
    def ran(study):  # as the trial budget counts them: not queued, not answered from storage
        return sum(t.state != TrialState.WAITING and not t.user_attrs.get("over_budget")
                   and "repeat_of" not in t.user_attrs for t in study.trials)

    first = fake_study(tmp_path, "4t", floors=[parse_floor("psnr>=45")], prompts=["a", "b"], objective="ssim")
    assert first.study.user_attrs["options"]["floors"] == ["psnr>=45"]
    before = ran(first.study)
    # given nothing, the resume takes the study's floors, objective and prompts, not the defaults
    again = fake_study(tmp_path, "7t", floors=None, resume=True, given=frozenset())
    assert again.study.user_attrs["floors"] == ["psnr>=45"] and again.profile.study["objective"] == "ssim"
    assert before == 4 and ran(again.study) == 7  # a trial budget counts the whole study's trials
    # the same value again is no conflict; another value is refused, naming the stored one
    fake_study(tmp_path, "8t", floors=[parse_floor("psnr>=45")], resume=True, given=frozenset({"floors"}))
    with pytest.raises(UserError, match=r"--quality-floor psnr>=30: the study in .* was made with psnr>=45"):
        fake_study(tmp_path, "1t", floors=[parse_floor("psnr>=30")], resume=True, given=frozenset({"floors"}))
    with pytest.raises(UserError, match=r"--prompt/--prompts c: the study .* was made with a, b"):
        fake_study(tmp_path, "1t", prompts=["c"], resume=True, given=frozenset({"prompts"}))
    # the budget and the workers are this call's: a resume may change them
    fake_study(tmp_path, "10t", workers=2, resume=True, given=frozenset({"workers"}))


SCRIPT = """
import functools, sys
import mindiesd_tune.tuner as tuner
tuner.run_study = functools.partial(tuner.run_study, worker_factory=sys.argv.pop(1))
import mindiesd_tune.cli as cli
cli.check_model_arg = lambda *a, **k: None  # the factory's model ("fake") is no model the CLI knows
from mindiesd_tune.cli import main
main(sys.argv[1:])
"""


def _in_confirmation(tmp_path: Path, sig: int):
    """A fake study whose confirmation sleeps, sent ``sig`` once it confirms -> (process, output
    folder, stdout, stderr)."""
    out, marker = tmp_path / "run", tmp_path / "confirming"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MINDIESD_TEST_SLOW_MARKER": str(marker),
           "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = ["fakes:make_slow_confirm", "tune", "fake", "--budget", "10m+6t", "--out", str(out), "--isolate",
            "--no-baseline-cache", "--quality-floor", "psnr>=30"]
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, *args], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert p.poll() is None, p.communicate()[1]
            assert time.monotonic() < deadline, "the confirmation did not start"
            time.sleep(0.1)
        p.send_signal(sig)
        stdout, stderr = p.communicate(timeout=120)  # the confirmation itself would sleep an hour
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p, out, stdout, stderr


@pytest.mark.slow
def test_a_study_killed_in_its_confirmation_is_rebuilt_by_report(tmp_path, capsys):
    from conftest import cli

    p, out, _, _ = _in_confirmation(tmp_path, signal.SIGKILL)
    assert p.returncode == -signal.SIGKILL and not (out / "profile.yaml").exists()
    code, stdout, stderr = cli(capsys, "report", str(out))
    assert code == 0, stderr
    for name in ("profile.yaml", "report.html", "trials.csv"):
        assert (out / name).is_file(), name


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_in_the_confirmation_writes_the_three_outputs(tmp_path, sig):
    p, out, stdout, stderr = _in_confirmation(tmp_path, sig)
    assert p.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert "stopping the confirmation" in stdout
    for name in ("profile.yaml", "report.html", "trials.csv"):
        assert (out / name).is_file(), name
    assert "unconfirmed" in (out / "profile.yaml").read_text() or "confirmed: false" in (out / "profile.yaml").read_text()
    study = load_run(out)
    assert study.user_attrs["stop_reason"] == "interrupted"


@pytest.mark.slow
def test_a_screen_is_one_look_and_one_timing_pair_and_the_full_evaluation_reuses_the_look():
    from mindiesd_tune.accel import AccelConfig, BlockCacheConfig
    from mindiesd_tune.tuner.worker import WorkerSpec, build_evaluator

    ev, info = build_evaluator(WorkerSpec(model="tiny-flux-random", prompts=("a red circle", "a blue square"), warmup=0,
                                          repeats=2, device="cpu"))
    assert info["call_seconds"] > 0 and info["ready_seconds"] >= info["call_seconds"]  # what the plan is priced from
    calls = []
    generate = ev.generate
    ev.generate = lambda prompt, seed, overrides=None: calls.append(prompt) or generate(prompt, seed, overrides)
    config = AccelConfig(cache=BlockCacheConfig(block_start=1, step_interval=2))
    screened = ev.screen(config)
    # the untimed look, then one baseline and one candidate call, all on the first prompt
    assert calls == ["a red circle"] * 3
    assert screened.timing["screen"] and len(screened.latency.samples) == 1 and screened.speedup > 0
    assert set(screened.metrics) >= {"psnr", "ssim"}
    calls.clear()
    full = ev.evaluate(config)
    # no second look and no warm-up: the screen's pair is the first of the 2 rounds, so one more
    # pair, then the other prompt's call
    assert calls.count("a red circle") == 2 and calls.count("a blue square") == 1
    assert len(full.outputs) == 2 and full.speedup is not None
    assert full.latency.samples[0] == screened.latency.samples[0] and len(full.latency.samples) == 2
    assert full.timing["repeats"] == 2
    calls.clear()
    ev.evaluate(config)  # a second evaluation without a screen looks again
    assert calls.count("a red circle") == 5


def test_the_unaccelerated_point_is_only_timed_against_itself_and_its_outputs_are_the_baselines():
    import numpy as np

    from mindiesd_tune.accel import AccelConfig
    from mindiesd_tune.tuner.worker import WorkerSpec, build_evaluator

    ev, _ = build_evaluator(WorkerSpec(model="tiny-flux-random", prompts=("a red circle", "a blue square"), warmup=1,
                                       repeats=2, device="cpu"))
    calls = []
    generate = ev.generate
    ev.generate = lambda prompt, seed, overrides=None: calls.append(prompt) or generate(prompt, seed, overrides)
    result = ev.evaluate(AccelConfig(), rounds=2)
    # two interleaved rounds on the first prompt, no look, no warm-up (the baseline is warm), no
    # call on the other prompt: the point installs nothing
    assert calls == ["a red circle"] * 4
    assert len(result.latency.samples) == 2 and result.timing["repeats"] == 2
    assert all(np.array_equal(a, b) for a, b in zip(result.outputs, ev.baseline))
    assert result.metrics == ev.baseline_metrics


def test_the_screen_drops_a_point_dominated_by_the_baseline_only_where_the_baseline_is_best():
    from mindiesd_tune.tuner.screen import verdict

    study = optuna.create_study(directions=["minimize", "maximize"])
    slow = {"speedup": 0.5, "metrics": {"psnr": 40.0}}
    assert verdict(study, slow, "psnr", True).startswith("screened at 0.50x: no faster than the baseline")
    # fewer weight bytes or a higher CLIP score can put a slower point on the front
    assert verdict(study, {**slow, "metrics": {}}, "weight_bytes", False) is None
    assert verdict(study, {**slow, "metrics": {"clip": 0.3}}, "clip", True) is None
    assert verdict(study, {"speedup": 1.2, "metrics": {"psnr": 40.0}}, "psnr", True) is None  # may reach the front


def _screen(study, ratio, parked=True, **attrs):
    state = TrialState.PRUNED if parked else TrialState.COMPLETE
    values = None if parked else [1 / ratio, 40.0]
    study.add_trial(optuna.trial.create_trial(state=state, values=values, user_attrs={
        "screen": {"speedup": ratio, "metrics": {"psnr": 40.0}}, **({"parked": True} if parked else {}), **attrs}))
    return study.trials[-1].number


def test_a_screen_goes_on_to_full_timing_only_while_it_ranks_in_the_best_third():
    from mindiesd_tune.tuner.screen import rank, to_promote

    study = optuna.create_study(directions=["minimize", "maximize"])
    first = _screen(study, 3.0)
    # one or two screens: none is among the best third yet, however fast
    assert rank(study, first).startswith("screened at 3.00x: ranked 1 of 1 screens") and "parked" in rank(study, first)
    assert rank(study, first, promotion=1) is None and to_promote(study, promotion=1) == []
    second = _screen(study, 2.0)
    assert rank(study, second) is not None and to_promote(study) == []
    # the third screen makes the best of three a candidate: itself when it is the best ...
    third = _screen(study, 4.0, parked=False)
    assert rank(study, third) is None and to_promote(study) == []
    # ... else the parked best, once; a screen below it changes nothing, three more make room for
    # the second best
    study2 = optuna.create_study(directions=["minimize", "maximize"])
    best = _screen(study2, 3.0)
    _screen(study2, 2.0)
    slow = _screen(study2, 1.1)
    assert rank(study2, slow) is not None and [t.number for t in to_promote(study2)] == [best]
    study2.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[0.4, 40.0],
                                               user_attrs={"promoted_from": best, "screen": {"speedup": 3.0}}))
    assert to_promote(study2) == []  # its full timing is not a screen of its own
    for _ in range(3):
        _screen(study2, 1.05)
    assert [t.user_attrs["screen"]["speedup"] for t in to_promote(study2)] == [2.0]
    # a screen that missed a floor on its look ranks below every one that met it, however fast;
    # on the CLIP score or the weight bytes a slower point can be on the front: nothing waits
    study3 = optuna.create_study(directions=["minimize", "maximize"])
    for ratio in (1.2, 1.1):
        _screen(study3, ratio)
    study3.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={
        "screen": {"speedup": 9.0, "meets": False}, "parked": True}))
    assert [t.user_attrs["screen"]["speedup"] for t in to_promote(study3)] == [1.2]
    assert rank(study3, 2, objective="weight_bytes") is None and to_promote(study3, objective="clip") == []


def test_at_its_last_chance_the_search_times_its_best_parked_screen_in_full():
    from mindiesd_tune.tuner.screen import best_parked

    study = optuna.create_study(directions=["minimize", "maximize"])
    _screen(study, 1.1)
    best = _screen(study, 1.5)  # two screens: none ranks among the best third yet
    assert [t.number for t in best_parked(study)] == [best] and best_parked(study, promotion=1) == []
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[0.7, 40.0],
                                              user_attrs={"promoted_from": best}))
    assert best_parked(study) == []  # timed in full already


@pytest.mark.slow
def test_the_best_of_the_first_screens_is_timed_in_full_next_and_its_screen_counted_once(tmp_path):
    from mindiesd_tune.tuner.progress import summary

    outcome = fake_study(tmp_path, "10m+24t", model="fake-screened")  # a clock: successive halving ranks
    trials = sorted((t for t in outcome.study.trials if t.datetime_start), key=lambda t: t.datetime_start)  # as they ran
    screened = [t for t in trials if "screen" in t.user_attrs and "promoted_from" not in t.user_attrs]
    parked = [t for t in screened if t.user_attrs.get("parked")]
    assert parked and all("parked" in t.user_attrs["prune_reason"] and t.state == TrialState.PRUNED for t in parked)
    promoted = [t for t in trials if "promoted_from" in t.user_attrs]
    assert promoted
    by_number = {t.number: t for t in trials}
    first_full = next(t for t in trials if t.user_attrs.get("fidelity") == "full" and "screen" in t.user_attrs)
    # nothing is timed in full before three screens ran, and then it is the best of them: the
    # fastest of those that met the floor on their look (the fake's fastest point misses it)
    before = [t for t in screened if t.datetime_start < first_full.datetime_start]
    assert len(before) == 3  # ahead of the presets still queued
    assert not all(t.user_attrs["screen"]["meets"] for t in before)
    best = max(before, key=lambda t: (t.user_attrs["screen"]["meets"], t.user_attrs["screen"]["speedup"]))
    assert first_full.user_attrs.get("promoted_from", first_full.number) == best.number
    for t in promoted:
        origin = by_number[t.user_attrs["promoted_from"]]
        assert origin.user_attrs.get("parked") and t.params == origin.params
        assert t.state == TrialState.COMPLETE and t.user_attrs["fidelity"] == "full" and "latency_s" in t.user_attrs
        assert t.datetime_start > origin.datetime_complete
    s = summary(outcome.study)
    assert s["screened"] == len(screened)
    import pandas as pd

    table = pd.read_csv(tmp_path / "trials.csv")
    assert set(table.loc[table["promoted_from"].notna(), "trial"]) == {t.number for t in promoted}


@pytest.mark.slow
def test_promotion_one_times_every_promising_screen_at_once(tmp_path):
    # and so does a trial budget alone: its currency is trials, which parking spends, not saves
    for budget, promotion in (("10m+12t", 1), ("12t", 3)):
        outcome = fake_study(tmp_path / budget, budget, model="fake-screened", promotion=promotion)
        trials = outcome.study.trials
        assert not [t for t in trials if t.user_attrs.get("parked") or "promoted_from" in t.user_attrs]
        assert [t for t in trials[1:] if t.user_attrs.get("fidelity") == "full"]
