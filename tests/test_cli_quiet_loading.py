"""Loading a local diffusers folder from the command line prints none of diffusers' loading bars,
"pip install accelerate" banners or library warnings, unless --verbose."""

import numpy as np
import pytest

# diffusers' loading bar; its banner when accelerate is missing
NOISE = ("Loading pipeline components", "pip install accelerate", "low cpu memory usage")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from mindiesd_tune.models import load

    path = tmp_path_factory.mktemp("saved") / "mymodel"
    load("tiny-flux-random", device="cpu").pipe.save_pretrained(path)
    return path


@pytest.fixture
def fast_generate(monkeypatch):
    """The model loads for real; its call is not what this test is about."""
    from mindiesd_tune.tuner import evaluator

    monkeypatch.setattr(evaluator.Evaluator, "generate", lambda self, prompt, seed, overrides=None: np.zeros((8, 8, 3), "float32"))


def _run(capfd, folder, tmp_path, *extra):
    from mindiesd_tune.cli import main

    code = 0
    try:
        main(["run", str(folder), "--prompt", "a red circle", "--out", str(tmp_path / "a.png"), "--device", "cpu", *extra])
    except SystemExit as e:
        code = e.code
    out, err = capfd.readouterr()  # file-descriptor level: library handlers may hold an older sys.stderr
    return code, out, err


def test_loading_a_folder_is_quiet(capfd, folder, tmp_path, fast_generate):
    import logging

    from diffusers.utils import logging as dlog

    before = dlog.get_verbosity(), dlog.is_progress_bar_enabled()
    code, out, err = _run(capfd, folder, tmp_path)
    assert code in (0, None), err
    assert (tmp_path / "a.png").is_file()
    for needle in NOISE:
        assert needle not in err, err
    assert err.strip() == "", err
    assert (dlog.get_verbosity(), dlog.is_progress_bar_enabled()) == before  # nothing process-wide left behind
    assert logging.getLogger("diffusers").level == before[0]


def test_verbose_shows_the_libraries_output(capfd, folder, tmp_path, fast_generate):
    code, out, err = _run(capfd, folder, tmp_path, "--verbose")
    assert code in (0, None), err
    assert "Loading pipeline components" in err
