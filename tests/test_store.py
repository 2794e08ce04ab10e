"""The profile store: publish, list and look up on SQLite and PostgreSQL; concurrent publishers;
exact over near matches; one-line errors; recheck after a (faked) library upgrade.

The PostgreSQL server is test_shared_storage's fixture (skipped without the server binaries).
Nothing here depends on the machine's speed: the rechecks judged are the ones whose verdict does
not (a floor no output can meet, a method made to skip nothing).
"""

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import yaml
from test_shared_storage import postgres_url  # noqa: F401  (the module-scoped server fixture)

from conftest import cli
from mindiesd_tune import AccelConfig, apply_profile
from mindiesd_tune.accel.methods.block_cache import BlockCacheConfig
from mindiesd_tune.errors import UserError
from mindiesd_tune.kernels import hardware_info
from mindiesd_tune.profile import Profile, model_fingerprint, pipeline_dtype
from mindiesd_tune.store import ProfileStore, ProfileWorkloadWarning, StaleProfileError, StoreError
from mindiesd_tune.store import db as store_db
from mindiesd_tune.store.facts import installed_versions

ROOT = Path(__file__).resolve().parent.parent


def _profile(loaded, steps=None, speedup=1.5, floors=("psnr>=10",), accel=None, **model) -> Profile:
    gen = {k: v for k, v in loaded.generation.items() if k != "max_sequence_length"}
    if steps is not None:
        gen["num_inference_steps"] = steps
    return Profile(
        model={"name": loaded.name, "family": loaded.family, "pipeline": type(loaded.pipe).__name__,
               "fingerprint": model_fingerprint(loaded.pipe), "dtype": pipeline_dtype(loaded.pipe), **model},
        generation=gen,
        accel=accel or AccelConfig(cache=BlockCacheConfig(step_interval=2)),
        measured={"speedup": speedup, "speedup_low": speedup - 0.1, "speedup_high": speedup + 0.1, "psnr": 30.0},
        hardware=hardware_info(loaded.pipe.device),
        study={"prompts": ["a red circle on a blue background"], "seeds": [0], "floors": list(floors)},
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'profiles.db'}"
        yield url
        store_db.dispose(url)
        return
    url = request.getfixturevalue("postgres_url")
    yield url
    engine = store_db.engine_for(url)
    store_db.metadata.drop_all(engine)  # the server lives for the module: each test starts empty
    store_db.dispose(url)


def test_publish_list_show_retire(store_url, tiny_flux, capsys):
    st = ProfileStore(store_url)
    pid, new = st.publish(_profile(tiny_flux))
    assert new and st.publish(_profile(tiny_flux)) == (pid, False)  # the same profile is one row
    pid2, _ = st.publish(_profile(tiny_flux, steps=20, speedup=1.8))
    rows = st.list(model="tiny-flux-random")
    assert [r.id for r in rows] == [pid, pid2]
    row = rows[1].row
    assert row["fingerprint"] == model_fingerprint(tiny_flux.pipe) and row["family"] == tiny_flux.family
    assert row["num_inference_steps"] == 20 and row["device"] == "cpu" and row["cpu_model"]
    assert {k: row[k] for k in ("torch", "diffusers")} == {k: installed_versions()[k] for k in ("torch", "diffusers")}
    assert rows[1].profile().measured["speedup"] == 1.8 and row["status"] == "active"

    code, out, err = cli(capsys, "profiles", "--store", store_url, "--model", "tiny-flux-random")
    assert code == 0 and len(out.splitlines()) == 3 and "1.80x [1.70-1.90]" in out
    code, out, err = cli(capsys, "profiles", "show", str(pid2), "--store", store_url)
    assert code == 0 and "steps 20" in out and yaml.safe_load(out)["measured"]["speedup"] == 1.8
    code, out, err = cli(capsys, "profiles", "retire", str(pid2), "--store", store_url)
    assert code == 0 and f"retired: profile {pid2}" in out
    assert st.get(pid2).status == "retired" and [r.id for r in st.candidates(family=tiny_flux.family)] == [pid]
    code, out, err = cli(capsys, "profiles", "show", "999", "--store", store_url)
    assert code == 2 and err.count("\n") == 1 and "no profile 999 in the store" in err and "Traceback" not in err


