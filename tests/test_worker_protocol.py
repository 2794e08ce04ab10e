"""Every worker kind serves the one worker protocol (``tuner.protocol.Worker``), with the same
parameters for each method, so the search, the confirmation and the held-out check can talk to
any of them alike."""

import inspect

import pytest

from mindiesd_tune.tuner.protocol import Worker
from mindiesd_tune.tuner.rankgroup import RankGroupWorker
from mindiesd_tune.tuner.worker import InProcessWorker, ProcessWorker

METHODS = ("start", "evaluate", "confirm", "versus", "heldout", "abort", "close")


@pytest.mark.parametrize("kind", [InProcessWorker, ProcessWorker, RankGroupWorker])
def test_every_worker_kind_serves_the_protocol(kind):
    assert isinstance(kind.screens, property)
    for name in METHODS:
        want = list(inspect.signature(getattr(Worker, name)).parameters)
        have = list(inspect.signature(getattr(kind, name)).parameters)
        assert have == want, f"{kind.__name__}.{name}{have} differs from the protocol's {want}"


def test_a_class_missing_a_method_is_not_a_worker():
    class Half:
        screens = False

        def start(self):
            return {}

    assert not isinstance(Half(), Worker)
