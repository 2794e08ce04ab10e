"""Deploying a profile with a mesh: apply_profile inside each rank of a group, and `mindiesd-tune run` /
`bench` launching the rank group themselves (torch.distributed.run) when the profile spans 2 ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from parallel_ranks import run_ranks
from PIL import Image

from mindiesd_tune import AccelConfig
from mindiesd_tune.accel import FirstBlockCacheConfig
from mindiesd_tune.accel.parallel import ParallelConfig
from mindiesd_tune.profile import Profile

STEPS = 4


def _profile(tmp_path, parallel: ParallelConfig, name="mesh.yaml"):
    from mindiesd_tune.models import load
    from mindiesd_tune.profile import model_fingerprint

    loaded = load("demo-flux", device="cpu")
    gen = {k: v for k, v in loaded.generation.items() if k in ("height", "width", "num_inference_steps", "guidance_scale",
                                                                 "true_cfg_scale", "negative_prompt")}
    return Profile(
        model={"name": "demo-flux", "family": loaded.family, "pipeline": type(loaded.pipe).__name__,
               "fingerprint": model_fingerprint(loaded.pipe), "dtype": "float32"},
        generation={**gen, "num_inference_steps": STEPS},
        accel=AccelConfig(cache=FirstBlockCacheConfig(threshold=0.3), parallel=parallel),
        study={"prompts": ["a red circle"], "seeds": [0]},
    ).save(tmp_path / name)


def _deploy_scenario(rank, world, path):
    from mindiesd_tune.deploy import apply_profile
    from mindiesd_tune.models import load
    from mindiesd_tune.profile import load_profile

    loaded = load("demo-flux", device="cpu")
    prof = load_profile(path)

    def call():
        out = loaded.pipe(prompt="a red circle", generator=torch.Generator().manual_seed(0), output_type="latent",
                          **prof.call_kwargs())
        return out.images.clone()

    ref = call()
    single = apply_profile(loaded.pipe, {**prof.to_dict(), "accel": {**prof.to_dict()["accel"], "parallel": {}}})
    single_out = call()
    single.remove()
    handle = apply_profile(loaded.pipe, prof)
    got = call()
    handle.remove()
    return {"diff": (got - single_out).abs().max().item(), "meshed_differs_from_plain": not torch.equal(got, ref),
            "restored": torch.equal(call(), ref), "latents": got}


@pytest.mark.slow
def test_apply_profile_installs_the_mesh_in_each_rank(tmp_path):
    path = _profile(tmp_path, ParallelConfig(cfg=2))
    results = run_ranks(_deploy_scenario, 2, str(path))
    for r in results:
        assert r["diff"] <= 1e-4  # the cached, meshed output is the cached single-device one
        assert r["restored"]  # remove() gives the plain pipeline back bit for bit
    assert torch.equal(results[0]["latents"], results[1]["latents"])


def _cli(*args, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "mindiesd_tune.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.slow
def test_run_and_bench_launch_the_rank_group(tmp_path):
    mesh = _profile(tmp_path, ParallelConfig(cfg=2))
    single = _profile(tmp_path, ParallelConfig(), name="single.yaml")
    a = _cli("run", "demo-flux", "--profile", mesh, "--prompt", "a red circle", "--out", tmp_path / "mesh.png")
    assert a.returncode == 0, a.stderr[-2000:]
    assert a.stdout.count("mesh.png") == 1  # rank 0 alone writes and speaks
    b = _cli("run", "demo-flux", "--profile", single, "--prompt", "a red circle", "--out", tmp_path / "single.png")
    assert b.returncode == 0, b.stderr[-2000:]
    diff = np.abs(np.asarray(Image.open(tmp_path / "mesh.png"), dtype=int) - np.asarray(Image.open(tmp_path / "single.png"), dtype=int))
    assert diff.max() <= 1
    assert not list(tmp_path.glob("mesh-*.png"))

    c = _cli("bench", "demo-flux", "--profile", mesh, "--json", "--repeats", "2", "--precision", "0", "--warmup", "0")
    assert c.returncode == 0, c.stderr[-2000:]
    lines = [line for line in c.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["speedup"] > 0 and (result["psnr"] == "inf" or result["psnr"] > 40)

    # a failing rank group's exit code comes back: an output the model cannot write is a user error
    d = _cli("run", "demo-flux", "--profile", mesh, "--prompt", "a red circle", "--out", tmp_path / "mesh.gif")
    assert d.returncode == 2 and "mindiesd-tune: error:" in d.stderr
    # one line from rank 0; neither the other rank's copy nor the launcher's failure report
    assert d.stderr.count("error:") == 1 and "Traceback" not in d.stderr and "ChildFailedError" not in d.stderr, d.stderr


@pytest.mark.parametrize("recorded, expected", [(2, 0), (1, 1)])
def test_a_rank_dying_in_teardown_after_its_command_ended_does_not_fail_the_group(monkeypatch, recorded, expected):
    import signal

    from mindiesd_tune.accel.parallel import launch

    # a stand-in launcher: the ranks note their exit codes, then the group dies as a C++ teardown abort would
    script = ("import os, signal; d = os.environ['MINDIESD_TUNE_RANK_EXIT_DIR']\n"
              f"for r in range({recorded}): open(os.path.join(d, f'exit-{{r}}'), 'w').write('0')\n"
              f"os.kill(os.getpid(), {int(signal.SIGABRT)})")
    monkeypatch.setattr(launch, "torchrun_command", lambda nproc, module, *args: [sys.executable, "-c", script])
    assert launch.run_cli_group(2, ["run"]) == expected