def test_lookup_prefers_the_exact_match_and_warns_on_a_near_one(store_url, tiny_flux):
    st = ProfileStore(store_url)
    near, _ = st.publish(_profile(tiny_flux, steps=20, speedup=2.0))
    exact, _ = st.publish(_profile(tiny_flux))  # at the built-in's own 10 steps
    far, _ = st.publish(_profile(tiny_flux, steps=40, speedup=2.5))
    workload = dict(tiny_flux.generation)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProfileWorkloadWarning)
        handle = apply_profile(tiny_flux.pipe, store=store_url, workload=workload)
    try:
        assert handle.store_match.exact and handle.store_match.stored.id == exact
        assert handle.config.cache.step_interval == 2
    finally:
        handle.remove()
    st.retire(exact)
    with pytest.warns(ProfileWorkloadWarning, match=r"steps 12 asked, 20 in the profile") as rec:
        handle = apply_profile(tiny_flux.pipe, store=store_url, workload={**workload, "num_inference_steps": 12})
    handle.remove()
    assert not handle.store_match.exact and handle.store_match.stored.id == near != far
    assert f"profile {near} is the nearest" in str(rec[0].message)


def test_no_profile_for_these_weights_is_one_line_or_the_untouched_pipeline(store_url, tiny_flux, capsys):
    st = ProfileStore(store_url)
    st.publish(_profile(tiny_flux, fingerprint="0123456789abcdef"))  # another checkpoint's weights
    with pytest.raises(StoreError, match="no profile in the store for this pipeline's weights") as e:
        apply_profile(tiny_flux.pipe, store=store_url, workload=tiny_flux.generation)
    assert "\n" not in str(e.value) and "0123456789abcdef" in str(e.value)
    assert apply_profile(tiny_flux.pipe, store=store_url, missing="ignore") is None
    with pytest.raises(UserError, match="give a profile"):
        apply_profile(tiny_flux.pipe)
    code, out, err = cli(capsys, "profiles", "find", "tiny-flux-random", "--store", store_url, "--device", "cpu")
    assert code == 2 and err.count("\n") == 1 and "fingerprint" in err and "Traceback" not in err


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, tiny_flux):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema: 4\nmodel: {name: x}\n")
    for args, words in [
        (("publish", str(bad), "--store", url), "model.family: missing"),
        (("publish", str(tmp_path / "none.yaml"), "--store", url), "no such profile file"),
        (("profiles", "--store", "journal:///tmp/x.log"), "a journal file holds Optuna studies only"),
        (("profiles", "--store", "redis://host/0"), "use sqlite:///FILE"),
        (("profiles", "--store", "postgresql://nobody@127.0.0.1:1/none"), "cannot open"),
        (("profiles", "retire", "7", "--store", url), "no profile 7"),
        (("profiles", "show", "x", "--store", url), "valid integer"),
        (("tune", "tiny-flux-random", "--publish", "redis://host/0", "--out", str(tmp_path / "r")), "use sqlite:///FILE"),
        (("tiny-flux-random", "--warm-start", "journal:///x.log", "--out", str(tmp_path / "r")), "Optuna studies only"),
    ]:
        code, out, err = cli(capsys, *args)
        assert code == 2 and words in err and err.count("\n") == 1 and "Traceback" not in err, (args, err)
    no_fp = _profile(tiny_flux, fingerprint=None)
    path = no_fp.save(tmp_path / "nofp.yaml")
    code, out, err = cli(capsys, "publish", str(path), "--store", url)
    assert code == 2 and "no model.fingerprint" in err
    code, out, err = cli(capsys, "publish", str(_profile(tiny_flux).save(tmp_path / "ok.yaml")), "--store", url)
    assert code == 0 and out.startswith("published: profile 1 in ")
    # the installed versions are the ones it records: recheck has nothing to measure (and loads nothing)
    code, out, err = cli(capsys, "recheck", "--store", url)
    assert code == 0 and "recheck: 0 profile(s) re-measured, 0 marked stale" in out
    store_db.dispose(url)


