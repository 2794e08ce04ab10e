"""What a worker hands back: a TrialOutcome for every kind of evaluation, in this process or across the pipe."""

import pytest

from mindiesd_tune.accel import AccelConfig, FirstBlockCacheConfig
from mindiesd_tune.tuner import InProcessWorker, ProcessWorker, WorkerSpec, parse_floor
from mindiesd_tune.tuner.objectives import Constraints
from mindiesd_tune.tuner.outcome import TrialOutcome
from mindiesd_tune.tuner.worker import INTERRUPTED


def cached(threshold=0.2, warmup_steps=0) -> dict:
    return AccelConfig(cache=FirstBlockCacheConfig(threshold=threshold, warmup_steps=warmup_steps)).to_dict()


@pytest.mark.parametrize("worker_class", [InProcessWorker, ProcessWorker])
@pytest.mark.slow
def test_every_kind_of_evaluation_comes_back_as_a_trial_outcome(worker_class):
    # fake-faulty: warmup_steps 1 raises, 4 gives NaN (tests/fakes.py)
    worker = worker_class(WorkerSpec(model="fake-faulty", factory="fakes:make_fake"))
    worker.start()
    try:
        ok = worker.evaluate(cached())
        assert isinstance(ok, TrialOutcome) and ok.ok and ok.reason == ""
        assert ok.result["speedup"] > 1 and "latency" in ok.result and "sample" in ok.result

        raised = worker.evaluate(cached(warmup_steps=1))
        assert raised.kind == "failed" and raised.reason == "RuntimeError: boom" and raised.result == {}
        nan = worker.evaluate(cached(warmup_steps=4))
        assert nan.kind == "failed" and "NaN" in nan.reason

        floors = Constraints(floors=[parse_floor("psnr>=40")]).spec()
        pruned = worker.evaluate(cached(threshold=0.9), floors, 0.05)
        assert pruned.kind == "pruned" and "psnr>=40" in pruned.reason
        assert "metrics" in pruned.result and "latency" not in pruned.result  # nothing was timed

        confirmed = worker.confirm(cached(), 2)
        assert confirmed.ok and confirmed.result["speedup"] > 1 and len(confirmed.result["candidate"]["samples"]) == 4

        worker.abort()
        assert worker.evaluate(cached()) == TrialOutcome("interrupted", INTERRUPTED)
        assert worker.confirm(cached(), 2) == TrialOutcome("interrupted", INTERRUPTED)
    finally:
        worker.close()


def test_an_outcome_of_no_known_kind_is_refused():
    with pytest.raises(ValueError, match="'done'"):
        TrialOutcome("done")
