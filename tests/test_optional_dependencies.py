"""Optional packages: open_clip is a core dependency; each one still optional fails with one line naming its extra."""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import cli
from test_cli_errors import one_line_error

ROOT = Path(__file__).parent.parent


def test_open_clip_is_a_core_dependency():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 on
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("open_clip_torch") for d in project["dependencies"])
    assert not any(d.startswith("open_clip_torch") for deps in project["optional-dependencies"].values() for d in deps)


@pytest.fixture
def scored(tmp_path):
    """A folder of two images, the same as a reference folder, and a prompts file."""
    rng = np.random.default_rng(0)
    for d in ("out", "ref"):
        (tmp_path / d).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / d / f"{i}.png")
    (tmp_path / "prompts.txt").write_text("a red circle\na blue square\n")
    return tmp_path


def test_clip_scoring_without_open_clip_is_one_line(capsys, monkeypatch, scored):
    clip_score = importlib.import_module("mindiesd_tune.metrics.clip_score")  # the package exports a function of that name
    clip_score.get_scorer.cache_clear()  # a scorer loaded by another test needs no import
    monkeypatch.setitem(sys.modules, "open_clip", None)
    monkeypatch.setitem(sys.modules, "open_clip.model", None)
    code, _, err = cli(capsys, "score", str(scored / "out"), "--prompts", str(scored / "prompts.txt"),
                       "--metrics", "clip", "--clip-model", "demo-clip")
    clip_score.get_scorer.cache_clear()
    one_line_error(code, err, "open_clip_torch")


def test_missing_optional_packages_name_their_extra(capsys, monkeypatch, scored, tmp_path):
    fidelity = importlib.import_module("mindiesd_tune.metrics.fidelity")
    monkeypatch.setattr(fidelity, "_LPIPS_CACHE", {})  # a backbone loaded by another test needs no import
    hub = tmp_path / "torch-home"
    (hub / "hub" / "checkpoints").mkdir(parents=True)
    (hub / "hub" / "checkpoints" / fidelity.LPIPS_BACKBONES["alex"]).write_bytes(b"stand-in")
    monkeypatch.setenv("TORCH_HOME", str(hub))
    inception = tmp_path / "inception.pth"
    inception.write_bytes(b"stand-in")
    (scored / "videos").mkdir()
    (scored / "videos" / "v.mp4").write_bytes(b"stand-in")
    cases = [
        ("imageio", ["score", str(scored / "videos"), "--reference", str(scored / "videos")], "video"),
        ("imageio", ["run", "tiny-wan-random", "--prompt", "x", "--out", str(tmp_path / "v.mp4")], "video"),
        ("torch_fidelity", ["score", str(scored / "out"), "--reference", str(scored / "ref"), "--metrics", "fid",
                            "--inception", str(inception)], "metrics"),
        ("torchvision", ["score", str(scored / "out"), "--reference", str(scored / "ref"), "--metrics", "lpips"], "metrics"),
        ("psycopg", ["tune", "fake", "--budget", "1t", "--out", str(tmp_path / "pg"),
                     "--storage", "postgresql://nobody@127.0.0.1:9/none"], "postgres"),
    ]
    import mindiesd_tune.models

    monkeypatch.setattr(mindiesd_tune.models, "check", lambda *a, **k: "builtin")  # "fake" is no model
    monkeypatch.setattr("mindiesd_tune.cli.check_model_arg", lambda *a, **k: None)  # nor to the CLI
    for module, args, extra in cases:
        with monkeypatch.context() as m:
            for name in [n for n in sys.modules if n == module or n.startswith(module + ".")] + [module, module + ".v3"]:
                m.setitem(sys.modules, name, None)
            code, _, err = cli(capsys, *args)
        one_line_error(code, err, f"pip install 'mindiesd-tune[{extra}]'")
