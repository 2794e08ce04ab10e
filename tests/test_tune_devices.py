"""tune --devices N: every trial spans a group of gloo ranks on the CPU, its meshes are searched
against the single device using the group's threads, and nothing is left running afterwards."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import cli
from mindiesd_tune.errors import UserError
from mindiesd_tune.tuner import TuneOptions, parse_budget, run_study
from mindiesd_tune.tuner.budget import Budget
from mindiesd_tune.tuner.outputs import freeze_profile
from mindiesd_tune.tuner.pool import worker_specs
from mindiesd_tune.tuner.progress import header_lines
from mindiesd_tune.tuner.worker import WorkerSpec

MARK = "MINDIESD_TUNE_TEST_MARK"


def _marked(mark: str) -> list[int]:
    """Processes other than this one started with ``MARK=mark`` in their environment: children
    and their children, also those orphaned when their parent went."""
    found = []
    needle = f"{MARK}={mark}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().split(")")[-1].split()[0]
                if state != "Z":  # a zombie is gone, only not yet reaped
                    found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


@pytest.mark.parametrize("fields, needle", [
    ({"devices": 0}, "--devices 0"),
    ({"devices": 3, "workers": 2}, "--workers 2 does not divide --devices 3"),
    ({"devices": 2, "isolate": False}, "--no-isolate with 2 devices per worker"),
    ({"devices": 4, "workers": 2, "worker_factory": "fakes:make_fake"}, "worker factory"),
])
def test_devices_the_workers_cannot_share_are_refused(fields, needle):
    with pytest.raises(UserError, match=needle):
        TuneOptions(**fields).validate()


def test_ranks_per_worker():
    assert TuneOptions().ranks_per_worker(None) == 1  # the CPU by default: one process, as before
    assert TuneOptions(workers=2).ranks_per_worker(None) == 1
    assert TuneOptions().ranks_per_worker(4) == 4  # every visible accelerator
    assert TuneOptions(workers=2).ranks_per_worker(8) == 4
    assert TuneOptions(workers=3).ranks_per_worker(2) == 1  # more workers than devices share them
    assert TuneOptions(isolate=False).ranks_per_worker(4) == 1  # in this process: one device
    assert TuneOptions(devices=4, workers=2).ranks_per_worker(None) == 2  # CPU groups when asked for
    assert TuneOptions(devices=2, workers=2).ranks_per_worker(8) == 1


def test_each_rank_gets_its_share_of_the_cpu_and_each_group_its_own_gpus(monkeypatch):
    import mindiesd_tune.kernels as kernels

    base = WorkerSpec(model="m", device="cpu")
    cpus = os.cpu_count() or 1
    specs = worker_specs(base, 2, ranks=2)
    assert [s.threads for s in specs] == [max(1, cpus // 4)] * 2
    assert worker_specs(base, 1)[0].threads is None  # one process: torch's own default
    monkeypatch.setattr(kernels, "device_count", lambda device: 8)
    gpus = worker_specs(WorkerSpec(model="m", device="cuda"), 2, ranks=4)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in gpus] == ["0,1,2,3", "4,5,6,7"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in worker_specs(WorkerSpec(model="m", device="cuda"), 2)] == ["0", "1"]


def test_the_header_names_the_ranks_per_trial_and_the_meshes():
    info = {"model": {"pipeline": "FluxPipeline", "family": "dit-image", "dtype": "float32"},
            "workload": {"generation": {}, "prompts": ["a"], "seeds": [0]},
            "hardware": {"device": "cpu", "name": "x86_64", "count": 1},
            "space": {"world_size": 2, "meshes": ["single", "cfg2", "ulysses2"]},
            "rank_group": {"world_size": 2}}
    lines = header_lines("demo-flux", info, Budget(trials=4), [], None, "tpe", "sqlite:///x", "psnr")
    assert "device:    cpu x86_64, 2 ranks per trial (cfg2, ulysses2 possible)" in lines


def test_cli_refuses_workers_that_do_not_divide_the_devices(capsys, tmp_path):
    code, out, err = cli(capsys, "tune", "demo-flux", "--devices", "3", "--workers", "2", "--out", str(tmp_path / "run"))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--workers 2" in lines[0] and "--devices 3" in lines[0], err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_study_on_two_cpu_ranks_searches_the_meshes(tmp_path, monkeypatch, capfd):
    mark = uuid.uuid4().hex
    monkeypatch.setenv(MARK, mark)  # the rank processes inherit it: found again even if orphaned
    monkeypatch.setenv("DIFFUSERS_VERBOSITY", "error")  # what the CLI sets without --verbose
    lines, seen = [], []

    def log(line):
        lines.append(line)
        seen.append(len(_marked(mark)))

    outcome = run_study("demo-flux", parse_budget("4t"), tmp_path, devices=2, repeats=1, warmup=0,
                        prompts=["a red circle"], generation={"num_inference_steps": 4}, log=log, progress=False,
                        baseline_cache=None)
    assert max(seen) >= 3, "no rank group ran"  # the launcher and its 2 ranks
    assert any("2 ranks per trial (cfg2" in line for line in lines), lines
    trials = {t.params.get("parallel.mesh"): t for t in outcome.study.trials if t.state.name == "COMPLETE"}
    assert "cfg2" in trials and "single" in trials, {t.number: (t.state, t.user_attrs.get("fail_reason"))
                                                     for t in outcome.study.trials}
    assert "ulysses2" in trials  # the other mesh preset, ahead of the single-device ones
    err = capfd.readouterr().err
    assert "FutureWarning" not in err and "_pytree" not in err, err  # the ranks kept quiet too
    cfg = trials["cfg2"]
    assert cfg.user_attrs["metrics"]["psnr"] > 60  # CFG parallel is exact up to rounding
    assert cfg.user_attrs["speedup"] > 0 and cfg.user_attrs["baseline_latency"] is not None
    # the baseline the meshes are set against: rank 0 alone with both ranks' threads
    assert outcome.study.user_attrs["hardware"]["threads"] == 2 * max(1, (os.cpu_count() or 1) // 2)

    data = yaml.safe_load((tmp_path / "profile.yaml").read_text())
    picked = outcome.profile.accel.parallel.world_size
    assert data["hardware"]["world_size"] == picked
    assert freeze_profile(outcome.study, cfg).hardware["world_size"] == 2
    assert freeze_profile(outcome.study, trials["single"]).hardware["world_size"] == 1

    assert not _marked(mark), "the study left rank processes behind"
