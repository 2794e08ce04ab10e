"""Quality a user can trust: per-prompt aggregates, floors on them judged with their uncertainty,
held-out prompts the search never sees, a pick that fails them replaced, kernel distances, and
cliffs with the robust pick."""

import math
import statistics

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from mindiesd_tune.errors import UserError
from mindiesd_tune.metrics import kernel_distance
from mindiesd_tune.quality import aggregate, bound, judged_on, worst
from mindiesd_tune.tuner.objectives import Constraints, parse_floor
from mindiesd_tune.tuner.pick import HELDOUT, pick

COMPLETE = optuna.trial.TrialState.COMPLETE


def test_aggregates_from_known_per_prompt_values():
    scores = [{"psnr": v, "lpips": lp} for v, lp in ((30.0, 0.1), (32.0, 0.05), (28.0, 0.2), (34.0, 0.02))]
    m = aggregate(scores)
    assert m["psnr"] == 31.0 and m["psnr.min"] == 28.0 and m["psnr.max"] == 34.0
    assert m["lpips.max"] == 0.2 and worst(m, "psnr") == 28.0 and worst(m, "lpips") == 0.2
    # the one-sided 90% bound of the mean: mean - t(0.9, 3) * s / sqrt(4), t = 1.6377
    s = statistics.stdev([30.0, 32.0, 28.0, 34.0])
    assert m["psnr.bound"] == pytest.approx(31.0 - 1.6377 * s / 2, abs=1e-3)
    assert m["lpips.bound"] > m["lpips"]  # lower is better: the bound sits above the mean
    assert "psnr.p10" not in m  # percentiles need 8 prompts
    eight = aggregate([{"psnr": float(v)} for v in range(20, 28)])
    assert eight["psnr.p10"] == pytest.approx(20.7) and eight["psnr.p90"] == pytest.approx(26.3)
    # an identical prompt (infinite PSNR) says nothing of the others; all identical stays infinite
    assert aggregate([{"psnr": math.inf}, {"psnr": 30.0}, {"psnr": 32.0}])["psnr.min"] == 30.0
    assert math.isinf(aggregate([{"psnr": math.inf}, {"psnr": math.inf}])["psnr.bound"])
    assert bound([29.0]) == 29.0 and "one prompt" in judged_on("bound", 1) and "90%" in judged_on("bound", 4)


def test_a_floor_on_the_worst_prompt_rejects_a_trial_whose_mean_passes():
    m = aggregate([{"psnr": 35.0}, {"psnr": 36.0}, {"psnr": 34.0}, {"psnr": 25.0}])
    assert m["psnr"] > 30
    on_mean = Constraints((parse_floor("psnr>=30"),), judge="mean")
    on_worst = Constraints((parse_floor("psnr.min>=28"),), judge="mean")
    assert on_mean.meets(m, {}) and not on_worst.meets(m, {})
    assert on_worst.values(m, None, {})["psnr.min>=28"] == pytest.approx(3.0)


def test_a_mean_on_the_floor_with_a_wide_spread_fails_its_bound():
    m = aggregate([{"psnr": 33.0}, {"psnr": 27.6}, {"psnr": 31.0}, {"psnr": 29.6}])  # mean 30.3, one prompt 27.6
    floor = (parse_floor("psnr>=30"),)
    assert Constraints(floor, judge="mean").meets(m, {})
    assert not Constraints(floor, judge="bound").meets(m, {})
    tight = aggregate([{"psnr": 30.5}, {"psnr": 30.4}, {"psnr": 30.6}, {"psnr": 30.5}])
    assert Constraints(floor, judge="bound").meets(tight, {})


def test_relative_floors_scale_the_baselines_own_aggregate():
    base = aggregate([{"clip": 0.30}, {"clip": 0.20}])
    trial = aggregate([{"clip": 0.295}, {"clip": 0.19}])
    c = Constraints((parse_floor("clip.min>=0.98x"),), judge="mean")
    assert c.values(trial, None, base)["clip.min>=0.98x"] == pytest.approx(0.98 * 0.20 - 0.19)


