"""One definition of speed-up (issue 15): interleaved ratios with their interval, read alike by the
study's objective, the front, the pick, the console, the table, the report and the profile;
confirmation before the pick; the baseline when nothing beats it beyond noise."""

import re
import time

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from mindiesd_tune.metrics import LatencyStats, compare_interleaved, speed_interval
from mindiesd_tune.tuner import export, parse_budget, parse_floor, run_study
from mindiesd_tune.tuner.pick import NO_GAIN, confirmations, speed_of
from mindiesd_tune.tuner.study import RELATIVE_LATENCY

COMPLETE = optuna.trial.TrialState.COMPLETE


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def hodges_lehmann(ratios):
    """The median of all pairwise means of the log ratios (each with itself too), exponentiated."""
    logs = np.log(ratios)
    return float(np.exp(np.median([(a + b) / 2 for i, a in enumerate(logs) for b in logs[i:]])))


def test_speedup_is_the_central_paired_ratio_with_an_interval_and_cpu_time():
    clock, cpu = FakeClock(), FakeClock()
    costs = iter([4.0, 2.0, 2.1, 4.4, 3.8, 2.0, 2.0, 4.0, 4.2, 2.2])  # AB BA AB BA AB, load wobbling

    def side():
        dt = next(costs)
        clock.t += dt
        cpu.t += dt / 2  # the call waited half its time for the CPU
        return None

    cmp, *_ = compare_interleaved(side, side, warmup=0, repeats=5, clock=clock, cpu_clock=cpu)
    ratios = [4.0 / 2.0, 4.4 / 2.1, 3.8 / 2.0, 4.0 / 2.0, 4.2 / 2.2]
    assert cmp.speedup == pytest.approx(hodges_lehmann(ratios))
    assert cmp.speedup_low <= cmp.speedup <= cmp.speedup_high
    assert min(ratios) - 1e-9 <= cmp.speedup_low and cmp.speedup_high <= max(ratios) + 1e-9
    assert cmp.speedup_low < cmp.speedup_high  # the load wobbled: the interval is not a point
    assert cmp.baseline.cpu_s == pytest.approx(2.0) and cmp.candidate.cpu_s == pytest.approx(1.0)


def test_a_baseline_against_itself_reads_one_within_its_interval():
    rng = np.random.default_rng(1)
    ratios = list(1.0 + rng.normal(0, 0.05, size=9))
    med, low, high = speed_interval(ratios)
    assert low <= 1.0 <= high and low <= med <= high
    assert speed_interval(ratios) == (med, low, high)  # the same samples, the same interval


def test_one_round_hit_by_load_moves_the_speedup_no_more_than_it_moves_the_median():
    steady = [2.0, 2.05, 1.95, 2.02, 1.98, 2.01, 1.99, 2.03, 1.97]
    med, low, high = speed_interval(steady + [6.0])  # a burst slowed one baseline call threefold
    assert med == pytest.approx(hodges_lehmann(steady + [6.0]))
    assert abs(med - 2.0) <= abs(float(np.median(steady + [6.0])) - 2.0) + 0.01
    assert low < 2.0 < high and high / med > med / low  # the interval reaches further on the burst's side


def test_the_interval_narrows_with_more_rounds_and_covers_the_true_ratio():
    rng = np.random.default_rng(3)
    widths, covered = [], 0
    for n in (12, 48):
        for _ in range(40):
            ratios = list(2.0 * np.exp(rng.normal(0, 0.25, size=n)))  # a busy machine's spread of log ratios
            med, low, high = speed_interval(ratios)
            covered += low <= 2.0 <= high
            widths.append((n, np.log(high / low)))
    assert covered >= 0.9 * 80  # a 95% interval
    wide = np.mean([w for n, w in widths if n == 12])
    narrow = np.mean([w for n, w in widths if n == 48])
    assert narrow < wide * 0.7  # four times the rounds: about half the width


def fake(out, model="fake", budget="10t", **kw):
    kw.setdefault("floors", [parse_floor("psnr>=40")])
    kw.setdefault("log", lambda s: None)
    return run_study(model, parse_budget(budget), out, worker_factory="fakes:make_fake", isolate=False, **kw)


