"""show, validate, diff and bench: the profile commands, on profiles made for tiny-flux-random."""

import json

import pytest
import yaml

from conftest import cli
from mindiesd_tune.accel import AccelConfig, FirstBlockCacheConfig
from mindiesd_tune.kernels import hardware_info
from mindiesd_tune.profile import Profile, model_fingerprint, pipeline_dtype


def make_profile(loaded, threshold=0.3, **model):
    return Profile(
        model={"name": loaded.name, "family": loaded.family, "pipeline": type(loaded.pipe).__name__,
               "fingerprint": model_fingerprint(loaded.pipe), "dtype": pipeline_dtype(loaded.pipe), **model},
        generation=dict(loaded.generation),
        accel=AccelConfig(cache=FirstBlockCacheConfig(threshold=threshold, warmup_steps=1)),
        measured={"latency_s": 0.1, "baseline_s": 0.2, "speedup": 2.0, "psnr": "inf", "ssim": 0.99, "feasible": True},
        hardware=hardware_info(loaded.pipe.device),
        study={"name": "tiny", "trial": 4, "created": "2026-11-25T20:00:00+00:00",
               "prompts": ["a red circle on a blue background"], "seeds": [3]},
    )


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
    from mindiesd_tune.models import load

    tiny_flux = load("tiny-flux-random", device="cpu")  # fresh, as bench loads it: no other test touched it
    d = tmp_path_factory.mktemp("profiles")
    return {
        "a": make_profile(tiny_flux).save(d / "a.yaml"),
        "b": make_profile(tiny_flux, threshold=0.1).save(d / "b.yaml"),
        "elsewhere": make_profile(tiny_flux, fingerprint="0000000000000000").save(d / "elsewhere.yaml"),
        "other-machine": _on_another_machine(make_profile(tiny_flux)).save(d / "other-machine.yaml"),
        "sd3": _sd3_profile(tiny_flux).save(d / "sd3.yaml"),
    }


def _on_another_machine(p):
    p.hardware.update(torch="1.0.0")
    return p


def _sd3_profile(loaded):
    """A profile tuned for a 1024x1024 SD3, as bench demo-flux --profile <an SD3 profile> was given one."""
    p = make_profile(loaded, name="my-sd3", pipeline="StableDiffusion3Pipeline", fingerprint="5d35d35d35d35d35")
    p.generation.update(height=1024, width=1024, num_inference_steps=28)
    return p


def _edit(path, tmp_path, change):
    data = yaml.safe_load(path.read_text())
    change(data)
    out = tmp_path / "edited.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def test_show_summarises_speed_quality_settings_and_origin(capsys, profiles):
    code, out, _ = cli(capsys, "show", str(profiles["a"]))
    assert code == 0
    for needle in ("tiny-flux-random  (FluxPipeline, family dit-image)  [schema 5]", "2.00x faster: 0.1 s against 0.2 s",
                   "psnr identical, ssim 0.99", "cache        first_block: threshold=0.3, warmup_steps=1",
                   "sparse       off", "steps        off", "tuned on:      cpu", "study:         tiny, trial 4",
                   '1 prompt(s), seeds 3: "a red circle on a blue background"'):
        assert needle in out, needle


def test_validate_names_the_first_bad_field_and_its_value(capsys, profiles, tmp_path):
    bad = _edit(profiles["a"], tmp_path, lambda d: (d["generation"].update(height="tall"), d["study"].update(trial="x")))
    code, out, err = cli(capsys, "validate", str(bad))
    assert code == 2 and out == ""
    assert err.strip() == f"mindiesd-tune: error: {bad}: generation.height: 'tall' must be a positive integer"