@pytest.mark.parametrize("text, needle", [
    ("psnr.worst>=28", "unknown aggregate 'worst'"),
    ("kid_clip.min<=0.1", "takes no aggregate"),
    ("psnr.min>=abc", "METRIC[.AGGREGATE]>=VALUE"),
    ("fid.min>=3", "unknown metric 'fid'"),
])
def test_bad_floor_syntax_is_named(text, needle):
    with pytest.raises(UserError) as e:
        parse_floor(text)
    assert needle in str(e.value)


def test_every_new_floor_form_parses_and_prints_back():
    for text in ("psnr.min>=28", "lpips.max<=0.1", "clip>=0.98x", "psnr.p10>=27", "kid_clip<=0.01", "kvd_clip<=0.02"):
        assert str(parse_floor(text)) == text
    assert str(parse_floor("clip.mean>=0.98x")) == "clip>=0.98x"  # the bare name is the mean


# ------------------------------------------------------------------- kernel distance


def test_the_kernel_distance_of_a_set_with_itself_is_zero_and_its_estimate_is_unbiased():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 16))
    assert kernel_distance(x, x) == 0.0
    # two sets from one distribution: centred on 0 at N = 4 (a Frechet distance is biased upward)
    same = [kernel_distance(rng.normal(size=(4, 16)), rng.normal(size=(4, 16))) for _ in range(1500)]
    assert abs(np.mean(same)) < 3 * np.std(same) / math.sqrt(len(same))
    # shifted means: the mean of small-N estimates matches a large-N estimate
    truth = kernel_distance(rng.normal(size=(4000, 16)), rng.normal(0.5, 1.0, size=(4000, 16)))
    small = [kernel_distance(rng.normal(size=(4, 16)), rng.normal(0.5, 1.0, size=(4, 16))) for _ in range(3000)]
    assert truth > 0.1
    assert abs(np.mean(small) - truth) < 4 * np.std(small) / math.sqrt(len(small)) + 0.01 * truth


# ------------------------------------------------------------------- held-out prompts


@pytest.mark.slow
def test_held_out_prompts_are_never_shown_to_the_search():
    from mindiesd_tune.accel import AccelConfig, BlockCacheConfig
    from mindiesd_tune.tuner.worker import WorkerSpec, build_evaluator

    held = ["a blue square on a red background", "a green circle on a white background"]
    ev, info = build_evaluator(WorkerSpec(model="tiny-flux-random", prompts=["a red circle"], holdout=held, warmup=0,
                                          repeats=2, device="cpu"))
    assert info["holdout"]["prompts"] == held and held[0] not in info["workload"]["prompts"]
    calls = []
    generate = ev.generate
    ev.generate = lambda prompt, seed, overrides=None: calls.append(prompt) or generate(prompt, seed, overrides)
    config = AccelConfig(cache=BlockCacheConfig(block_start=1, step_interval=2))
    ev.screen(config)
    ev.evaluate(config)
    ev.evaluate(AccelConfig(), rounds=2)
    assert calls and not set(calls) & set(held)  # trials run the tuning prompts only
    calls.clear()
    result = ev.heldout(config)
    # the baseline on each held-out prompt once, then the point on each
    assert calls == held + held and result["prompts"] == held and len(result["per_prompt"]) == 2
    assert {"psnr", "psnr.min", "psnr.bound"} <= set(result["metrics"])
    calls.clear()
    ev.heldout(config)
    assert calls == held  # the held-out baseline is computed once


def test_the_prompt_split_keeps_held_out_prompts_apart():
    from mindiesd_tune.models.prompts import DEMO_IMAGE_PROMPTS, IMAGE_PROMPTS, split_prompts

    tuning, held = split_prompts(True, False, None, 2)
    assert tuning == list(DEMO_IMAGE_PROMPTS) and len(held) == 2 and not set(held) & set(tuning)
    # auto: the demo models' caption stream is unlimited and a check costs no timing, so 8
    tuning, held = split_prompts(True, False, None, "auto")
    assert tuning == list(DEMO_IMAGE_PROMPTS) and len(held) == len(set(held)) == 8 and not set(held) & set(tuning)
    tuning, held = split_prompts(False, False, None, "auto")
    assert len(held) == 2 and tuning + held == list(IMAGE_PROMPTS)
    tuning, held = split_prompts(False, False, None, 2)
    assert tuning + held == list(IMAGE_PROMPTS)
    assert split_prompts(True, False, ["x"], 0) == (["x"], [])
    with pytest.raises(UserError, match="is a tuning prompt too"):
        split_prompts(True, False, ["a", "b"], ["b"])
    with pytest.raises(UserError, match="too few"):
        split_prompts(False, False, None, 8)