def test_objective_front_and_pick_follow_the_speedup_not_the_absolute_latency(tmp_path):
    # every trial runs on a busier machine than the last: absolute latency grows, speed-ups do not
    outcome = run_study("fake", parse_budget("8t"), tmp_path, worker_factory="fakes:make_drifting", isolate=False,
                        floors=[parse_floor("psnr>=40")], prune_margin=None, log=lambda s: None)
    study = outcome.study
    assert study.metric_names == [RELATIVE_LATENCY, "psnr"]
    done = [t for t in study.trials if t.state == COMPLETE]
    for t in done:
        assert t.values[0] == pytest.approx(1.0 / t.user_attrs["speedup"])
    for t in study.best_trials:  # Optuna's front, on the stored objective values
        assert not any(o.user_attrs["speedup"] > t.user_attrs["speedup"] and o.values[1] > t.values[1] for o in done)
    feasible = [t for t in done if all(v <= 0 for v in t.constraints.values())]
    fastest = max(feasible, key=lambda t: t.user_attrs["speedup"])
    assert fastest.user_attrs["latency_s"] > min(t.user_attrs["latency_s"] for t in feasible)  # the case at stake
    assert outcome.profile.study["trial"] == fastest.number


def test_nothing_beyond_noise_writes_the_baseline_with_the_no_gain_line(tmp_path):
    outcome = fake(tmp_path, model="fake-flat", budget="6t", prune_margin=None)
    assert outcome.profile.study["trial"] == 0
    assert NO_GAIN in outcome.reason
    assert NO_GAIN in (tmp_path / "report.html").read_text()
    # faster by 1% on every cache candidate (the fake times only the cache), but within the
    # interval: not a speed-up
    done = [t for t in outcome.study.trials if t.state == COMPLETE and t.number and t.params.get("cache.method") != "none"]
    assert done and all(speed_of(t).speedup > 1.0 and not speed_of(t).beyond_noise for t in done)


def test_confirmed_figures_become_the_profile_and_agree_to_the_digit(tmp_path):
    lines = []
    outcome = run_study("fake", parse_budget("10t"), tmp_path, worker_factory="fakes:make_fake", isolate=False,
                        floors=[parse_floor("psnr>=40")], progress=False, log=lines.append)
    study = outcome.study
    conf = confirmations(study)
    chosen = study.trials[outcome.profile.study["trial"]]
    assert str(chosen.number) in conf and "confirmed" in outcome.reason
    assert any(line.startswith(f"confirmed trial {chosen.number}:") for line in lines)
    measured = yaml.safe_load((tmp_path / "profile.yaml").read_text())["measured"]
    c = conf[str(chosen.number)]
    assert measured["confirmed"] is True
    assert measured["speedup"] == pytest.approx(c["speedup"], rel=1e-5)
    assert (measured["speedup_low"], measured["speedup_high"]) == pytest.approx((c["speedup_low"], c["speedup_high"]), rel=1e-5)
    # the baseline trial reads 1.00x within its interval
    base = speed_of(study.trials[0], conf)
    assert f"{base.speedup:.2f}" == "1.00" and base.low <= 1.0 <= base.high
    # report header, the table's row and the profile: the same digits
    html = (tmp_path / "report.html").read_text()
    head = re.search(r"<span class='big'>([\d.]+)x</span> \[([\d.]+)-([\d.]+)\] faster \(confirmed\) · ([\d.e-]+) s against ([\d.e-]+) s",
                     html)
    assert head, "the header shows the confirmed speed-up, its interval and both latencies"
    row = pd.read_csv(tmp_path / "trials.csv").set_index("trial").loc[chosen.number]
    for shown, value in zip(head.groups(), (row["speedup"], row["speedup_low"], row["speedup_high"])):
        assert shown == f"{value:.2f}"
    assert head.group(4) == f"{row['latency_s']:.4g}" == f"{measured['latency_s']:.4g}"
    assert head.group(5) == f"{row['baseline_s']:.4g}" == f"{measured['baseline_s']:.4g}"
    assert f"{measured['speedup']:.2f}" == head.group(1)
    # export without a worker re-picks from the stored confirmation
    again = export(tmp_path)
    assert again.profile.measured["confirmed"] is True and again.profile.study["trial"] == chosen.number


def test_an_unconfirmed_study_says_so(tmp_path):
    outcome = fake(tmp_path, budget="6t")
    study = outcome.study
    study.set_user_attr("confirmed", {})  # as a run stopped before its confirmation
    again = export(tmp_path)
    assert "unconfirmed" in again.reason and again.profile.measured["confirmed"] is False


