"""A rank killed (SIGKILL) in the middle of a meshed call ends the command within 30 s, non-zero, with one
line naming the rank, its signal and its last phase, and leaves no rank process behind: in
benchmarks/parallel.py's harness and in `mindiesd-tune run --profile` with a mesh. And a short run of
the mesh stress harness (benchmarks/mesh_stress.py) under the allocator's checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mindiesd_tune.accel.parallel.launch import pid_alive
from mindiesd_tune.accel.parallel.watch import read_phase, read_pid

ROOT = Path(__file__).resolve().parents[1]


def _kill_when(proc: subprocess.Popen, folder: Path, name, starts: str, limit: float = 600) -> tuple[int, str]:
    """SIGKILL process ``name`` of ``folder``'s phase log as soon as its phase starts with ``starts``."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        phase, pid = read_phase(folder, name), read_pid(folder, name)
        if phase and phase.startswith(starts) and pid:
            os.kill(pid, signal.SIGKILL)
            return pid, phase
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"{name} never reached {starts!r} (last phase {read_phase(folder, name)!r})")


def _ends_with_one_line(proc: subprocess.Popen, needle: str) -> str:
    killed = time.monotonic()
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("still running 30 s after a rank was killed")
    assert time.monotonic() - killed < 30
    assert proc.returncode != 0
    lines = [line for line in err.splitlines() if needle in line]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def _none_left(folder: Path) -> None:
    pids = [int(p.read_text()) for p in folder.glob("pid-*")]
    assert pids
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if pid_alive(p)], "processes left behind"


@pytest.mark.slow
def test_benchmark_parallel_ends_when_a_rank_is_killed_mid_call(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "parallel.py"), "--models", "demo-flux",
                             "--rounds", "20", "--json", "--phase-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    _, phase = _kill_when(proc, tmp_path, "rank1", "time demo-flux")
    line = _ends_with_one_line(proc, "rank 1")
    assert line == f"benchmarks/parallel.py: rank 1 was killed by SIGKILL (last phase: {phase})", line
    _none_left(tmp_path)


def _mesh_profile(tmp_path: Path) -> Path:
    from mindiesd_tune import AccelConfig
    from mindiesd_tune.accel.parallel import ParallelConfig
    from mindiesd_tune.models import load
    from mindiesd_tune.profile import Profile, model_fingerprint

    loaded = load("demo-flux", device="cpu")
    gen = {k: v for k, v in loaded.generation.items() if k in ("height", "width", "true_cfg_scale", "negative_prompt")}
    return Profile(
        model={"name": "demo-flux", "family": loaded.family, "pipeline": type(loaded.pipe).__name__,
               "fingerprint": model_fingerprint(loaded.pipe), "dtype": "float32"},
        generation={**gen, "num_inference_steps": 20}, accel=AccelConfig(parallel=ParallelConfig(ulysses=2)),
        study={"prompts": ["a red circle"], "seeds": [0]},
    ).save(tmp_path / "mesh.yaml")


@pytest.mark.slow
def test_run_with_a_mesh_profile_ends_when_a_rank_is_killed_mid_call(tmp_path):
    phases = tmp_path / "phases"
    phases.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MINDIESD_TUNE_PHASE_DIR": str(phases)}
    cmd = [sys.executable, "-m", "mindiesd_tune.cli", "run", "demo-flux", "--profile", str(_mesh_profile(tmp_path)),
           "--prompt", "a red circle", "--seeds", ",".join(map(str, range(50))), "--out", str(tmp_path / "out.png")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _, phase = _kill_when(proc, phases, 1, "call 2/")  # the first call is over: rank 0 is meshed too
    line = _ends_with_one_line(proc, "error:")
    assert line.startswith("mindiesd-tune: error: rank 1 was killed by SIGKILL (last phase: call"), line
    _none_left(phases)


@pytest.mark.slow
def test_mesh_stress_short_run_is_clean():
    sys.path.insert(0, str(ROOT))
    from benchmarks.mesh_stress import MESHES, MODELS, stress

    opts = {"models": list(MODELS), "meshes": list(MESHES), "calls": 24, "steps": 8, "cached": True,
            "malloc_check": True, "distributed_debug": False, "count_bytes": True}
    result = stress(opts, timeout=900)
    assert result["calls_per_rank"] == [24, 24]
    assert result["differing"] == []  # every repeat of a (model, mesh) is bit for bit its first output
