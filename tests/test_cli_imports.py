"""The light CLI commands start without torch or diffusers (they read YAML and print)."""

import subprocess
import sys

import pytest

from mindiesd_tune import AccelConfig
from mindiesd_tune.accel import BlockSparseConfig, CompileConfig, FirstBlockCacheConfig, StepsConfig, TaylorSeerConfig
from mindiesd_tune.profile import Profile

HEAVY = ("torch", "diffusers")

# runs the console entry point on each argument list in one fresh interpreter, then prints
# the heavy modules loaded
_PROBE = """
import sys
from mindiesd_tune.cli import main
for args in {calls!r}:
    try:
        main(args)
    except SystemExit:
        pass
print("LOADED:" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def _profile(accel: AccelConfig) -> Profile:
    return Profile(
        model={"name": "tiny-flux-random", "family": "dit-image", "pipeline": "FluxPipeline", "fingerprint": "abc",
               "dtype": "float32"},
        generation={"height": 32, "width": 32, "num_frames": None, "num_inference_steps": 10},
        accel=accel,
        measured={"latency_s": 0.1, "baseline_s": 0.2, "speedup": 2.0, "psnr": 31.0, "feasible": True},
        hardware={"device": "cpu", "name": "x86_64", "count": 1, "torch": "2.14.1", "diffusers": "0.42.1"},
        study={"name": "s", "trial": 3, "prompts": ["a"], "seeds": [0]},
    )


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
    root = tmp_path_factory.mktemp("light")
    a = _profile(AccelConfig(cache=FirstBlockCacheConfig(threshold=0.1))).save(root / "a.yaml")
    b = _profile(AccelConfig(
        steps=StepsConfig(num_inference_steps=6, scheduler="euler"),
        cache=TaylorSeerConfig(),
        sparse=BlockSparseConfig(),
        compile=CompileConfig(mode="default"),
    )).save(root / "b.yaml")
    return a, b


def _run(*calls: list) -> subprocess.CompletedProcess:
    calls = [[str(a) for a in c] for c in calls]
    return subprocess.run([sys.executable, "-c", _PROBE.format(calls=calls, heavy=HEAVY)],
                          capture_output=True, text=True, timeout=120)


def _loaded(*calls: list) -> list[str]:
    line = _run(*calls).stdout.splitlines()[-1]
    assert line.startswith("LOADED:")
    return [m for m in line[len("LOADED:"):].split(",") if m]


@pytest.mark.parametrize("command", [
    lambda a, b: ["--help"],
    lambda a, b: ["validate", a],
    lambda a, b: ["validate", b],
    lambda a, b: ["show", b],
    lambda a, b: ["diff", a, b],
], ids=["help", "validate", "validate-all-sections", "show", "diff"])
def test_light_commands_do_not_import_torch_or_diffusers(profiles, command):
    assert _loaded(command(*profiles)) == []


def test_every_registered_method_shows_and_validates_without_torch(tmp_path):
    from mindiesd_tune.accel.methods import methods

    paths = []
    for m in methods():
        example = m.example if m.example is not None else m.config()
        p = _profile(AccelConfig(**{m.section: example})).save(tmp_path / f"{m.section}-{m.name}.yaml")
        paths.append(str(p))
    out = _run(*([command, p] for p in paths for command in ("show", "validate")))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(": OK") == len(paths), out.stdout + out.stderr
    assert out.stdout.splitlines()[-1] == "LOADED:"


def test_the_probe_sees_torch_when_a_command_needs_it(profiles):
    # `models` lists the built-ins, whose builders import diffusers: proof the probe can see it
    assert "torch" in _loaded(["models"])


def test_the_modules_that_check_arguments_import_without_torch():
    # what the commands import before they refuse a bad argument (tests/test_cli_errors.py runs them)
    light = ["mindiesd_tune.cli", "mindiesd_tune.cli_checks", "mindiesd_tune.modelref", "mindiesd_tune.tuner",
             "mindiesd_tune.tuner.budget", "mindiesd_tune.tuner.objectives", "mindiesd_tune.tuner.options",
             "mindiesd_tune.tuner.storage", "mindiesd_tune.workload", "mindiesd_tune.profile"]
    code = f"import importlib, sys\nfor m in {light!r}: importlib.import_module(m)\n" \
           f"print('LOADED:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "LOADED:"