@pytest.fixture(scope="module")
def tiny_evaluator():
    from mindiesd_tune.tuner.worker import WorkerSpec, build_evaluator

    ev, _ = build_evaluator(WorkerSpec(model="tiny-flux-random", prompts=("a red circle", "a blue square"), warmup=0,
                                       repeats=2, device="cpu"))
    return ev


def cached():
    from mindiesd_tune.accel import AccelConfig, BlockCacheConfig

    return AccelConfig(cache=BlockCacheConfig(block_start=1, step_interval=2))


@pytest.mark.slow
def test_a_busier_machine_is_timed_with_more_rounds_and_cpu_time_is_recorded(tiny_evaluator, monkeypatch):
    ev = tiny_evaluator
    quiet = ev.evaluate(cached())
    assert quiet.timing == {"repeats": 2, "busy": False} and quiet.latency.repeats == 2
    assert quiet.latency.cpu_s is not None and quiet.baseline_latency.cpu_s is not None  # on the CPU
    assert quiet.speedup_low <= quiet.speedup <= quiet.speedup_high
    monkeypatch.setattr(ev, "busy", lambda: True)
    busy = ev.evaluate(cached())
    assert busy.timing == {"repeats": 4, "busy": True} and busy.latency.repeats == 4
    monkeypatch.setattr(ev, "busy", lambda: False)
    from mindiesd_tune.accel import AccelConfig
    from mindiesd_tune.tuner.evaluator import NEUTRAL_MIN_ROUNDS

    # the baseline against itself: enough rounds for a 95% interval, not the range of four
    base = ev.evaluate(AccelConfig())
    assert NEUTRAL_MIN_ROUNDS >= 6 and base.timing["repeats"] == NEUTRAL_MIN_ROUNDS == base.latency.repeats


def test_busy_means_the_baseline_drifted_in_spread_or_level():
    from mindiesd_tune.tuner.evaluator import Evaluator

    def stats(median, iqr):
        return LatencyStats(median, iqr, median, [median])

    ev = Evaluator.__new__(Evaluator)  # busy() reads only the baseline's timing history
    ev._baseline_timings = [stats(1.0, 0.02), stats(1.01, 0.02), stats(0.99, 0.03)]
    assert not ev.busy()
    ev._baseline_timings.append(stats(1.0, 0.2))  # same level, ten times the spread
    assert ev.busy()
    ev._baseline_timings[-1] = stats(1.3, 0.02)  # same spread, 30% slower
    assert ev.busy()


def test_confirmation_pools_every_prompt(tiny_evaluator):
    cmp = tiny_evaluator.confirm(cached(), 2)
    assert len(cmp.ratios) == 4 and cmp.candidate.repeats == 4 and cmp.baseline.repeats == 4  # 2 rounds x 2 prompts
    assert cmp.speedup_low <= cmp.speedup <= cmp.speedup_high


def _scripted_compare(spreads):
    """A stand-in for ``Evaluator._compare`` whose n-th batch of 4 rounds has ratios
    2 +- spreads[n] (the last spread repeats), so the pooled interval narrows as scripted."""
    from mindiesd_tune.metrics import Comparison

    calls = []

    def compare(config, prompt, seed, repeats, warmup=None, reference=None):
        w = spreads[min(len(calls), len(spreads) - 1)]
        calls.append(prompt if reference is None else (prompt, reference))
        ratios = [2 - w, 2 + w, 2 - w / 2, 2 + w / 2]
        stats = LatencyStats(1.0, 0.0, 1.0, [1.0] * 4)
        return Comparison.of(stats, stats, ratios), None, {}

    return compare, calls