def test_a_newer_schema_is_refused_and_an_older_one_migrated(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    ProfileStore(url)
    store_db.dispose(url)
    engine = store_db.create_engine(url)
    with engine.begin() as conn:
        conn.execute(store_db.schema_table.update().values(version=store_db.SCHEMA_VERSION + 1))
    with pytest.raises(UserError, match="newer than this mindiesd-tune reads"):
        ProfileStore(url)
    with engine.begin() as conn:
        conn.execute(store_db.schema_table.update().values(version=store_db.SCHEMA_VERSION))
    # a future schema: the chain runs the step and records the version
    ran = []
    monkeypatch.setattr(store_db, "SCHEMA_VERSION", store_db.SCHEMA_VERSION + 1)
    monkeypatch.setitem(store_db.MIGRATIONS, store_db.SCHEMA_VERSION - 1, lambda conn: ran.append(conn))
    ProfileStore(url)
    with engine.connect() as conn:
        assert conn.execute(store_db.select(store_db.schema_table.c.version)).scalar() == store_db.SCHEMA_VERSION
    assert len(ran) == 1
    store_db.dispose(url)
    engine.dispose()


PUBLISHER = textwrap.dedent(
    """
    import sys, yaml
    sys.path.insert(0, {root!r})
    from mindiesd_tune.store import ProfileStore
    base = yaml.safe_load(open({profile!r}))
    st = ProfileStore({url!r})
    for i in range({n}):
        base["measured"]["speedup"] = {who} * 1000 + i  # a distinct profile each
        st.publish(base)
    """
)


@pytest.mark.slow
def test_two_publishers_at_once_lose_nothing(store_url, tiny_flux, tmp_path):
    path = _profile(tiny_flux).save(tmp_path / "profile.yaml")
    ProfileStore(store_url)  # the schema; the publishers race on the rows
    n = 25
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", PUBLISHER.format(root=str(ROOT), profile=str(path), url=store_url,
                                                                       n=n, who=who)], env=env, stderr=subprocess.PIPE)
             for who in (1, 2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-2000:]
    speeds = sorted(json.loads(r.row["measured"])["speedup"] for r in ProfileStore(store_url).list())
    assert speeds == sorted([1000 + i for i in range(n)] + [2000 + i for i in range(n)])


@pytest.mark.slow
def test_a_version_change_makes_recheck_measure_and_mark(tmp_path, tiny_flux, monkeypatch):
    from mindiesd_tune.accel.cache import residual
    from mindiesd_tune.recheck import recheck

    url = f"sqlite:///{tmp_path / 'p.db'}"
    st = ProfileStore(url)
    floor, _ = st.publish(_profile(tiny_flux, floors=("psnr>=1000",)))  # no output can meet it
    noop, _ = st.publish(_profile(tiny_flux, speedup=1.2))
    current = installed_versions()

    def loader(name, device=None, dtype=None):
        assert name == "tiny-flux-random"
        return tiny_flux

    # the installed versions are the recorded ones: nothing to re-measure
    assert recheck(st, installed=current, loader=loader, log=lambda s: None) == []
    upgraded = {**current, "diffusers": "99.0.0"}
    lines = []
    # the upgrade disconnects the block cache's reuse: it installs and runs, and skips nothing
    monkeypatch.setattr(residual.SchedulePolicy, "decide", lambda self, st, signal: False)
    results = recheck(st, model="tiny-flux-random", installed=upgraded, loader=loader, repeats=1, precision=None,
                      max_s=30, log=lines.append)
    by_id = {r.stored.id: r for r in results}
    assert by_id[floor].verdict == "no-op" and by_id[noop].verdict == "no-op"
    assert all(r.speedup > 0 and r.low <= r.speedup <= r.high for r in results)
    assert "diffusers " + current["diffusers"] + " -> 99.0.0" in lines[0] and "no-op" in lines[0]
    monkeypatch.undo()
    results = recheck(st, model="tiny-flux-random", installed=upgraded, loader=loader, repeats=1, precision=None,
                      max_s=30, log=lines.append)
    assert {r.stored.id: r.verdict for r in results}[floor] == "below floor"
    assert results[0].skipped_fraction > 0
    stored = st.get(floor)
    assert stored.status == "stale" and stored.row["verdict"] == "below floor"
    assert [h["verdict"] for h in st.history(floor)] == ["no-op", "below floor"]
    st.retire(noop)  # its second verdict depends on the machine's speed; the floor one is stale whatever it is
    with pytest.raises(StaleProfileError, match="marked stale"):
        apply_profile(tiny_flux.pipe, store=url, workload=tiny_flux.generation, verify=True)
    store_db.dispose(url)


def test_verdicts_from_the_figures():
    """holds / slower from the measured interval against the recorded one (no timing involved)."""
    from types import SimpleNamespace

    from mindiesd_tune.recheck import verdict_of

    prof = SimpleNamespace(accel=AccelConfig(), study={"floors": ["psnr>=30"]},
                           measured={"speedup": 1.5, "speedup_low": 1.4})

    def m(speed, low, high, psnr=35.0):
        return SimpleNamespace(counters={}, metrics={"psnr": psnr}, base_metrics={"psnr": float("inf")},
                               comparison=SimpleNamespace(speedup=speed, speedup_low=low, speedup_high=high))

    assert verdict_of(prof, m(1.45, 1.3, 1.6))[0] == "holds"
    assert verdict_of(prof, m(1.1, 1.0, 1.2))[0] == "slower"
    assert verdict_of(prof, m(1.5, 1.4, 1.6, psnr=20.0))[0] == "below floor"
    cached = SimpleNamespace(**{**prof.__dict__, "accel": AccelConfig(cache=BlockCacheConfig(step_interval=2))})
    assert verdict_of(cached, m(1.5, 1.4, 1.6))[0] == "no-op"  # a cache whose counters say nothing was skipped