def test_validate_reads_an_older_schema_and_upgrades_it(capsys, profiles, tmp_path):
    old = _edit(profiles["a"], tmp_path, lambda d: (d.update(schema=1), d["model"].pop("dtype")))
    code, out, _ = cli(capsys, "validate", str(old))
    assert code == 0 and "OK (schema 1, read as schema 5" in out
    code, out, _ = cli(capsys, "show", str(old))
    assert "migrated from schema 1" in out
    code, out, _ = cli(capsys, "validate", "--upgrade", str(old))
    assert code == 0 and "rewritten from schema 1 to schema 5" in out
    assert yaml.safe_load(old.read_text())["schema"] == 5


def test_validate_upgrade_moves_a_schema_2_step_reduction_into_the_steps_section(capsys, profiles, tmp_path):
    def to_schema_2(d):
        d.update(schema=2)
        del d["accel"]["steps"]
        d["accel"]["cache"] = {"method": "step_reduction", "num_inference_steps": 4, "scheduler": "unipc"}

    old = _edit(profiles["a"], tmp_path, to_schema_2)
    code, out, _ = cli(capsys, "validate", "--upgrade", str(old))
    assert code == 0 and "rewritten from schema 2 to schema 5" in out
    accel = yaml.safe_load(old.read_text())["accel"]
    assert accel["steps"] == {"num_inference_steps": 4, "scheduler": "unipc", "batch_cfg": False} and accel["cache"] == {"method": "none"}
    code, out, _ = cli(capsys, "show", str(old))
    assert "steps        num_inference_steps=4, scheduler=unipc" in out and "cache        off" in out


def test_validate_refuses_a_newer_schema_saying_what_it_reads(capsys, profiles, tmp_path):
    new = _edit(profiles["a"], tmp_path, lambda d: d.update(schema=9))
    code, _, err = cli(capsys, "validate", str(new))
    assert code == 2 and "schema: 9 is newer than this mindiesd-tune reads (schema 5 at most)" in err


def test_diff_lists_the_fields_that_differ(capsys, profiles):
    code, out, _ = cli(capsys, "diff", str(profiles["a"]), str(profiles["a"]))
    assert code == 0 and "are the same profile" in out
    code, out, _ = cli(capsys, "diff", str(profiles["a"]), str(profiles["b"]))
    assert code == 1
    rows = [line.split() for line in out.strip().splitlines()]
    assert rows[0] == ["field", str(profiles["a"]), str(profiles["b"])]
    assert rows[1:-1] == [["accel.cache.threshold", "0.3", "0.1"]]
    assert "1 field(s) differ; those in accel change what the pipeline computes" in out


def test_bench_prints_one_json_object_with_baseline_profile_speedup_and_metrics(capsys, profiles):
    code, out, err = cli(capsys, "bench", "tiny-flux-random", "--profile", str(profiles["a"]), "--json",
                         "--repeats", "1", "--precision", "0", "--warmup", "0", "--device", "cpu")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    assert r["baseline_s"] > 0 and r["profile_s"] > 0
    assert r["speedup"] == pytest.approx(r["baseline_s"] / r["profile_s"], rel=1e-3)
    assert {"psnr", "ssim"} <= set(r) and 0 < r["ssim"] <= 1
    assert r["prompts"] == 1 and r["tuned_speedup"] == 2.0 and r["mismatches"] == []


def test_bench_json_keeps_the_precision_of_fast_calls(capsys, profiles, monkeypatch):
    from dataclasses import replace

    import mindiesd_tune.bench

    real = mindiesd_tune.bench.measure
    base_s, profile_s = 1.23456789e-4, 4.5678912e-5  # a small model on a fast GPU

    def measure(*args, **kwargs):
        m = real(*args, **kwargs)
        cmp = m.comparison
        return replace(m, comparison=replace(cmp, baseline=replace(cmp.baseline, median_s=base_s), speedup=base_s / profile_s,
                                             candidate=replace(cmp.candidate, median_s=profile_s)))

    monkeypatch.setattr(mindiesd_tune.bench, "measure", measure)
    code, out, err = cli(capsys, "bench", "tiny-flux-random", "--profile", str(profiles["a"]), "--json",
                         "--repeats", "1", "--precision", "0", "--warmup", "0", "--device", "cpu")
    assert code == 0, err
    r = json.loads(out)
    assert r["baseline_s"] == pytest.approx(1.23456789e-4, rel=1e-5)
    assert r["profile_s"] == pytest.approx(4.5678912e-5, rel=1e-5)
    assert r["speedup"] == pytest.approx(1.23456789e-4 / 4.5678912e-5, rel=1e-5)


