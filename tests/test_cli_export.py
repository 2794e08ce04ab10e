"""`mindiesd-tune export RUN --pick ...` through the command line, on a stored study's run folder."""

import shutil

import optuna
import pandas as pd
import pytest
import yaml

from conftest import cli
from mindiesd_tune.tuner import load_run, parse_budget, parse_floor, pick, run_study

FLOOR = "psnr>=30"


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """A finished study of the fake evaluator (no model): SQLite storage, run.json, outputs."""
    out = tmp_path_factory.mktemp("export") / "run"
    outcome = run_study("fake", parse_budget("14t"), out, floors=[parse_floor(FLOOR)], prune_margin=None, isolate=False,
                        worker_factory="fakes:make_fake", log=lambda s: None)
    return out, outcome


@pytest.fixture
def run_dir(study_run, tmp_path):
    """A fresh copy of the run folder per test, so one test's export does not feed the next."""
    src, _ = study_run
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


def _profile(run_dir):
    return yaml.safe_load((run_dir / "profile.yaml").read_text())


def _complete(run_dir):
    return {t.number: t for t in load_run(run_dir).trials if t.state == optuna.trial.TrialState.COMPLETE
            and "latency_s" in t.user_attrs}


def _assert_profile_is_trial(data, trial):
    """The profile holds the trial's own point and what that trial measured."""
    assert data["study"]["trial"] == trial.number
    for key, value in trial.params.items():
        *path, name = key.split(".")
        where = data["accel"]
        for part in path:  # quant.precision.denoiser is accel.quant.precision.denoiser
            where = where.get(part) or {}
        if value is None and name not in where:  # a precision left at the load dtype is not written
            continue
        got = where[name]
        if isinstance(got, list):  # layer lists are stored as "0,-1" in the study
            got = ",".join(map(str, got))
        assert got == (pytest.approx(value) if isinstance(value, float) else value), key
    assert data["measured"]["latency_s"] == pytest.approx(trial.user_attrs["latency_s"], rel=1e-3)
    assert data["measured"]["feasible"] == all(v <= 0 for v in trial.constraints.values())


def test_export_picks_an_infeasible_trial_when_asked_and_says_so(capsys, run_dir):
    done = _complete(run_dir)
    infeasible = [t for t in done.values() if any(v > 0 for v in t.constraints.values())]
    assert infeasible, "the fake study has points below the floor"
    target = infeasible[0]
    before = len(load_run(run_dir).trials)

    code, out, err = cli(capsys, "export", str(run_dir), "--pick", f"trial:{target.number}")
    assert code == 0, err
    assert f"profile: {run_dir / 'profile.yaml'}" in out
    assert f"trial {target.number} as asked (it does not meet {FLOOR})" in out
    data = _profile(run_dir)
    _assert_profile_is_trial(data, target)
    assert data["measured"]["feasible"] is False
    # nothing ran: the study holds the same trials, and the report and table follow the new pick
    assert len(load_run(run_dir).trials) == before
    assert f"Profile: trial {target.number}</b>" in (run_dir / "report.html").read_text()
    assert len(pd.read_csv(run_dir / "trials.csv")) == before


def test_export_knee_and_back_to_fastest(capsys, run_dir):
    original = (run_dir / "profile.yaml").read_text()
    done = _complete(run_dir)

    code, out, err = cli(capsys, "export", str(run_dir), "--pick", "knee")
    assert code == 0, err
    assert "knee of the latency/quality front" in out
    knee = done[_profile(run_dir)["study"]["trial"]]
    _assert_profile_is_trial(_profile(run_dir), knee)
    assert knee.number == pick(load_run(run_dir), "knee")[0].number
    table = pd.read_csv(run_dir / "trials.csv").set_index("trial")
    assert bool(table.loc[knee.number, "feasible"])
    # no feasible trial is both faster and of higher quality than the knee
    feasible = [t for t in done.values() if all(v <= 0 for v in t.constraints.values())]
    assert not any(t.user_attrs["latency_s"] < knee.user_attrs["latency_s"] and t.values[1] > knee.values[1]
                   for t in feasible)

    code, out, err = cli(capsys, "export", str(run_dir), "--pick", "fastest")
    assert code == 0, err
    assert f"fastest trial meeting {FLOOR}" in out
    fastest = min(feasible, key=lambda t: t.user_attrs["latency_s"])
    _assert_profile_is_trial(_profile(run_dir), fastest)
    assert (run_dir / "profile.yaml").read_text() == original  # the same profile `tune` froze