def _speedy_study(speeds: dict[int, float]):
    """Completed feasible trials, trial n at speed-up ``speeds[n]`` (trial 0 the baseline)."""
    study = optuna.create_study(directions=["minimize", "maximize"])
    study.set_user_attr("floors", ["psnr>=30"])
    dist = {"cache.method": CategoricalDistribution(["none", "first_block"]),
            "cache.threshold": FloatDistribution(0.01, 1.0, log=True),
            "cache.warmup_steps": IntDistribution(0, 4)}
    for n, s in speeds.items():
        params = {"cache.method": "none"} if n == 0 else {"cache.method": "first_block", "cache.threshold": 0.01 * (n + 1),
                                                          "cache.warmup_steps": 2}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: dist[k] for k in params}, values=[1.0 / s, 35.0],
            user_attrs={"latency_s": 1.0 / s, "speedup": s, "speedup_low": 0.95 * s, "speedup_high": 1.05 * s,
                        "metrics": {"psnr": 35.0}},
            constraints={"psnr>=30": -5.0}))
    return study


def test_a_pick_that_fails_its_held_out_prompts_is_replaced_and_the_reason_says_so():
    study = _speedy_study({0: 1.0, 1: 2.0, 2: 3.0})
    first, _ = pick(study)
    assert first.number == 2
    study.set_user_attr(HELDOUT, {"2": {"meets": False, "prompts": 2, "metrics": {"psnr": 27.0}}})
    chosen, why = pick(study)
    assert chosen.number == 1 and "trial(s) 2 missed the floors on the held-out prompts" in why
    study.set_user_attr(HELDOUT, {"2": {"meets": False}, "1": {"meets": False}})
    chosen, why = pick(study)
    assert chosen.number == 0 and "baseline" in why


def test_check_heldout_falls_back_to_the_next_candidate_that_passes():
    from mindiesd_tune.tuner.confirm import check_heldout
    from mindiesd_tune.tuner.outcome import OK, TrialOutcome

    study = _speedy_study({0: 1.0, 1: 2.0, 2: 3.0})
    study.set_user_attr("holdout", {"prompts": ["p", "q"]})
    study.set_user_attr("baseline_metrics", {"psnr": math.inf})

    class Worker:
        asked: list = []

        def heldout(self, config):
            self.asked.append(config["cache"]["threshold"])
            psnr = 27.0 if config["cache"]["threshold"] == pytest.approx(0.03) else 33.0  # trial 2 fails
            return TrialOutcome(OK, result={"prompts": ["p", "q"], "per_prompt": [{"psnr": psnr}] * 2,
                                            "metrics": aggregate([{"psnr": psnr}, {"psnr": psnr + 0.1}])})

    lines = []
    results = check_heldout(study, Worker(), "fastest", log=lines.append)
    assert results["2"]["meets"] is False and results["1"]["meets"] is True
    assert pick(study)[0].number == 1
    assert any("misses the floors on 2 prompts the search never saw" in line for line in lines)
    assert any("trial 1 meets the floors" in line for line in lines)


def test_held_out_prompts_are_judged_on_the_floors_aggregate_not_the_tuning_bound():
    from mindiesd_tune.tuner.confirm import check_heldout
    from mindiesd_tune.tuner.outcome import OK, TrialOutcome

    study = _speedy_study({0: 1.0, 1: 2.0})
    study.set_user_attr("holdout", {"prompts": ["p", "q"]})
    study.set_user_attr("baseline_metrics", {"psnr": math.inf})
    study.set_user_attr("judge", "bound")
    per_prompt = [{"psnr": 33.6}, {"psnr": 31.8}]  # every prompt above 30; the bound over two is not
    assert aggregate(per_prompt)["psnr.bound"] < 30 < aggregate(per_prompt)["psnr.min"]

    class Worker:
        def heldout(self, config):
            return TrialOutcome(OK, result={"prompts": ["p", "q"], "per_prompt": per_prompt, "metrics": aggregate(per_prompt)})

    assert check_heldout(study, Worker(), "fastest", log=lambda line: None)["1"]["meets"] is True
    per_prompt[1] = {"psnr": 25.0}  # the mean (29.3) misses: set aside
    study.set_user_attr(HELDOUT, {})
    assert check_heldout(study, Worker(), "fastest", log=lambda line: None)["1"]["meets"] is False


