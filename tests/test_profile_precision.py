"""Measured values in a profile keep their precision whether a call takes a millisecond or a second."""

import pytest

from mindiesd_tune import load_profile
from mindiesd_tune.tuner import parse_budget, parse_floor, run_study


@pytest.mark.parametrize("model", ["fake-fast", "fake"])  # about 1 ms and about 1 s per call
def test_measured_latency_and_speedup_keep_significant_digits(tmp_path, model):
    outcome = run_study(model, parse_budget("6t"), tmp_path, worker_factory="fakes:make_fake", isolate=False,
                        floors=[parse_floor("psnr>=40")], log=lambda s: None)
    measured = load_profile(tmp_path / "profile.yaml").measured
    chosen = outcome.study.trials[outcome.profile.study["trial"]]
    assert chosen.number != 0, "the fake space has faster points than the baseline"
    latency, baseline = chosen.user_attrs["latency_s"], outcome.study.trials[0].user_attrs["latency_s"]
    assert measured["latency_s"] == pytest.approx(latency, rel=1e-5)
    assert measured["baseline_s"] == pytest.approx(baseline, rel=1e-5)
    assert measured["speedup"] == pytest.approx(baseline / latency, rel=1e-5)
