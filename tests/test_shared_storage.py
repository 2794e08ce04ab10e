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
    assert len(trials) == 10
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    evaluated = [t for t in trials if "repeat_of" not in t.user_attrs]
    points = [tuple(sorted(t.params.items())) for t in evaluated]
    assert len(points) == len(set(points)), "a point was evaluated twice"
    # both run folders can rebuild the report from the shared study
    assert (tmp_path / "m0" / "profile.yaml").is_file() and (tmp_path / "m1" / "profile.yaml").is_file()
