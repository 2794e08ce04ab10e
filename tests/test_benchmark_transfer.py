"""benchmarks/transfer.py: what counts as reaching the cold study's best speed-up."""

from types import SimpleNamespace

from benchmarks.transfer import reach


def _trial(number, config_id):
    return SimpleNamespace(number=number, user_attrs={"config_id": config_id})


def _speed(x):
    return SimpleNamespace(speedup=x)


def test_a_trial_reaches_the_target_by_its_speed_or_as_the_targets_own_point():
    trials = [_trial(1, "a"), _trial(2, "best"), _trial(3, "c")]
    speeds = {1: _speed(2.0), 2: _speed(2.73), 3: _speed(2.80)}
    # 2.73x is 5.2% under 2.88x: not within 5% by speed, so the first fast enough is trial 3
    assert reach(trials, speeds, 2.88, 0.05) == (4, 3, "speed")
    # but trial 2 is the cold study's best point itself, timed again: it is that point
    assert reach(trials, speeds, 2.88, 0.05, same="best") == (3, 2, "same point")
    # a trial that is not in the speeds (not at the floor, or set aside held out) reaches nothing
    assert reach(trials, {1: _speed(2.0)}, 2.88, 0.05, same="best") == (None, None, None)


def _study_with_an_unchecked_fast_trial():
    """Trial 0 the baseline; trial 1 (3.2x) never checked on held-out prompts; trial 2 (4.5x)
    checked and set aside there; trial 3 (3.25x) checked, met."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from mindiesd_tune.tuner.pick import HELDOUT

    study = optuna.create_study(directions=["minimize", "maximize"])
    dist = {"cache.method": CategoricalDistribution(["none", "first_block"]), "cache.threshold": FloatDistribution(0.01, 1.0)}
    study.add_trial(optuna.trial.create_trial(
        params={"cache.method": "none"}, distributions={"cache.method": dist["cache.method"]}, values=[1.0, 100.0],
        user_attrs={"latency_s": 1.0, "speedup": 1.0, "config_id": "base"}, constraints={"psnr>=30": -70.0}))
    for threshold, speed in ((0.1, 3.2), (0.3, 4.5), (0.05, 3.25)):
        study.add_trial(optuna.trial.create_trial(
            params={"cache.method": "first_block", "cache.threshold": threshold}, distributions=dist,
            values=[1.0 / speed, 35.0], user_attrs={"latency_s": 1.0 / speed, "speedup": speed, "config_id": str(threshold)},
            constraints={"psnr>=30": -5.0}))
    study.set_user_attr(HELDOUT, {"2": {"meets": False}, "3": {"meets": True}})
    study.set_user_attr("floors", ["psnr>=30"])
    study.set_user_attr("holdout", {"prompts": ["p1", "p2"], "seeds": [1000, 1001]})
    study.set_user_attr("baseline_metrics", {"psnr": float("inf")})
    return study


class _Heldout:
    def __init__(self, psnr):
        self.psnr, self.asked = psnr, []

    def heldout(self, config):
        self.asked.append(config.cache.threshold)
        return {"metrics": {"psnr": self.psnr}}


def test_a_trial_that_would_reach_the_target_unchecked_is_checked_by_the_benchmark():
    from benchmarks.transfer import check_reaching, study_figures

    study = _study_with_an_unchecked_fast_trial()
    # as the study left it, trial 1 (3.2x) cannot reach 3.3x: nothing says it holds held out
    assert study_figures(study, 3.3, 0.05)["trials_to_target"] == 4
    # checked here and met: it reaches; trial 2, set aside by the study, is not measured again
    ev = _Heldout(31.0)
    extra = check_reaching(study, 3.3, 0.05, None, ev)
    assert extra == {1: True} and ev.asked == [0.1]
    figures = study_figures(study, 3.3, 0.05, extra=extra)
    assert figures["trials_to_target"] == 2 and figures["checked_here"] == 1
    # checked here and missed: set aside like the study's own misses; the next reaching trial is the study's own
    ev = _Heldout(29.0)
    extra = check_reaching(study, 3.3, 0.05, None, ev)
    assert extra == {1: False} and ev.asked == [0.1]
    assert study_figures(study, 3.3, 0.05, extra=extra)["trials_to_target"] == 4
