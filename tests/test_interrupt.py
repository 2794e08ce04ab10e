"""Ctrl-C sent as a real signal to a real `mindiesd-tune tune` process, with and without isolation.

The study runs tiny-flux-random through ``fakes:make_slow_tiny``: its second trial sleeps at every
denoising step (20 s in all) and leaves a marker file when it starts, so the signals land
mid-trial however fast the machine is.
"""

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from mindiesd_tune.tuner import load_run

TESTS = Path(__file__).parent
TrialState = optuna.trial.TrialState

# the real command line, with the slow evaluator factory that only the library API takes
SCRIPT = """
import functools, sys
import mindiesd_tune.tuner as tuner
tuner.run_study = functools.partial(tuner.run_study, worker_factory=sys.argv.pop(1))
import mindiesd_tune.cli as cli
cli.check_model_arg = lambda *a, **k: None  # the factory's model ("fake") is no model the CLI knows
from mindiesd_tune.cli import main
main(sys.argv[1:])
"""


def _start(tmp_path: Path, isolate: bool, model: str = "tiny-flux-random", factory: str = "fakes:make_slow_tiny"):
    out, marker = tmp_path / "run", tmp_path / "slow-trial-started"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "MINDIESD_TEST_SLOW_MARKER": str(marker),
           "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = [factory, "tune", model, "--budget", "10m", "--out", str(out), "--repeats", "1", "--warmup", "0",
            "--prompt", "a red circle",
            "--no-baseline-cache", "--isolate" if isolate else "--no-isolate"]
    stderr = open(tmp_path / "stderr.txt", "w")
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, *args], env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    stderr.close()
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in p.stdout], daemon=True).start()
    return p, out, marker, lines


def _wait_for_line(p, lines: queue.Queue, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if text in lines.get(timeout=0.2):
                return
        except queue.Empty:
            assert p.poll() is None, f"the study ended early (exit {p.returncode})"
    raise AssertionError(f"no {text!r} on stdout within {timeout}s")


def _interrupt_twice(tmp_path: Path, isolate: bool, **kw):
    """Start a study, Ctrl-C once the slow trial runs, again once the first is handled
    -> (the process, its run folder, seconds from the second Ctrl-C to its end)."""
    p, out, marker, lines = _start(tmp_path, isolate, **kw)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert p.poll() is None, (tmp_path / "stderr.txt").read_text()
            assert time.monotonic() < deadline, "the slow trial did not start"
            time.sleep(0.1)
        p.send_signal(signal.SIGINT)
        # Python runs one handler for signals that arrive together: wait for the first to be handled
        _wait_for_line(p, lines, "stopping after the current trial", 60)
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the process did not end after the second Ctrl-C")
        elapsed = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p, out, elapsed


@pytest.mark.parametrize("isolate", [True, False], ids=["isolated", "in-process"])
@pytest.mark.slow
def test_second_ctrl_c_aborts_the_running_trial(tmp_path, isolate):
    p, out, elapsed = _interrupt_twice(tmp_path, isolate)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert p.returncode == 130, stderr
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr
    # The issue asks for 5 s (about 3 s here with a load average of 9 on two cores); the bound
    # leaves room for a busier CI machine and still fails when the trial, which had 20 s of
    # sleeping steps left, runs on, or when the child is given its 10 s to stop.
    assert elapsed < 10, f"the process took {elapsed:.1f}s to end after the second Ctrl-C"
    for name in ("profile.yaml", "report.html", "trials.csv"):
        assert (out / name).is_file(), name
    study = load_run(out)
    assert not [t.number for t in study.trials if t.state == TrialState.RUNNING]
    aborted = study.trials[1]
    assert aborted.state == TrialState.FAIL and aborted.user_attrs.get("interrupted")
    assert aborted.user_attrs["fail_reason"].startswith("interrupted"), aborted.user_attrs["fail_reason"]
    # its point waits in the queue, so --resume evaluates it again
    queued = [t.system_attrs.get("fixed_params") for t in study.trials if t.state == TrialState.WAITING]
    assert aborted.params in queued


@pytest.mark.slow
def test_a_trial_that_does_not_stop_is_left_behind(tmp_path):
    # an evaluator call that ignores the abort (a denoising step that is slow to end): the study
    # stops waiting for it after ABORT_GRACE_S and still fails its trial and writes the outputs
    p, out, elapsed = _interrupt_twice(tmp_path, False, model="fake", factory="fakes:make_stubborn")
    stderr = (tmp_path / "stderr.txt").read_text()
    assert p.returncode == 130, stderr
    assert elapsed < 30, f"the process took {elapsed:.1f}s to end after the second Ctrl-C"  # the trial sleeps 60 s
    assert (out / "profile.yaml").is_file() and (out / "report.html").is_file() and (out / "trials.csv").is_file()
    study = load_run(out)
    assert not [t.number for t in study.trials if t.state == TrialState.RUNNING]
    assert study.trials[1].state == TrialState.FAIL and study.trials[1].user_attrs.get("interrupted")
