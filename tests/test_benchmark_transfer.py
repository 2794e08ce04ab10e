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