def test_confirmation_goes_on_until_its_interval_is_narrow_enough(tiny_evaluator, monkeypatch):
    from mindiesd_tune.tuner.evaluator import CONFIRM_MAX_FACTOR

    prompts = tiny_evaluator.workload.prompts
    compare, calls = _scripted_compare([1.5, 1.5, 0.02])  # a noisy first pass, then quiet rounds
    monkeypatch.setattr(tiny_evaluator, "_compare", compare)
    plain = tiny_evaluator.confirm(cached(), 4)
    assert len(calls) == len(prompts) and plain.relative_spread > 0.1  # no precision asked: one pass
    calls.clear()
    cmp = tiny_evaluator.confirm(cached(), 4, precision=0.1)
    assert cmp.relative_spread <= 0.1 and len(cmp.ratios) == 4 * len(calls)
    assert len(prompts) < len(calls) < CONFIRM_MAX_FACTOR * len(prompts)
    assert calls[len(prompts):] == (prompts * 8)[:len(calls) - len(prompts)]  # the prompts take turns

    compare, calls = _scripted_compare([1.5])  # never narrows: the round cap ends it
    monkeypatch.setattr(tiny_evaluator, "_compare", compare)
    assert tiny_evaluator.confirm(cached(), 4, precision=0.1).relative_spread > 0.1
    assert len(calls) == CONFIRM_MAX_FACTOR * len(prompts)
    calls.clear()
    # the time given is a cap on the first pass too: with none, one prompt, the least a measurement is
    tiny_evaluator.confirm(cached(), 4, precision=0.1, max_s=0.0)
    assert len(calls) == 1 < len(prompts)
    calls.clear()
    # a top-up: rounds measured before count towards the precision; the result holds only the new ones
    topped = tiny_evaluator.confirm(cached(), 4, precision=0.1, prior_ratios=[2.0] * 200)
    assert len(calls) == len(prompts) and len(topped.ratios) == 4 * len(prompts)


def test_one_setting_timed_against_another_until_the_faster_one_is_known(tiny_evaluator, monkeypatch):
    from mindiesd_tune.accel import AccelConfig

    prompts = tiny_evaluator.workload.prompts
    reference = AccelConfig()
    compare, calls = _scripted_compare([1.5, 1.5, 1.5, 0.3])  # ratios about 2: wide, then narrower
    monkeypatch.setattr(tiny_evaluator, "_compare", compare)
    cmp = tiny_evaluator.versus(reference, cached(), 4, precision=0.01)
    assert all(c[1] is reference for c in calls)  # the reference, not the baseline, on the other side
    assert cmp.speedup_low > 1.0 and len(calls) > len(prompts)  # it stopped once 1.0 left the interval,
    assert cmp.relative_spread > 0.01  # long before the precision


@pytest.mark.slow
def test_a_setting_timed_against_another_on_the_tiny_pipeline_leaves_it_as_it_was(tiny_evaluator):
    from mindiesd_tune.accel import AccelConfig

    before = tiny_evaluator.generate(tiny_evaluator.workload.prompts[0], tiny_evaluator.workload.seeds[0])
    cmp = tiny_evaluator.versus(AccelConfig(), cached(), 2)
    assert len(cmp.ratios) == 2 * len(tiny_evaluator.workload.prompts) and cmp.speedup_low <= cmp.speedup <= cmp.speedup_high
    after = tiny_evaluator.generate(tiny_evaluator.workload.prompts[0], tiny_evaluator.workload.seeds[0])
    np.testing.assert_array_equal(np.asarray(before), np.asarray(after))


def test_the_baseline_against_itself_on_a_machine_getting_busier_reads_one_with_balanced_rounds():
    from mindiesd_tune.tuner.evaluator import balanced

    clock, n = FakeClock(), [0]

    def same():  # one setting on both sides; every call 10% slower than the one before
        n[0] += 1
        clock.t += 1.1 ** n[0]

    cmp, *_ = compare_interleaved(same, same, warmup=1, repeats=balanced(3), clock=clock)
    assert balanced(3) == 4 and balanced(2) == 2
    assert cmp.speedup_low <= 1.0 <= cmp.speedup_high and cmp.speedup == pytest.approx(1.0, abs=0.01)


def test_confirmation_stops_starting_points_once_its_time_is_spent(tmp_path, monkeypatch):
    from mindiesd_tune.tuner import confirm as study_module
    from mindiesd_tune.tuner.outcome import TrialOutcome

    monkeypatch.setattr(study_module, "CONFIRM_MARGIN", 1.0)  # every faster point is a candidate
    outcome = fake(tmp_path, budget="10t", prune_margin=None)
    study = outcome.study
    study.set_user_attr("confirmed", {})  # as before the confirmation

    class SlowWorker:
        calls, asked = [], []

        def confirm(self, config, repeats, precision=None, max_s=None):
            self.calls.append(config)
            self.asked.append((precision, max_s))
            return TrialOutcome("ok", result={
                "baseline": {"median_s": 1.0, "iqr_s": 0.0, "samples": [1.0] * repeats},
                "candidate": {"median_s": 0.5, "iqr_s": 0.0, "samples": [0.5] * repeats},
                "speedup": 2.0, "speedup_low": 1.9, "speedup_high": 2.1})

    notes = []
    assert len(study_module.confirmation_candidates(study)) > 1
    # the cap is the budget's: with no time left nothing starts, not even the best point
    found = study_module.confirm_front(study, SlowWorker(), 6, log=notes.append, time_limit_s=0.0)
    assert SlowWorker.calls == [] and found == {}
    assert any("stay unconfirmed" in n for n in notes)
    # with time left the first pass is given the time that is left as its cap
    study_module.confirm_front(study, SlowWorker(), 6, log=notes.append, time_limit_s=50.0)
    assert SlowWorker.calls and all(0 < max_s <= 50.0 for _, max_s in SlowWorker.asked)
    assert any(n.startswith("confirmation: ") and "interleaved rounds" in n for n in notes)


