import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import cli
from mindiesd_tune.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    try:
        main(["tiny-flux-random", "--budget", "3t", "--out", str(out), "--repeats", "1", "--quiet"])
    except SystemExit as e:
        assert not e.code
    return out


@pytest.mark.slow
def test_short_form_runs_tune(run_dir):
    assert (run_dir / "profile.yaml").is_file() and (run_dir / "report.html").is_file()


def test_models_lists_every_builtin_with_what_it_is_for(capsys):
    code, out, _ = cli(capsys, "models")
    assert code == 0
    rows = {line.split()[0]: line.split()[1] for line in out.strip().splitlines()}
    assert rows == {"demo-flux": "pipeline", "demo-wan": "pipeline", "tiny-flux-random": "pipeline",
                    "tiny-wan-random": "pipeline", "mid-flux-random": "pipeline", "demo-clip": "scorer"}


@pytest.mark.parametrize(
    "args, needle",
    [
        (["tune", "no-such-model", "--budget", "1t"], "unknown model"),
        (["no-such-model", "--budget", "1t"], "unknown model"),
        (["tune", "tiny-flux-random", "--budget", "soon"], "budget"),
        (["tune", "tiny-flux-random", "--quality-floor", "ssim=1"], "quality floor"),
        (["show", "missing.yaml"], "no such profile"),
        (["report", "."], "study.db"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(capsys, args, needle):
    code, _, err = cli(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("mindiesd-tune: error:")


def test_show_and_validate(capsys, run_dir):
    code, out, _ = cli(capsys, "show", str(run_dir / "profile.yaml"))
    assert code == 0 and "tiny-flux-random" in out and "measured:" in out
    code, out, _ = cli(capsys, "validate", str(run_dir / "profile.yaml"))
    assert code == 0 and "OK" in out


def test_validate_names_the_bad_field(capsys, run_dir, tmp_path):
    data = yaml.safe_load((run_dir / "profile.yaml").read_text())
    data["accel"]["cache"] = {"method": "first_block", "threshold": "lots"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    code, _, err = cli(capsys, "validate", str(bad))
    assert code == 2 and "accel.cache.threshold" in err and "'lots'" in err


def test_report_rebuilds(capsys, run_dir):
    (run_dir / "report.html").unlink()
    code, out, _ = cli(capsys, "report", str(run_dir))
    assert code == 0 and (run_dir / "report.html").is_file()


def test_run_writes_an_image_with_and_without_profile(capsys, run_dir, tmp_path):
    code, _, _ = cli(capsys, "run", "tiny-flux-random", "--prompt", "a red circle", "--out", str(tmp_path / "a.png"))
    assert code == 0
    code, _, _ = cli(capsys, "run", "tiny-flux-random", "--prompt", "a red circle", "--out", str(tmp_path / "b.png"),
                     "--profile", str(run_dir / "profile.yaml"))
    assert code == 0
    assert Image.open(tmp_path / "a.png").size == (32, 32) and Image.open(tmp_path / "b.png").size == (32, 32)


def test_run_writes_a_video(capsys, tmp_path):
    code, _, _ = cli(capsys, "run", "tiny-wan-random", "--prompt", "a red circle moving left", "--out", str(tmp_path / "v.gif"))
    assert code == 0
    gif = Image.open(tmp_path / "v.gif")
    assert gif.n_frames == 5
    code, _, err = cli(capsys, "run", "tiny-wan-random", "--prompt", "x", "--out", str(tmp_path / "v.png"))
    assert code == 2 and ".gif" in err


@pytest.mark.parametrize("command", ["tune", "report", "show", "models", "run", "validate"])
def test_help(capsys, command):
    code, out, _ = cli(capsys, command, "--help")
    assert code == 0 and "Usage" in out


def test_console_script_is_installed():
    exe = shutil.which("mindiesd-tune", path=str(Path(sys.executable).parent))
    assert exe, "the console script mindiesd-tune is not installed next to this Python"
    r = subprocess.run([exe, "nope", "--budget", "1t"], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "unknown model" in r.stderr
