"""Command-line mistakes and unwritable outputs: one line on stderr, exit 2, before any work starts."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import cli

ROOT = Path(__file__).parent.parent


def one_line_error(code, err, *needles):
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("mindiesd-tune: error:"), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def no_work(monkeypatch):
    """Loading a model or starting a study fails the test: the checks must come first."""
    import mindiesd_tune.models
    import mindiesd_tune.tuner

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the output path was checked")

    for module, name in ((mindiesd_tune.models, "load"), (mindiesd_tune.tuner, "run_study"),
                         (mindiesd_tune.tuner, "export"), (mindiesd_tune.tuner, "load_run")):
        monkeypatch.setattr(module, name, refuse)


# ----------------------------------------------------------------------------- usage mistakes


@pytest.mark.parametrize(
    "args, needle",
    [
        (["tune", "tiny-flux-random", "--no-such-option"], "--no-such-option"),  # unknown option
        (["tune", "tiny-flux-random", "--repeats", "0"], "--repeats"),  # out of range
        (["tune", "tiny-flux-random", "--repeats", "many"], "--repeats"),  # bad value
        (["tune", "tiny-flux-random", "--repeats"], "--repeats"),  # option without its value
        (["show"], "profile"),  # missing argument
        (["models", "extra"], "extra"),  # unexpected argument
        (["--no-such-option"], "--no-such-option"),
    ],
)
def test_usage_mistakes_are_one_line_and_exit_2(capsys, no_work, args, needle):
    one_line_error(*cli(capsys, *args)[::2], needle)


def test_help_stays_rich(capsys):
    code, out, _ = cli(capsys, "tune", "--help")
    assert code == 0 and "Usage" in out and "╭─ Options" in out and "--quality-floor" in out


# ----------------------------------------------------------------------------- unwritable outputs


@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "plain-file"
    f.write_text("not a folder")
    return f


def _cases(a_file, run_dir):
    return [
        (["run", "tiny-flux-random", "--prompt", "a red circle", "--out", "/proc/forbidden/x.png"], "/proc/forbidden"),
        (["tune", "tiny-flux-random", "--out", "/proc/foo"], "/proc/foo"),
        (["tune", "tiny-flux-random", "--out", str(run_dir / "t"), "--storage", "sqlite:////proc/foo/x.db"], "/proc/foo"),
        (["run", "tiny-flux-random", "--prompt", "a red circle", "--out", str(a_file / "x.png")], "is a file"),
        (["tune", "tiny-flux-random", "--out", str(a_file / "run")], "is a file"),
        (["tune", "tiny-flux-random", "--out", str(a_file)], "is a file"),
        (["tune", "tiny-flux-random", "--out", str(run_dir / "run"), "--baseline-cache", str(a_file / "c")], "is a file"),
        (["export", str(run_dir), "--storage", f"sqlite:///{a_file}/x.db"], "is a file"),
        (["export", str(run_dir), "--storage", "journal:///proc/foo/journal.log"], "/proc/foo"),
        (["report", str(a_file)], "is a file"),
    ]


def test_unwritable_outputs_are_refused_before_any_work(capsys, no_work, a_file, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for args, needle in _cases(a_file, run_dir):
        code, _, err = cli(capsys, *args)
        line = one_line_error(code, err, needle)
        assert "Traceback" not in err, (args, line)
    assert not Path("/proc/forbidden").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["plain-file", "run"]




def _read_only_runner(ro: Path):
    """A command prefix that runs a program with ``ro`` bind-mounted read-only, or None where it cannot."""
    if os.geteuid() != 0:
        for p in ro.iterdir():
            p.chmod(0o444)
        ro.chmod(0o555)  # permission bits stop a non-root user (root ignores them)
        return []
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    # a new user and mount namespace: no privileges needed, and the mount ends with the process
    mount = f'mount --bind "{ro}" "{ro}" && mount -o remount,bind,ro "{ro}" && exec "$@"'
    probe = subprocess.run([unshare, "-rm", "sh", "-c", mount, "sh", "true"], capture_output=True)
    return [unshare, "-rm", "sh", "-c", mount, "sh"] if probe.returncode == 0 else None


def test_a_read_only_file_system_is_refused(tmp_path):
    from test_profile_schema import _profile

    ro, run_dir = tmp_path / "ro", tmp_path / "run"
    ro.mkdir()
    run_dir.mkdir()
    old = _profile().to_dict()
    old["schema"] = 1
    del old["model"]["dtype"]  # schema 1 had no model.dtype; --upgrade rewrites the file
    (ro / "old.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    prefix = _read_only_runner(ro)
    if prefix is None:
        pytest.skip("no way to mount a read-only file system here (unshare -rm)")
    commands = [
        ["run", "tiny-flux-random", "--prompt", "a red circle", "--out", str(ro / "x.png")],
        ["tune", "tiny-flux-random", "--out", str(ro / "run")],
        ["tune", "tiny-flux-random", "--out", str(ro)],
        ["export", str(run_dir), "--storage", f"sqlite:///{ro}/x.db"],
        ["validate", "--upgrade", str(ro / "old.yaml")],
    ]
    import json

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([*prefix, sys.executable, "-c", BEFORE_TORCH_SCRIPT, json.dumps(commands)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    why = "read-only file system" if os.geteuid() == 0 else "permission denied"
    for _args, (code, err, _) in zip(commands, json.loads(r.stdout.strip().splitlines()[-1])):
        one_line_error(code, err, str(ro), why)


# ----------------------------------------------------------------------------- answered before torch

# runs each argument list through the console entry point in one fresh interpreter and notes,
# at each refusal, the exit code, stderr and whether torch had been imported by then
BEFORE_TORCH_SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from mindiesd_tune.cli import main
    results = []
    for args in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                main(args)
                code = 0
            except SystemExit as e:
                code = e.code
        results.append([code, err.getvalue(), "torch" in sys.modules])
    print(json.dumps(results))
    """
)