def test_no_top_up_starts_when_one_prompt_of_it_would_not_fit(tmp_path, monkeypatch):
    """A measurement always finishes the prompt it started, so the pick's top-up starts only while
    one prompt of it (at its first pass's pace) fits the time left: not a moment before the end."""
    from mindiesd_tune.tuner import confirm as study_module
    from mindiesd_tune.tuner.outcome import TrialOutcome

    monkeypatch.setattr(study_module, "CONFIRM_MARGIN", 0.0)  # the best point alone is a candidate
    study = fake(tmp_path, budget="10t", prune_margin=None).study

    class OnePromptWorker:
        calls: list = []

        def confirm(self, config, repeats, precision=None, max_s=None, prior_ratios=None):
            self.calls.append(precision)
            time.sleep(0.3)  # one prompt's rounds, then its cap stops it
            return TrialOutcome("ok", result={
                "baseline": {"median_s": 1.0, "iqr_s": 0.0, "samples": [1.0] * 2},
                "candidate": {"median_s": 0.5, "iqr_s": 0.0, "samples": [0.5, 0.6]},
                "speedup": 2.0, "speedup_low": 1.2, "speedup_high": 2.9, "ratios": [2.0, 1.7]})

        def versus(self, reference, config, repeats, precision=None, max_s=None):
            return self.confirm(config, repeats)

    for limit, top_up in ((0.45, False), (30.0, True)):
        study.set_user_attr("confirmed", {})
        OnePromptWorker.calls = []
        study_module.confirm_front(study, OnePromptWorker(), 6, log=lambda line: None, time_limit_s=limit,
                                   precision=0.1, round_s=0.01)
        assert OnePromptWorker.calls[0] is None  # the first pass
        assert (0.1 in OnePromptWorker.calls) is top_up


@pytest.mark.slow
def test_the_pick_is_topped_up_to_the_precision_then_timed_against_the_best_preset(tmp_path):
    """Every candidate gets one pass; the point the pick falls on gets the rounds that narrow its
    interval, pooled with its first ones; then it is timed head to head against the best preset."""
    import json

    from mindiesd_tune.tuner import confirm as study_module
    from mindiesd_tune.tuner.outcome import TrialOutcome
    from mindiesd_tune.tuner.pick import VERSUS_PRESET, against_best_preset, best_preset, pick

    study = fake(tmp_path, budget="12t", progress=False).study
    study.set_user_attr("confirmed", {})
    study.set_user_attr(VERSUS_PRESET, None)
    first_seen = {json.dumps(study_module._config_of(t), sort_keys=True): t.user_attrs["speedup"] for t in study.trials
                  if "speedup" in t.user_attrs}

    def payload(speedup, ratios):
        n = len(ratios)
        return {"baseline": {"median_s": 1.0, "samples": [1.0] * n}, "candidate": {"median_s": 1 / speedup, "samples": [1 / speedup] * n},
                "speedup": speedup, "speedup_low": None, "speedup_high": None, "ratios": ratios}

    class Worker:
        confirms, versus_calls = [], []

        def confirm(self, config, repeats, precision=None, max_s=None, prior_ratios=None):
            s = first_seen[json.dumps(config, sort_keys=True)]
            self.confirms.append((config, precision, max_s, prior_ratios))
            # a busy first pass (±30%), a quiet top-up
            ratios = [s * f for f in (0.7, 1.3, 1.0, 0.85, 1.15, 1.0)] if prior_ratios is None else [s] * 60
            return TrialOutcome("ok", result=payload(s, ratios))

        def versus(self, reference, config, repeats, precision=None, max_s=None):
            self.versus_calls.append((reference, config, precision, max_s))
            return TrialOutcome("ok", result=payload(1.3, [1.25, 1.35, 1.3, 1.28, 1.32, 1.3]))

    w = Worker()
    found = study_module.confirm_front(study, w, 6, time_limit_s=100.0)
    todo_first = [c for c in w.confirms if c[3] is None]
    assert len(todo_first) >= 2 and all(c[1] is None for c in todo_first)  # first passes: no precision asked
    topups = [c for c in w.confirms if c[3] is not None]
    chosen, _ = pick(study)
    assert len(topups) == 1 and topups[0][0] == study_module._config_of(chosen)
    assert topups[0][1] == study_module.CONFIRM_PRECISION and 0.0 < topups[0][2] <= 100.0
    entry = found[str(chosen.number)]
    assert entry["rounds"] == 66 and len(entry["ratios"]) == 66  # pooled with the first pass
    assert entry["speedup"] == pytest.approx(speed_interval(entry["ratios"])[0])
    mine = speed_of(chosen, found)
    assert max(mine.high / mine.speedup - 1, 1 - mine.low / mine.speedup) <= study_module.CONFIRM_PRECISION
    preset = best_preset(study, found)
    assert w.versus_calls == [(study_module._config_of(preset), study_module._config_of(chosen),
                               study_module.CONFIRM_PRECISION, w.versus_calls[0][3])]
    vs = study.user_attrs[VERSUS_PRESET]
    assert vs["pick"] == chosen.number and vs["preset"] == preset.number and vs["rounds"] == 6
    line = against_best_preset(study, chosen)
    assert f"runs {vs['speedup']:.2f}x [{vs['speedup_low']:.2f}-{vs['speedup_high']:.2f}] as fast" in line
    assert "faster beyond timing noise" in line


