"""Two worker processes share one study (as two machines would) through PostgreSQL or a journal file.

The PostgreSQL server is started on loopback by the fixture (.ci/run installs Debian's package).
"""

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import optuna
import pytest

TESTS = Path(__file__).parent

WORKER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from mindiesd_tune.tuner import run_study, parse_budget
    run_study("fake", parse_budget("10t"), {out!r}, storage={url!r}, study_name="shared",
              worker_factory="fakes:make_fake", isolate=False, seed={seed}, log=lambda s: None)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory):
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not bins:
        pytest.skip("PostgreSQL server binaries not installed (.ci/run installs the postgresql package)")
    pytest.importorskip("psycopg")
    bindir = Path(bins[-1]).parent
    # not under pytest's tmp folder: the postgres user cannot traverse root's private folders
    root = Path(tempfile.mkdtemp(prefix="mindiesd-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run([*as_user, bindir / "initdb", "-D", data, "-A", "trust", "-U", "postgres"], check=True, capture_output=True)
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*as_user, bindir / "pg_ctl", "-D", data, "-o", opts, "-l", root / "log", "-w", "start"],
                   check=True, capture_output=True)
    try:
        subprocess.run([bindir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna"],
                       check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*as_user, bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["postgresql", "journal"])
def storage_url(request, tmp_path):
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        optuna.delete_study(study_name="shared", storage=url) if "shared" in optuna.study.get_all_study_names(url) else None
        return url
    return f"journal:///{tmp_path / 'shared.log'}"


@pytest.mark.slow
def test_two_processes_share_one_study_without_losing_or_repeating_trials(storage_url, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER.format(tests=str(TESTS), out=str(tmp_path / f"m{i}"), url=storage_url, seed=i)],
                         env=env, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    from mindiesd_tune.tuner.storage import open_storage

    study = optuna.load_study(study_name="shared", storage=open_storage(storage_url))
    trials = [t for t in study.trials if not t.user_attrs.get("over_budget")]
    # the global budget holds across both processes; each trial ran once and finished
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    evaluated = [t for t in trials if "repeat_of" not in t.user_attrs]
    assert len(evaluated) == 10  # a repeated point is answered from storage and costs no budget
    points = [tuple(sorted(t.params.items())) for t in evaluated]
    assert len(points) == len(set(points)), "a point was evaluated twice"
    # both run folders can rebuild the report from the shared study
    assert (tmp_path / "m0" / "profile.yaml").is_file() and (tmp_path / "m1" / "profile.yaml").is_file()



DOOMED = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from mindiesd_tune.tuner import run_study, parse_budget
    run_study("fake-hang", parse_budget("8t"), {out!r}, storage={url!r}, study_name="shared",
              worker_factory="fakes:make_fake", isolate=False, heartbeat_interval=1, grace_period=3, progress=False)
    """
)


def _wait_for(what, check, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_dead_machines_trial_is_failed_by_heartbeat_and_its_point_run_again(postgres_url, tmp_path):
    from mindiesd_tune.tuner import parse_budget, run_study

    RUNNING, COMPLETE, PRUNED, FAIL = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.COMPLETE,
                                       optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    storage = optuna.storages.RDBStorage(postgres_url)
    if "shared" in optuna.study.get_all_study_names(storage):
        optuna.delete_study(study_name="shared", storage=storage)

    def trials():
        if "shared" not in optuna.study.get_all_study_names(storage):
            return []
        return optuna.load_study(study_name="shared", storage=storage).trials

    # the doomed machine's evaluator never returns: it is killed in the middle of trial 0
    script = DOOMED.format(tests=str(TESTS), out=str(tmp_path / "doomed"), url=postgres_url)
    doomed = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines, failure = [], []

    def survive():
        try:
            run_study("fake", parse_budget("8t"), tmp_path / "survivor", storage=postgres_url, study_name="shared",
                      worker_factory="fakes:make_fake", isolate=False, heartbeat_interval=1, grace_period=3,
                      progress=False, log=lines.append)
        except BaseException as e:  # noqa: BLE001
            failure.append(e)

    survivor = threading.Thread(target=survive, daemon=True)
    try:
        baseline = _wait_for("trial 0 running", lambda: [t for t in trials() if t.state == RUNNING and t.params])[0]
        # the whole point as it was queued: a running trial's params fill in one by one as it
        # suggests them, so reading them now could catch half a point
        point = baseline.system_attrs["fixed_params"]
        # ask for that point again, so the other machine reaches it while the first still runs it
        optuna.load_study(study_name="shared", storage=storage).enqueue_trial(point)
        survivor.start()
        # the survivor first runs the presets queued ahead of that point: give a slow machine time
        _wait_for("the survivor waiting on the same point", lambda: [
            t for t in trials() if t.number > 0 and t.state == RUNNING and t.params == point], timeout=600.0)
        time.sleep(4)  # past the grace period: the live machine's heartbeats keep its trial running
        assert trials()[0].state == RUNNING
        doomed.kill()  # SIGKILL: no clean-up, the trial stays RUNNING in storage
        doomed.communicate()
        # without heartbeats the survivor would wait an hour for the dead machine's trial
        survivor.join(timeout=120)
        assert not survivor.is_alive(), "the survivor is still waiting"
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.communicate()
    assert not failure, failure
    assert any(line.startswith("trial 0 sent no heartbeat") for line in lines), lines
    study = trials()
    assert study[0].state == FAIL and not [t for t in study if t.state == RUNNING]
    requeued = [t for t in study if t.user_attrs.get("requeued_from") == 0]
    assert len(requeued) == 1 and requeued[0].params == point
    # the dead trial's point was evaluated again, once, by the survivor
    evaluated = [t for t in study if t.params == point and t.state == COMPLETE and "repeat_of" not in t.user_attrs]
    assert len(evaluated) == 1 and evaluated[0].number > 0
    # the budget is complete: neither the dead trial nor a repeat counts
    # (refinements queued after the last trial may still wait, for a resumed study to run)
    counted = [t for t in study if t.number != 0 and not t.user_attrs.get("over_budget") and "repeat_of" not in t.user_attrs
               and t.state != optuna.trial.TrialState.WAITING]
    assert len(counted) == 8 and all(t.state in (COMPLETE, PRUNED) for t in counted)
