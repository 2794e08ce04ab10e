"""Where a study lives and what counts against its budget: resuming into the run's own storage,
several worker threads on SQLite, and repeated points."""

import sqlite3
import threading
import time
from pathlib import Path

import optuna
import pytest

from mindiesd_tune.search_spaces import NEUTRAL_PARAMS
from mindiesd_tune.tuner import load_run, parse_budget, parse_floor, run_study

COMPLETE, FAIL, PRUNED = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED


def fake_study(out, budget, **kw):
    kw.setdefault("isolate", False)
    kw.setdefault("floors", [parse_floor("psnr>=40")])
    return run_study("fake", parse_budget(budget), out, worker_factory="fakes:make_fake", log=lambda s: None, **kw)


def counted(study):
    return [t for t in study.trials if not t.user_attrs.get("over_budget") and "repeat_of" not in t.user_attrs
            and t.state != optuna.trial.TrialState.WAITING]


def _hold_write_lock(db: Path, after_trials: int, seconds: float) -> threading.Thread:
    """Another writer (a second process, a slow disk) keeps the database locked for a while."""

    def hold():
        con = sqlite3.connect(db, timeout=60, isolation_level=None)
        while con.execute("select count(*) from trials").fetchone()[0] < after_trials:
            time.sleep(0.05)
        con.execute("begin immediate")
        time.sleep(seconds)
        con.execute("commit")
        con.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_resume_with_more_workers_completes_the_one_worker_sqlite_study(tmp_path):
    fake_study(tmp_path, "4t")
    assert (tmp_path / "study.db").is_file()
    # two worker threads now write to the one SQLite file the run was made with, and wait out
    # a writer that holds it for longer than SQLite's default 5 s
    holder = _hold_write_lock(tmp_path / "study.db", after_trials=7, seconds=6)
    fake_study(tmp_path, "14t", workers=2, resume=True)
    holder.join(timeout=30)
    assert not (tmp_path / "journal.log").exists()
    study = load_run(tmp_path)
    trials = counted(study)
    assert len(trials) == 14 and sorted(t.number for t in trials) == [t.number for t in trials]
    assert all(t.state in (COMPLETE, PRUNED) for t in trials), [(t.number, t.state, t.user_attrs) for t in trials]
    assert {t.user_attrs["worker"] for t in trials[4:]} == {"w0", "w1"}
    assert study.trials[0].params == NEUTRAL_PARAMS  # the same study, not a new one that starts over


class RepeatingSampler(optuna.samplers.RandomSampler):
    """Proposes the baseline point (every first choice: no cache, dense attention) on the trials
    ``repeat`` selects, random points on the others."""

    def __init__(self, repeat, seed=0):
        super().__init__(seed=seed)
        self.repeat = repeat

    def sample_independent(self, study, trial, param_name, param_distribution):
        if self.repeat(trial.number) and isinstance(param_distribution, optuna.distributions.CategoricalDistribution):
            return param_distribution.choices[0]
        return super().sample_independent(study, trial, param_name, param_distribution)


def with_sampler(monkeypatch, sampler):
    import mindiesd_tune.tuner.study as study_module

    monkeypatch.setattr(study_module, "make_sampler", lambda *a, **k: sampler)


@pytest.mark.slow
def test_repeated_points_are_answered_from_storage_and_do_not_count(monkeypatch, tmp_path):
    with_sampler(monkeypatch, RepeatingSampler(lambda n: n % 2 == 1))
    # random: no front refinement, so the trials after the presets are the sampler's own
    outcome = fake_study(tmp_path, "10t", sampler="random")
    trials = [t for t in outcome.study.trials if not t.user_attrs.get("over_budget")]
    repeats = [t for t in trials if "repeat_of" in t.user_attrs]
    assert len(repeats) >= 3  # odd trials after the presets propose the baseline again
    for t in repeats:
        assert t.params == NEUTRAL_PARAMS and t.values == outcome.study.trials[t.user_attrs["repeat_of"]].values
    assert len(counted(outcome.study)) == 10  # ten evaluated points, the repeats on top
    assert len(trials) == 10 + len(repeats)
    assert outcome.stop_reason == "trial budget spent"
    assert "stopped by" in outcome.report_path.read_text()


@pytest.mark.slow
def test_a_sampler_with_nothing_new_ends_the_study_as_exhausted(monkeypatch, tmp_path):
    with_sampler(monkeypatch, RepeatingSampler(lambda n: True))
    lines = []
    outcome = run_study("fake", parse_budget("50t"), tmp_path, worker_factory="fakes:make_fake", isolate=False,
                        progress=False, log=lines.append)
    study = outcome.study
    evaluated = counted(study)
    repeats = [t for t in study.trials if "repeat_of" in t.user_attrs]
    # the baseline and the presets (the enqueued points) are evaluated; every sampled point is the baseline again
    assert [t.number for t in evaluated] == list(range(len(evaluated)))
    assert all("fixed_params" in t.system_attrs for t in evaluated)
    assert len(repeats) == 20 and len(study.trials) == len(evaluated) + 20
    assert any(line.startswith("search space exhausted") for line in lines), lines
    assert outcome.stop_reason == study.user_attrs["stop_reason"] == "search space exhausted"
    for name in ("profile.yaml", "report.html", "trials.csv"):
        assert (tmp_path / name).is_file()
    assert "search space exhausted" in (tmp_path / "report.html").read_text()


