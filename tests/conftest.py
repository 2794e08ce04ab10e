import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# baseline outputs cached by the CLI go to a throwaway folder, not the user's cache
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

if "MINDIESD_TUNE_BASELINES" not in os.environ:
    os.environ["MINDIESD_TUNE_BASELINES"] = tempfile.mkdtemp(prefix="mindiesd-baselines-")
    atexit.register(shutil.rmtree, os.environ["MINDIESD_TUNE_BASELINES"], ignore_errors=True)
# Studies leave torch.compile out: compiling costs seconds to tens of seconds a trial here, and the
# tests that search it (test_accel_compile.py) turn it back on.
os.environ["MINDIESD_TUNE_COMPILE"] = "0"

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def tiny_flux():
    from mindiesd_tune.models import load

    return load("tiny-flux-random", device="cpu")


@pytest.fixture(scope="session")
def tiny_wan():
    from mindiesd_tune.models import load

    return load("tiny-wan-random", device="cpu")


@pytest.fixture(scope="session")
def demo_flux():
    from mindiesd_tune.models import load

    return load("demo-flux", device="cpu")


def generate(loaded, prompt="a red circle on a blue background", seed=0, **overrides):
    """One call of a loaded model with its default settings -> float array in [0, 1]."""
    gen = {**loaded.generation, **overrides}
    out = loaded.pipe(prompt=prompt, generator=torch.Generator().manual_seed(seed), output_type="np", **gen)
    return (out.frames if loaded.is_video else out.images)[0]


def cli(capsys, *args):
    """Run the CLI in-process -> (exit code, stdout, stderr)."""
    from mindiesd_tune.cli import main

    code = 0
    try:
        main(list(args))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err