# ------------------------------------------------------------------- cliffs and the robust pick


def test_cliffs_are_marked_and_the_robust_pick_keeps_a_margin():
    from mindiesd_tune.tuner.cliffs import cliffs_near, distance_to_cliff, is_robust

    study = optuna.create_study(directions=["minimize", "maximize"])
    study.set_user_attr("floors", ["psnr>=30"])
    dist = {"cache.method": CategoricalDistribution(["none", "first_block"]),
            "cache.threshold": FloatDistribution(0.01, 1.0, log=True),
            "cache.warmup_steps": IntDistribution(0, 4)}

    def add(threshold, speed, psnr):
        params = {"cache.method": "first_block", "cache.threshold": threshold, "cache.warmup_steps": 2}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=dist, values=[1.0 / speed, psnr],
            user_attrs={"latency_s": 1.0 / speed, "speedup": speed, "speedup_low": 0.95 * speed,
                        "speedup_high": 1.05 * speed, "metrics": {"psnr": psnr}},
            constraints={"psnr>=30": 30.0 - psnr}))
        return study.trials[-1]

    study.add_trial(optuna.trial.create_trial(
        params={"cache.method": "none"}, distributions={"cache.method": dist["cache.method"]}, values=[1.0, 100.0],
        user_attrs={"latency_s": 1.0, "speedup": 1.0, "speedup_low": 0.9, "speedup_high": 1.1, "metrics": {"psnr": math.inf}},
        constraints={"psnr>=30": -1.0}))
    safe = add(0.05, 1.5, 38.0)
    middle = add(0.08, 1.8, 37.0)
    edge = add(0.12, 2.0, 36.0)
    add(0.16, 2.4, 29.0)  # one notch bolder than the edge: 7 dB lower and under the floor
    found = cliffs_near(study, edge, "psnr")
    assert len(found) == 1 and found[0].safe_trial == edge.number and "floor is crossed" in found[0].why
    assert distance_to_cliff(study, edge, "psnr")["steps"] == 0
    assert distance_to_cliff(study, safe, "psnr")["steps"] == 2
    assert is_robust(study, edge) is False and is_robust(study, middle) is True
    assert pick(study, "fastest")[0].number == edge.number
    chosen, why = pick(study, "robust")
    assert chosen.number == middle.number and "bolder neighbours still meet the floors" in why


def _held_study(speeds: dict[int, float]):
    """``_speedy_study`` with two held-out prompts and two tuning prompts."""
    study = _speedy_study(speeds)
    study.set_user_attr("holdout", {"prompts": ["p", "q"]})
    study.set_user_attr("baseline_metrics", {"psnr": math.inf})
    study.set_user_attr("workload", {"prompts": ["a", "b"]})
    return study


def _fake_worker(missing: tuple, speedup: float = 2.8):
    """An evaluator class: held-out PSNR 27 dB (a miss) for the thresholds in ``missing``, 33 dB
    otherwise; every confirmation reads ``speedup``. It records what it checked and confirmed."""
    from mindiesd_tune.tuner.outcome import OK, TrialOutcome

    class Worker:
        checked: list = []
        confirmed: list = []

        def heldout(self, config):
            threshold = round(config["cache"]["threshold"], 2)
            self.checked.append(threshold)
            psnr = 27.0 if threshold in missing else 33.0
            return TrialOutcome(OK, result={"prompts": ["p", "q"], "per_prompt": [{"psnr": psnr}] * 2,
                                            "metrics": aggregate([{"psnr": psnr}, {"psnr": psnr + 0.1}])})

        def confirm(self, config, repeats, precision=None, max_s=None, prior_ratios=None):
            self.confirmed.append(round(config["cache"]["threshold"], 2))
            return TrialOutcome(OK, result={"baseline": {"median_s": 1.0, "samples": [1.0] * 4},
                                            "candidate": {"median_s": 1 / speedup, "samples": [1 / speedup] * 4},
                                            "speedup": speedup, "speedup_low": 0.97 * speedup,
                                            "speedup_high": 1.03 * speedup, "ratios": [speedup] * 4})

    return Worker