def _bad_inputs(tmp_path):
    from test_cli_imports import _profile

    from mindiesd_tune import AccelConfig

    profile = str(_profile(AccelConfig()).save(tmp_path / "p.yaml"))
    missing = str(tmp_path / "missing.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    png = str(tmp_path / "x.png")
    return [
        (["tune", "demo-flux", "--quality-floor", "psnr>=abc"], "psnr>=abc"),
        (["tune", "demo-flux", "--quality-floor", "psnr.worst>=28"], "unknown aggregate 'worst'"),
        (["tune", "demo-flux", "--quality-floor", "kid_clip.min<=0.1"], "takes no aggregate"),
        (["tune", "demo-flux", "--quality-floor", "psnr.min>=x"], "psnr.min>=x"),
        (["tune", "demo-flux", "--holdout", "-1"], "--holdout '-1'"),
        (["tune", "demo-flux", "--holdout", missing], f"--holdout {missing!r}"),
        (["tune", "demo-flux", "--judge", "median"], "--judge 'median'"),
        (["tune", "demo-flux", "--promotion", "0"], "--promotion 0"),
        (["tune", "demo-flux", "--fvd-weights", missing], "--fvd-weights: no such file"),
        (["tune", "demo-flux", "--pick", "safest"], "--pick 'safest'"),
        (["tune", "demo-flux", "--budget", "5x"], "5x"),
        (["demo-flux", "--budget", "5x"], "5x"),
        (["tune", "demo-flux", "--max-memory", "12XB"], "--max-memory"),
        (["tune", "demo-flux", "--max-weight-bytes", "lots"], "--max-weight-bytes"),
        (["tune", "demo-flux", "--dtype", "fp8"], "--dtype"),
        (["tune", "demo-flux", "--objective", "speed"], "objective"),
        (["tune", "demo-flux", "--sampler", "grid"], "sampler"),
        (["tune", "demo-flux", "--pick", "best"], "--pick"),
        (["tune", "demo-flux", "--seeds", "a,b"], "--seeds"),
        (["tune", "demo-flux", "--workers", "2", "--devices", "3"], "--workers 2"),
        (["tune", "demo-flux", "--prompts", missing], f"--prompts {missing}"),
        (["tune", "demo-flux", "--out", "/proc/foo"], "/proc/foo"),
        (["tune", "./no-such-model-folder"], "no such folder: ./no-such-model-folder"),
        (["tune", str(tmp_path / "a" / "b")], f"no such folder: {tmp_path / 'a' / 'b'}"),
        (["tune", "someorg/not-cached"], "no such folder: someorg/not-cached"),
        (["no-such-model"], "unknown model 'no-such-model'"),
        (["bench", "./no-such", "--profile", profile], "no such folder: ./no-such"),
        (["bench", "demo-flux", "--profile", str(tmp_path / "none.yaml")], "no such profile file"),
        (["bench", "demo-flux", "--profile", profile, "--dtype", "fp8"], "--dtype"),
        (["bench", "demo-flux", "--profile", profile, "--prompts", missing], "--prompts"),
        (["run", "./no-such", "-p", "x", "--out", png], "no such folder: ./no-such"),
        (["run", "demo-flux", "-p", "x", "--out", str(tmp_path / "x.txt")], "x.txt"),
        (["run", "demo-flux", "-p", "x", "--out", "/proc/forbidden/x.png"], "/proc/forbidden"),
        (["run", "demo-flux", "--out", png], "nothing to generate"),
        (["run", "demo-flux", "-p", "x", "--out", png, "--seeds", "x"], "--seeds"),
        (["run", "demo-flux", "-p", "x", "--out", png, "--profile", str(tmp_path / "none.yaml")], "no such profile"),
        (["export", str(empty)], "no study here"),
        (["export", str(empty), "--pick", "best"], "--pick"),
        (["report", str(tmp_path / "no-run")], "no study here"),
        (["show", str(tmp_path / "none.yaml")], "no such profile file"),
        (["validate", str(tmp_path / "none.yaml")], "no such profile file"),
    ]


def test_command_line_mistakes_are_answered_before_torch_is_imported(tmp_path):
    import json

    cases = _bad_inputs(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", BEFORE_TORCH_SCRIPT, json.dumps([a for a, _ in cases])],
                       capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout.strip().splitlines()[-1])
    for (args, needle), (code, err, torch_loaded) in zip(cases, results):
        one_line_error(code, err, needle)
        assert not torch_loaded, (args, err)  # and so for every case before it


def test_the_torch_free_list_of_built_in_models_is_the_registry_s():
    from mindiesd_tune.modelref import BUILTIN_MODELS
    from mindiesd_tune.models import builtin_names

    assert list(BUILTIN_MODELS) == builtin_names()