def test_the_best_preset_alone_is_confirmed_beside_the_pick_and_set_against_it(tmp_path):
    from mindiesd_tune.tuner.pick import VERSUS_PRESET, against_best_preset, best_preset, is_preset

    lines = []
    outcome = fake(tmp_path, budget="12t", progress=False, log=lines.append)
    study = outcome.study
    conf = confirmations(study)
    preset = best_preset(study, conf)
    chosen = study.trials[outcome.profile.study["trial"]]
    assert preset is not None and is_preset(preset) and not is_preset(chosen)  # refinement went past the presets
    confirmed_order = [int(line.split()[2].rstrip(":")) for line in lines if line.startswith("confirmed trial")]
    assert confirmed_order[:2] == [chosen.number, preset.number]  # second: the time left may not reach the third
    mine, theirs = speed_of(chosen, conf), speed_of(preset, conf)
    assert mine.confirmed and theirs.confirmed and mine.low > theirs.high
    line = next(line for line in lines if line.startswith("preset:"))
    # the fake's head-to-head ratio is the ratio of the two latencies
    assert f"trial {preset.number} at {theirs.text()}" in line and "faster beyond timing noise" in line
    assert f"timed head to head, the pick runs {mine.speedup / theirs.speedup:.2f}x [" in line
    assert outcome.against_preset in (tmp_path / "report.html").read_text()
    # without the head-to-head timing, the two confirmed intervals are set side by side
    study.set_user_attr(VERSUS_PRESET, None)
    line = against_best_preset(study, chosen)
    assert f"the pick reads {mine.speedup / theirs.speedup:.2f}x of it, faster beyond both intervals" in line


def test_confirmation_leaves_out_a_point_whose_interval_does_not_reach_the_best_speedup():
    from mindiesd_tune.tuner import confirm as study_module

    study = optuna.create_study(directions=["minimize", "maximize"])
    dists = {"cache.method": optuna.distributions.CategoricalDistribution(["none", "schedule", "first_block", "block_cache"])}

    def add(method, speedup, low, high):
        study.add_trial(optuna.trial.create_trial(
            params={"cache.method": method}, distributions=dists, values=[1 / speedup, 40.0], constraints={"psnr": -1.0},
            user_attrs={"latency_s": 1 / speedup, "speedup": speedup, "speedup_low": low, "speedup_high": high,
                        "baseline_latency": {"median_s": 1.0}, "config_id": method}))

    add("none", 1.0, 0.9, 1.1)
    add("schedule", 2.52, 1.88, 3.32)  # the best first look, wide on a busy machine
    add("first_block", 1.44, 1.18, 2.36)  # overlaps the best one's interval, never reaches its speed-up
    add("block_cache", 2.0, 1.6, 2.6)  # may be as fast as the best
    assert [t.params["cache.method"] for t in study_module.confirmation_candidates(study)] == ["schedule", "block_cache"]