@pytest.mark.slow
def test_a_study_resumed_on_another_number_of_ranks_per_trial_is_refused_in_one_line(tmp_path):
    from mindiesd_tune.errors import UserError

    fake_study(tmp_path, "2t")
    study = load_run(tmp_path)
    assert study.user_attrs["ranks_per_trial"] == 1
    study.set_user_attr("ranks_per_trial", 2)  # as a study made with --devices 2 records it
    before = len(study.trials)
    with pytest.raises(UserError, match=r"runs each trial on 2 rank\(s\), this command on 1: .*--devices"):
        fake_study(tmp_path, "4t", resume=True)
    assert len(load_run(tmp_path).trials) == before  # nothing ran


@pytest.mark.slow
def test_resume_continues_the_runs_own_study_under_another_model_path(tmp_path):
    fake_study(tmp_path, "3t")
    # the same model (same fingerprint) named by another path: still the run's study, not a new one
    run_study("fake2", parse_budget("5t"), tmp_path, worker_factory="fakes:make_fake", isolate=False,
              floors=[parse_floor("psnr>=40")], resume=True, log=lambda s: None)
    assert optuna.study.get_all_study_names(f"sqlite:///{tmp_path / 'study.db'}") == ["fake"]
    assert len(counted(load_run(tmp_path))) == 5


def test_the_study_storage_is_reachable_with_the_methods_the_driver_calls(tmp_path):
    """Optuna has no public accessor for a study's storage; storage_of is the one place that reads
    it. An Optuna release that moves it, or drops a storage method the driver calls, fails here."""
    from mindiesd_tune.tuner.storage import open_storage, storage_of, trial_id_of

    for url in (f"sqlite:///{tmp_path / 'a.db'}", f"journal:///{tmp_path / 'a.log'}"):
        study = optuna.create_study(storage=open_storage(url), study_name="s")
        storage = storage_of(study)
        assert isinstance(storage, optuna.storages.BaseStorage)
        trial = study.ask()
        storage.set_trial_user_attr(trial_id_of(trial), "interrupted", True)
        storage.set_trial_state_values(trial_id_of(trial), optuna.trial.TrialState.FAIL)
        frozen = storage.get_trial(trial_id_of(trial))
        assert frozen.state == optuna.trial.TrialState.FAIL and frozen.user_attrs == {"interrupted": True}
    assert callable(storage_of(optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'b.db'}"))).record_heartbeat)


def test_a_trial_is_reached_in_its_storage_by_its_id_not_its_number(tmp_path):
    """Optuna has no public trial id on Trial or FrozenTrial; trial_id_of is the one place that
    reads it. An Optuna release that renames it fails here, and every driver call with it."""
    from mindiesd_tune.tuner.storage import open_storage, storage_of, trial_id_of

    storage = open_storage(f"sqlite:///{tmp_path / 'a.db'}")
    optuna.create_study(storage=storage, study_name="first").ask()  # its trial 0 takes the first id
    study = optuna.create_study(storage=storage, study_name="second")
    asked = study.ask()
    frozen = study.get_trials(deepcopy=False)[0]
    assert trial_id_of(asked) == trial_id_of(frozen) != asked.number == 0
    assert storage_of(study).get_trial(trial_id_of(asked)).number == 0


def test_an_optuna_without_the_trial_id_is_named_in_the_error():
    from mindiesd_tune.tuner.storage import trial_id_of

    class Renamed:  # a Trial of an Optuna that keeps the id under another name
        trial_id = 3

    with pytest.raises(RuntimeError, match=rf"optuna {optuna.__version__}: Renamed has no _trial_id"):
        trial_id_of(Renamed())


def test_a_queued_point_claimed_after_a_sampled_one_does_not_take_the_last_slot_too():
    # two workers on two processes: a queued point (lower number, queued before) is claimed
    # after a point sampled meanwhile has checked the budget; by trial number each would see
    # the other outside its count and both would run, one past the budget
    from mindiesd_tune.tuner.search import _Shared
    from mindiesd_tune.tuner.storage import storage_of, trial_id_of

    study = optuna.create_study(directions=["minimize", "maximize"])
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, values=[1.0, 1.0]))  # trial 0
    study.enqueue_trial({"x": 1})  # trial 1, waiting
    shared = _Shared(study, "dit-image", "psnr", None, {}, 2, None, None, Path("."), lambda t: None)
    storage = storage_of(study)
    sampled = storage.create_new_trial(study._study_id)  # trial 2, running
    frozen = storage.get_trial
    assert frozen(sampled).number == 2
    assert shared.counted(before=frozen(sampled)) == 1  # only trial 0 started before it: it runs
    queued = trial_id_of(study.get_trials(states=(optuna.trial.TrialState.WAITING,))[0])
    time.sleep(0.01)
    assert storage.set_trial_state_values(queued, optuna.trial.TrialState.RUNNING)
    assert shared.counted(before=frozen(queued)) == 2  # trials 0 and 2: the last slot is taken
    assert shared.counted(before=frozen(sampled)) == 1  # and the sampled point's answer has not changed


def test_a_dead_trials_point_runs_before_promotions_and_the_other_queued_points():
    from mindiesd_tune.tuner.screen import PROMOTED_FROM
    from mindiesd_tune.tuner.search import _claim_first

    study = optuna.create_study(directions=["minimize", "maximize"])
    study.enqueue_trial({"x": 1})  # a preset or a refinement, queued first
    study.enqueue_trial({"x": 2}, user_attrs={PROMOTED_FROM: 0})
    study.enqueue_trial({"x": 3}, user_attrs={"requeued_from": 0})
    claimed = [_claim_first(study), _claim_first(study), _claim_first(study)]
    assert [t.number if t else None for t in claimed] == [2, 1, None]  # then ask() hands out the rest in order
    assert study.ask().number == 0
