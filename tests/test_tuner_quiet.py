"""The tuner ignores expected warnings one thread at a time, so no filter outlives its block."""

import re
import threading
import time
import warnings
from pathlib import Path

import pytest

import mindiesd_tune.tuner
from mindiesd_tune.tuner import quiet
from mindiesd_tune.tuner.quiet import ignoring


def test_only_the_named_warning_is_ignored_and_only_inside_the_block():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ignoring(message="Heartbeat of storage"):
            warnings.warn("Heartbeat of storage is supposed to be used with Study.optimize.", stacklevel=1)
            warnings.warn("something else", stacklevel=1)
        with ignoring(DeprecationWarning):
            warnings.warn("old", DeprecationWarning, stacklevel=1)
            warnings.warn("new", UserWarning, stacklevel=1)
        warnings.warn("Heartbeat of storage again", stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else", "new", "Heartbeat of storage again"]


def test_a_second_thread_waits_while_one_is_inside():
    probe = []
    with ignoring(message="x"):
        t = threading.Thread(target=lambda: probe.append(quiet._LOCK.acquire(blocking=False)))
        t.start()
        t.join()
    assert probe == [False]
    with ignoring(message="x"):  # reentrant: a block may call code that ignores a warning of its own
        with ignoring(message="y"):
            pass


def test_threads_ignoring_at_once_leave_the_filters_as_they_were():
    before = list(warnings.filters)
    start = threading.Barrier(8)

    def churn(i):
        start.wait()
        for j in range(300):
            with ignoring(message=f"thread {i} round {j}"):
                time.sleep(0)  # let another thread run inside, as a storage call would

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert warnings.filters == before


@pytest.mark.parametrize("path", sorted(Path(mindiesd_tune.tuner.__file__).parent.glob("*.py")), ids=lambda p: p.name)
def test_the_tuner_ignores_warnings_only_through_the_helper(path):
    if path.name == "quiet.py":
        return
    text = path.read_text()
    assert not re.search(r"catch_warnings|filterwarnings|simplefilter", text), f"{path.name}: use tuner.quiet.ignoring"