def test_bench_refuses_a_profile_for_another_model_naming_the_fields(capsys, profiles):
    code, out, err = cli(capsys, "bench", "tiny-flux-random", "--profile", str(profiles["sd3"]), "--device", "cpu")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("mindiesd-tune: error:"), err
    for needle in ("tuned for another model", "model.name is tiny-flux-random here, my-sd3 in the profile",
                   "model.pipeline is FluxPipeline here, StableDiffusion3Pipeline in the profile",
                   "model.fingerprint is", "5d35d35d35d35d35 in the profile",
                   "generation size is 32x32 here, 1024x1024 in the profile", "--force"):
        assert needle in lines[0], needle
    assert "bench:" not in err and out == ""  # refused before any model call


@pytest.mark.slow
def test_bench_force_runs_another_models_profile_showing_each_call(capsys, profiles):
    code, out, err = cli(capsys, "bench", "tiny-flux-random", "--profile", str(profiles["elsewhere"]), "--force",
                         "--repeats", "1", "--precision", "0", "--warmup", "0", "--device", "cpu")
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in out.strip().splitlines()[1:] if line.strip()}
    assert rows["baseline"][3] == "1.00x" and rows["baseline"][4] == "identical"
    assert rows["profile"][2] == "s" and rows["profile"][3].endswith("x")
    assert "warning: the profile was tuned elsewhere: model.fingerprint" in err
    calls = [line for line in err.splitlines() if line.startswith("bench: ")]
    # every call is one of an interleaved round: quality is scored on the same outputs
    assert any(line.startswith("bench: interleaved call 1 (") for line in calls)
    assert calls[-2].startswith("bench: interleaved done: 2 call(s)")
    assert calls[-1] == "bench: done after 1 interleaved round(s); quality on 1 of 1 prompt(s)"


@pytest.mark.slow
def test_bench_on_another_machine_only_warns(capsys, profiles):
    code, out, err = cli(capsys, "bench", "tiny-flux-random", "--profile", str(profiles["other-machine"]), "--json",
                         "--repeats", "1", "--precision", "0", "--warmup", "0", "--device", "cpu")
    assert code == 0, err
    assert "hardware.torch is" in err and json.loads(out)["mismatches"] == ["hardware.torch"]


@pytest.mark.parametrize("command", ["show", "validate", "diff", "bench"])
def test_help(capsys, command):
    code, out, _ = cli(capsys, command, "--help")
    assert code == 0 and "Usage" in out


def test_run_with_a_profile_for_another_model_is_refused(capsys, profiles, tmp_path):
    code, out, err = cli(capsys, "run", "tiny-flux-random", "--prompt", "a red circle", "--out", str(tmp_path / "a.png"),
                         "--profile", str(profiles["sd3"]), "--device", "cpu")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "model.pipeline is FluxPipeline here" in lines[0] and "--force" in lines[0]
    assert not (tmp_path / "a.png").exists()


def test_run_with_a_profile_tuned_elsewhere_warns_in_one_line_with_force(capsys, profiles, tmp_path):
    code, out, err = cli(capsys, "run", "tiny-flux-random", "--prompt", "a red circle", "--out", str(tmp_path / "a.png"),
                         "--profile", str(profiles["elsewhere"]), "--device", "cpu", "--force")
    assert code == 0 and (tmp_path / "a.png").is_file()
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and warning[0].startswith("mindiesd-tune: warning: profile ") and "model.fingerprint" in warning[0]