@pytest.mark.parametrize("pick_arg, needle", [("trial:999", "trial 999 did not complete"), ("best", "use fastest, knee, robust or trial:N")])
def test_export_bad_pick_is_one_line_exit_2_and_keeps_the_profile(capsys, run_dir, pick_arg, needle):
    original = (run_dir / "profile.yaml").read_text()
    code, out, err = cli(capsys, "export", str(run_dir), "--pick", pick_arg)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("mindiesd-tune: error:") and needle in lines[0]
    assert "Traceback" not in err + out
    assert (run_dir / "profile.yaml").read_text() == original


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_export_of_an_unknown_run_folder_is_one_line_exit_2(capsys, tmp_path, where):
    folder = tmp_path / where
    if where == "empty":
        folder.mkdir()
    code, out, err = cli(capsys, "export", str(folder))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("mindiesd-tune: error:") and str(folder) in lines[0] and "no study here" in lines[0]
    assert not (folder / "profile.yaml").exists()


def test_export_of_a_moved_run_folder_reads_its_own_study(capsys, tmp_path):
    """run.json records where the study was written; a run folder copied elsewhere, the
    original deleted (a run handed to a colleague), still exports from its own study.db."""
    first = tmp_path / "first" / "run"
    run_study("fake", parse_budget("4t"), first, floors=[parse_floor(FLOOR)], prune_margin=None, isolate=False,
              worker_factory="fakes:make_fake", log=lambda s: None)
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(first, moved)
    shutil.rmtree(tmp_path / "first")

    code, out, err = cli(capsys, "export", str(moved), "--pick", "trial:1")
    assert code == 0, err
    assert "Traceback" not in err and f"profile: {moved / 'profile.yaml'}" in out
    assert _profile(moved)["study"]["trial"] == 1
    assert not (tmp_path / "first").exists()  # nothing was written where the study used to be


def _other_trial(run_dir):
    """A complete trial that is not the one profile.yaml holds now."""
    current = _profile(run_dir)["study"]["trial"]
    return next(n for n in sorted(_complete(run_dir)) if n not in (0, current))


def test_export_keeps_the_profile_it_replaces(capsys, run_dir):
    original = (run_dir / "profile.yaml").read_text()
    other = _other_trial(run_dir)
    code, out, err = cli(capsys, "export", str(run_dir), "--pick", f"trial:{other}")
    assert code == 0, err
    assert f"kept the previous profile as {run_dir / 'profile.1.yaml'}" in out
    assert (run_dir / "profile.1.yaml").read_text() == original and _profile(run_dir)["study"]["trial"] == other
    second = (run_dir / "profile.yaml").read_text()
    code, out, err = cli(capsys, "export", str(run_dir), "--pick", "fastest")
    assert code == 0, err
    assert (run_dir / "profile.1.yaml").read_text() == original  # the next free number, nothing overwritten
    assert (run_dir / "profile.2.yaml").read_text() == second
    code, out, err = cli(capsys, "export", str(run_dir), "--pick", "fastest")  # the same profile again: nothing to keep
    assert code == 0 and "kept the previous profile" not in out and not (run_dir / "profile.3.yaml").exists()


def test_report_reuses_the_pick_floors_and_objective_of_the_study(capsys, run_dir):
    data = _profile(run_dir)  # as `tune` froze it
    assert data["study"]["pick"] == "fastest" and data["study"]["floors"] == [FLOOR] and data["study"]["objective"] == "psnr"
    other = _other_trial(run_dir)
    code, _, err = cli(capsys, "export", str(run_dir), "--pick", f"trial:{other}")
    assert code == 0, err
    code, out, err = cli(capsys, "report", str(run_dir))
    assert code == 0, err
    data = _profile(run_dir)
    assert data["study"]["trial"] == other and data["study"]["pick"] == f"trial:{other}"  # not back to fastest
    assert f"Profile: trial {other}</b>" in (run_dir / "report.html").read_text()
    assert "kept the previous profile" not in out  # the same profile: nothing to keep
    code, out, err = cli(capsys, "export", str(run_dir))  # no --pick: the study's own
    assert code == 0, err
    assert _profile(run_dir)["study"]["trial"] == other


@pytest.mark.parametrize("command", ["export", "report"])
def test_out_writes_elsewhere_and_leaves_the_run_folder_alone(capsys, run_dir, tmp_path, command):
    # the study database aside (it records the pick): the run folder's files are as they were
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and not p.name.startswith("study.db")}
    other = _other_trial(run_dir)
    args = ["--pick", f"trial:{other}"] if command == "export" else []
    code, out, err = cli(capsys, command, str(run_dir), *args, "--out", str(tmp_path / "elsewhere"))
    assert code == 0, err
    assert f"profile: {tmp_path / 'elsewhere' / 'profile.yaml'}" in out
    assert {p.name for p in (tmp_path / "elsewhere").iterdir()} >= {"profile.yaml", "report.html", "trials.csv"}
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and not p.name.startswith("study.db")} == before
    page = (tmp_path / "elsewhere" / "report.html").read_text()
    assert 'src="data:image/jpeg;base64,' in page  # the samples are read from the run folder
    code, out, err = cli(capsys, command, str(run_dir), "--out", str(tmp_path / "p.yaml"))
    assert code == 2 and err.count("\n") == 1 and "give a folder" in err
