"""`run MODEL --store URL` and `bench MODEL --store URL`: the profile the store holds for the
loaded model's weights, this machine and the workload asked for, then run or measured with it.
A near workload warns in one line; nothing for the model is a one-line error, exit 2."""

import json

import pytest
from test_store import _profile

from conftest import cli
from mindiesd_tune.accel import AccelConfig, StepsConfig
from mindiesd_tune.store import ProfileStore
from mindiesd_tune.store import db as store_db
from test_cli_errors import one_line_error

FEWER_STEPS = AccelConfig(steps=StepsConfig(num_inference_steps=3))
BENCH = ("--device", "cpu", "--json", "--repeats", "1", "--precision", "0", "--warmup", "0")


@pytest.fixture
def store(tmp_path):
    url = f"sqlite:///{tmp_path / 'profiles.db'}"
    yield url
    store_db.dispose(url)


@pytest.fixture
def published(store, tiny_flux, tmp_path):
    """A profile for tiny-flux-random at its own workload in the store, and the same as a file."""
    prof = _profile(tiny_flux, accel=FEWER_STEPS)
    pid, _ = ProfileStore(store).publish(prof)
    return pid, prof.save(tmp_path / "same.yaml")


def test_run_applies_the_stored_profile_as_the_same_profile_file_does(capsys, store, published, tmp_path):
    pid, same = published
    outputs = {}
    for name, how in (("store", ["--store", store]), ("file", ["--profile", str(same)]), ("none", [])):
        target = tmp_path / f"{name}.png"
        code, out, err = cli(capsys, "run", "tiny-flux-random", "--prompt", "a red circle", "--out", str(target),
                             "--device", "cpu", *how)
        assert code == 0, err
        assert "warning" not in err and out.startswith(str(target))
        outputs[name] = target.read_bytes()
    assert outputs["store"] == outputs["file"] != outputs["none"]  # the stored profile's 3 steps, not the model's 10


def test_bench_measures_the_stored_profile_and_names_it(capsys, store, published):
    pid, _ = published
    code, out, err = cli(capsys, "bench", "tiny-flux-random", "--store", store, *BENCH)
    assert code == 0, err
    r = json.loads(out)
    assert r["profile"] == f"profile {pid} in {store}" and r["rounds"] == 1 and r["tuned_speedup"] == 1.5
    assert "warning" not in err


def test_a_near_workload_warns_in_one_line_and_runs(capsys, store, published, tmp_path):
    pid, _ = published
    code, out, err = cli(capsys, "bench", "tiny-flux-random", "--store", store, "--steps", "12", *BENCH)
    assert code == 0, err
    warned = [line for line in err.splitlines() if line.startswith("mindiesd-tune: warning:")]
    assert len(warned) == 1 and f"profile {pid} is the nearest" in warned[0] and "steps 12 asked, 10 in the profile" in warned[0]
    code, out, err = cli(capsys, "run", "tiny-flux-random", "--prompt", "x", "--out", str(tmp_path / "n.png"),
                         "--device", "cpu", "--store", store, "--steps", "12")
    assert code == 0 and (tmp_path / "n.png").exists()
    assert sum(line.startswith("mindiesd-tune: warning:") for line in err.splitlines()) == 1


@pytest.mark.parametrize("command", ["run", "bench"])
def test_nothing_for_the_model_is_one_line_and_exit_2(capsys, store, tiny_flux, tmp_path, command):
    ProfileStore(store).publish(_profile(tiny_flux, fingerprint="0123456789abcdef"))  # other weights
    target = tmp_path / "a.png"
    args = ["--prompt", "x", "--out", str(target)] if command == "run" else list(BENCH)
    code, out, err = cli(capsys, command, "tiny-flux-random", "--store", store, "--device", "cpu", *args)
    one_line_error(code, err, "no profile in the store for this pipeline's weights", "0123456789abcdef")
    assert out == "" and not target.exists()


@pytest.mark.parametrize("args, needle", [
    (["bench", "tiny-flux-random"], "give --profile FILE or --store URL"),
    (["bench", "tiny-flux-random", "--store", "sqlite:///x.db", "--profile", "p.yaml"], "not both"),
    (["run", "tiny-flux-random", "--prompt", "x", "--out", "a.png", "--store", "journal:x.log"], "journal file"),
])
def test_a_bad_store_argument_is_one_line_before_anything_loads(capsys, args, needle):
    code, out, err = cli(capsys, *args)
    one_line_error(code, err, needle)
