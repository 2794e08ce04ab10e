"""tuner.rankgroup: a trial spanning 2 gloo ranks on the CPU; a rank killed or hung mid-trial fails that
trial only, the next one runs on a new group, and nothing is left behind."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from mindiesd_tune.accel.parallel import ParallelConfig
from mindiesd_tune.tuner.rankgroup import RankGroupWorker
from mindiesd_tune.tuner.worker import WorkerSpec


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone, only not reaped yet
        return f.read().split(")")[-1].split()[0] != "Z"


def _mesh(name: str) -> dict:
    return {"parallel": ParallelConfig.parse(name).to_dict()}


@pytest.fixture
def group():
    spec = WorkerSpec(model="demo-flux", device="cpu", repeats=2, warmup=0, prompts=["a red circle"],
                      generation={"num_inference_steps": 4}, threads=1)
    worker = RankGroupWorker(spec, 2, start_timeout=600, trial_timeout=600)
    yield worker
    worker.close()


@pytest.mark.slow
def test_a_rank_killed_mid_trial_fails_that_trial_only(group):
    info = group.start()
    assert info["space"]["world_size"] == 2 and "cfg2" in info["space"]["meshes"]
    assert info["rank_group"]["threads_alone"] == 2 and info["rank_group"]["threads_each"] == 1
    first = list(group.pids)
    assert len(first) == 3 and all(_alive(p) for p in first)  # the launcher and 2 ranks

    ok = group.evaluate(_mesh("cfg2"))
    assert ok.kind == "ok", ok.reason
    assert ok.result["metrics"]["psnr"] > 60  # exact up to rounding: the mesh matches the single device
    assert ok.result["baseline_latency"] is not None and ok.result["speedup"] > 0

    results = []
    # a re-measurement of 400 interleaved rounds takes tens of seconds on any machine, so the kill
    # lands inside it however fast the calls are (an ordinary trial can end within the second)
    trial = threading.Thread(target=lambda: results.append(group.confirm(_mesh("cfg2"), 400)))
    trial.start()
    time.sleep(1.0)
    os.kill(first[2], signal.SIGKILL)  # rank 1
    trial.join(300)
    assert not trial.is_alive()
    assert results[0].kind == "failed" and "rank 1 was killed by SIGKILL (last phase: " in results[0].reason, results[0]
    deadline = time.monotonic() + 60
    while any(_alive(p) for p in first) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in first if _alive(p)], "the failed group left processes behind"

    again = group.evaluate(_mesh("cfg2"))  # a new group
    assert again.kind == "ok", again.reason
    assert group.restarts == 1
    second = list(group.pids)
    assert set(second).isdisjoint(first)
    confirmed = group.confirm(_mesh("cfg2"), 2)
    assert confirmed.kind == "ok" and confirmed.result["speedup"] > 0, confirmed.reason
    # one setting against another (the pick against the best preset), each side's mesh mirrored
    versus = group.versus(_mesh("cfg2"), _mesh("cfg2"), 2)
    assert versus.kind == "ok" and len(versus.result["ratios"]) == 2, versus.reason  # 2 rounds, 1 prompt
    group.close()
    deadline = time.monotonic() + 60
    while any(_alive(p) for p in second) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in second if _alive(p)]


@pytest.mark.slow
def test_a_hung_rank_fails_the_trial_within_its_timeout_and_leaves_nothing_behind():
    spec = WorkerSpec(model="demo-flux", device="cpu", repeats=2, warmup=0, prompts=["a red circle"],
                      generation={"num_inference_steps": 4}, threads=1)
    group = RankGroupWorker(spec, 2, start_timeout=600, trial_timeout=20)
    try:
        group.start()
        first = list(group.pids)
        os.kill(first[2], signal.SIGSTOP)  # rank 1 stops answering: rank 0 waits in its first collective
        started = time.monotonic()
        hung = group.evaluate(_mesh("cfg2"))
        assert hung.kind == "failed" and "did not answer within 20s" in hung.reason, hung
        assert time.monotonic() - started < 120
        deadline = time.monotonic() + 60
        while any(_alive(p) for p in first) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not [p for p in first if _alive(p)], "the hung group left processes behind"
        group.trial_timeout = 600  # the next trial on a busy machine may take a while; it is not hung
        again = group.evaluate(_mesh("cfg2"))
        assert again.kind == "ok" and group.restarts == 1, again.reason
    finally:
        group.close()