def test_warm_start_points_fit_the_new_space(tmp_path, tiny_flux):
    from mindiesd_tune.search_spaces import SpaceContext, config_from_params
    from mindiesd_tune.tuner.warm import warm_points

    url = f"sqlite:///{tmp_path / 'p.db'}"
    st = ProfileStore(url)
    st.publish(_profile(tiny_flux, steps=20, accel=AccelConfig(cache=BlockCacheConfig(step_interval=3))),
               front=[{"cache.method": "none", "steps.num_inference_steps": 14, "steps.scheduler": "default"}])
    other = _profile(tiny_flux, fingerprint="fedcba9876543210", accel=AccelConfig(cache=BlockCacheConfig(step_interval=2)))
    st.publish(other)
    info = {"model": {"family": tiny_flux.family, "fingerprint": model_fingerprint(tiny_flux.pipe)},
            "hardware": hardware_info("cpu"), "workload": {"generation": {"num_inference_steps": 28}}}
    lines = []
    points = warm_points(url, info, SpaceContext(n_blocks=2, num_inference_steps=28), lines.append)
    configs = [config_from_params(p) for p, _ in points]
    # the exact model's points first (its pick, the pick with bf16 laid over it, then its front:
    # the step count scaled 14/20 -> 20/28), then the sibling checkpoint's
    assert [(a["warm_start"], "combined" in a) for _, a in points] == [(1, False), (1, True), (1, False), (2, False), (2, True)]
    assert configs[0].cache.step_interval == 3 and configs[2].steps.num_inference_steps == 20
    assert configs[1].cache == configs[0].cache and configs[1].quant.precision["denoiser"] == "bfloat16"
    assert configs[3].cache.step_interval == 2
    assert "5 point(s) from 2 stored profile(s) (1 of this model's weights" in lines[0]
    store_db.dispose(url)


@pytest.mark.slow
def test_a_study_publishes_its_front_and_the_next_one_starts_from_it(tmp_path):
    """run_study(publish=) stores the profile and front; run_study(warm_start=) runs them after the
    baseline and counts those that held (the fake evaluator's speed is arithmetic, not timed)."""
    from mindiesd_tune.tuner import parse_budget, run_study
    from mindiesd_tune.tuner.warm import WARM, held, warm_trials

    url = f"sqlite:///{tmp_path / 'p.db'}"
    lines = []
    first = run_study("fake", parse_budget("8t"), tmp_path / "a", worker_factory="fakes:make_fake", isolate=False,
                      log=lines.append, publish=url)
    [stored] = ProfileStore(url).list()
    assert stored.front and stored.row["fingerprint"] == "f" * 16 and any("published: profile 1" in s for s in lines)
    assert stored.profile().accel == first.profile.accel
    second = run_study("fake", parse_budget("4t"), tmp_path / "b", worker_factory="fakes:make_fake", isolate=False,
                       log=lines.append, warm_start=url, seed=1)
    trials = second.study.get_trials(deepcopy=False)
    warm = warm_trials(second.study)
    assert warm and trials[0].user_attrs.get("preset") and all(WARM in t.user_attrs for t in trials[1:1 + len(warm)])
    good, total = held(second.study)
    assert total == len(warm) and 1 <= good <= total
    assert any(s.startswith("warm start: ") and "of this model's weights" in s for s in lines)
    store_db.dispose(url)


def test_a_store_out_of_reach_costs_the_warm_start_not_the_study(tmp_path):
    from mindiesd_tune.search_spaces import SpaceContext
    from mindiesd_tune.tuner.warm import warm_points

    lines = []
    info = {"model": {"family": "dit-image", "fingerprint": "f" * 16}, "hardware": {"device": "cpu", "name": "x"}}
    assert warm_points("postgresql://nobody@127.0.0.1:1/none", info, SpaceContext(), lines.append) == []
    assert lines[0].startswith("warm start: none, the store could not be read") and lines[0].endswith("starting cold")