def test_candidates_that_miss_their_held_out_prompts_get_no_first_pass():
    from mindiesd_tune.tuner.confirm import confirm_front

    study = _held_study({0: 1.0, 1: 2.8, 2: 3.0})
    worker = _fake_worker(missing=(0.03,))  # trial 2 misses
    confirm_front(study, worker(), 4, log=lambda line: None, precision=None)
    assert worker.confirmed == [0.02]  # trial 2 was measured on held-out prompts only
    assert pick(study)[0].number == 1


def test_judge_auto_is_the_mean_where_held_out_prompts_check_the_pick_else_the_bound():
    from mindiesd_tune.tuner.options import TuneOptions, holdout_given, judge_for

    assert TuneOptions().judge == "auto" and TuneOptions().holdout == "auto"
    assert judge_for("auto", 8) == "mean" and judge_for("auto", 0) == "bound"
    assert judge_for("bound", 8) == "bound" and judge_for("mean", 0) == "mean"
    assert [holdout_given(h) for h in ("auto", 0, 3, ["p"], [])] == [2, 0, 3, 1, 0]
    with pytest.raises(UserError, match="--judge 'median': use auto, bound, mean"):
        TuneOptions(judge="median").validate()


def test_the_held_out_check_draws_further_until_a_candidate_holds():
    """Judged on the tuning mean, many points sit on the floor's edge: the check walks past
    draw after draw of them to the one that holds on the held-out prompts."""
    from mindiesd_tune.tuner.confirm import GATE_DRAWS, confirm_front

    study = _held_study({0: 1.0, **{n: 2.0 + 0.01 * n for n in range(1, 8)}})
    assert GATE_DRAWS >= 3  # 6 of 7 miss: two draws of 3, then trial 1
    worker = _fake_worker(missing=tuple(round(0.01 * (n + 1), 2) for n in range(2, 8)), speedup=2.0)  # only trial 1 holds
    confirm_front(study, worker(), 4, log=lambda line: None, precision=None)
    assert len(worker.checked) == 7 and worker.confirmed == [0.02]
    assert pick(study)[0].number == 1


def test_a_pick_the_held_out_check_moved_to_gets_its_first_pass(monkeypatch):
    """Every candidate drawn missed its held-out prompts; the pick then fell on a point no draw
    reached, which held there: it is confirmed with the time left, not left unconfirmed."""
    from mindiesd_tune.tuner import confirm as confirm_mod

    monkeypatch.setattr(confirm_mod, "GATE_DRAWS", 1)
    study = _held_study({0: 1.0, 1: 1.5, 2: 3.0})
    worker = _fake_worker(missing=(0.03,), speedup=1.5)  # trial 2 misses
    found = confirm_mod.confirm_front(study, worker(), 4, log=lambda line: None, precision=None)
    assert worker.confirmed == [0.02] and "1" in found
    assert pick(study)[0].number == 1


def test_a_candidate_set_aside_on_held_out_prompts_is_replaced_on_the_slate():
    """The fastest candidate misses its held-out prompts: the next point takes its place on the
    slate, so three points that held are confirmed, not the two left of the first draw."""
    from mindiesd_tune.tuner.confirm import CONFIRM_MAX, confirm_front

    study = _held_study({0: 1.0, 1: 2.7, 2: 2.75, 3: 2.8, 4: 2.9, 5: 3.0})
    worker = _fake_worker(missing=(0.06,))  # trial 5 misses
    confirm_front(study, worker(), 4, log=lambda line: None, precision=None)
    assert CONFIRM_MAX == 3 and worker.checked == [0.06, 0.05, 0.04, 0.03]
    assert worker.confirmed == [0.05, 0.04, 0.03]  # trials 4, 3 and 2; trial 1 was never drawn
