"""The light CLI commands start without torch or diffusers (they read YAML and print)."""

import subprocess
import sys

import pytest

from mindiesd_tune import AccelConfig
from mindiesd_tune.accel import BlockSparseConfig, CompileConfig, FirstBlockCacheConfig, StepsConfig, TaylorSeerConfig
from mindiesd_tune.profile import Profile

HEAVY = ("torch", "diffusers")

# runs the console entry point in a fresh interpreter and prints the heavy modules it loaded
_PROBE = """
import sys
from mindiesd_tune.cli import main
try:
    main(sys.argv[1:])
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


def _loaded(*args) -> list[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY), *map(str, args)],
                         capture_output=True, text=True, timeout=120)
    line = next(x for x in out.stdout.splitlines() if x.startswith("LOADED:"))
    return [m for m in line[len("LOADED:"):].split(",") if m]


@pytest.mark.parametrize("command", [
    lambda a, b: ["--help"],
    lambda a, b: ["validate", a],
    lambda a, b: ["validate", b],
    lambda a, b: ["show", b],
    lambda a, b: ["diff", a, b],
], ids=["help", "validate", "validate-all-sections", "show", "diff"])
def test_light_commands_do_not_import_torch_or_diffusers(profiles, command):
    assert _loaded(*command(*profiles)) == []


def test_the_probe_sees_torch_when_a_command_needs_it(profiles):
    # `models` lists the built-ins, whose builders import diffusers: proof the probe can see it
    assert "torch" in _loaded("models")
