"""The quant section in the product: registry entries, search space, YAML, show, apply_profile."""

import subprocess
import sys

import numpy as np
import optuna
import pytest
import yaml

from conftest import cli, generate
from mindiesd_tune.accel import AccelConfig, apply
from mindiesd_tune.accel import quant as Q
from mindiesd_tune.accel.methods import method_names
from mindiesd_tune.profile import (
    Profile,
    load_profile,
    model_fingerprint,
    pipeline_dtype,
)
from mindiesd_tune.search_spaces import (
    SpaceContext,
    config_from_params,
    neutral_params,
    offered,
    presets,
    suggest,
)


def test_every_scheme_is_a_registered_entry_accepted_by_accelconfig():
    assert method_names("quant") == sorted(Q.SCHEMES)
    for scheme, kind in Q.SCHEME_CONFIGS.items():
        cfg = AccelConfig(quant=kind(precision={"denoiser": "bfloat16"})).validate()
        again = AccelConfig.from_yaml(cfg.to_yaml())
        assert again == cfg and type(again.quant) is kind, scheme


def test_show_prints_the_quant_section():
    assert dict(AccelConfig(quant=Q.W8A16Config(components=())).summary())["quant"] == "none"  # quantises nothing
    assert dict(AccelConfig().summary())["quant"] == "off"
    line = dict(AccelConfig(quant=Q.W8A8Config(skip_first_blocks=1, precision={"vae": "bfloat16"})).summary())["quant"]
    assert line == "w8a8 on denoiser, skip first 1 blocks; precision vae=bfloat16"


def test_the_space_offers_what_the_device_runs():
    cpu = SpaceContext(n_blocks=4, device="cpu", dtype="float32")
    assert offered("quant", "dit-image", cpu) == ["none", "w8a16", "w8a8"]  # no float8 or int4 kernel on the CPU
    base = neutral_params("dit-image", cpu)
    assert base["quant.scheme"] == "none" and base["quant.precision.denoiser"] is None
    assert config_from_params(base).is_neutral
    quant_presets = [p for p in presets("dit-image", cpu) if p["quant.scheme"] != "none" or p["quant.precision.denoiser"]]
    configs = [config_from_params(p) for p in quant_presets]
    assert {(c.quant.scheme, c.quant.precision.get("denoiser"), c.cache.method) for c in configs} == {
        ("none", "bfloat16", "none"), ("none", "bfloat16", "first_block"), ("w8a16", None, "none")}


def test_precision_and_schemes_are_sampled_beside_caching():
    ctx = SpaceContext(n_blocks=4, device="cpu", dtype="float32")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        config = suggest(trial, "dit-image", ctx)
        seen.add((config.quant.scheme, config.quant.precision.get("denoiser"), config.cache.method != "none"))
        study.tell(trial, 0.0)
    assert {s for s, _, _ in seen} == {"none", "w8a16", "w8a8"}
    assert {p for _, p, _ in seen} == {None, "bfloat16", "float16"}
    assert {c for _, _, c in seen} == {False, True}
    params = study.trials[-1].params
    assert {"quant.scheme", "quant.precision.denoiser", "quant.precision.text_encoder", "quant.precision.vae"} <= set(params)


def test_describe_records_device_and_load_dtype(tiny_flux):
    from mindiesd_tune.search_spaces import describe

    ctx = describe(tiny_flux.pipe, tiny_flux.generation)
    assert (ctx.device, ctx.dtype) == ("cpu", "float32")


def _profile(loaded, quant):
    return Profile(
        model={"name": loaded.name, "family": loaded.family, "pipeline": type(loaded.pipe).__name__,
               "fingerprint": model_fingerprint(loaded.pipe), "dtype": pipeline_dtype(loaded.pipe)},
        generation=dict(loaded.generation), accel=AccelConfig(quant=quant),
        measured={"latency_s": 0.1, "baseline_s": 0.2, "speedup": 2.0, "psnr": 40.0, "ssim": 0.99, "feasible": True},
        hardware={"device": "cpu"}, study={"name": "q", "trial": 1, "prompts": ["a"], "seeds": [0]},
    )


def test_a_quant_profile_round_trips_through_yaml_validate_and_show(capsys, tiny_flux, tmp_path):
    quant = Q.W8A16Config(skip_last_blocks=1, precision={"denoiser": "bfloat16"})
    path = _profile(tiny_flux, quant).save(tmp_path / "q.yaml")
    assert yaml.safe_load(path.read_text())["accel"]["quant"]["components"] == ["denoiser"]
    assert load_profile(path).accel.quant == quant
    code, out, err = cli(capsys, "validate", str(path))
    assert code == 0, err
    code, out, _ = cli(capsys, "show", str(path))
    assert code == 0 and "w8a16 on denoiser, skip last 1 blocks; precision denoiser=bfloat16" in out


def test_a_schema_2_quant_none_section_migrates_unchanged(tmp_path, tiny_flux):
    data = _profile(tiny_flux, Q.NoQuantConfig()).to_dict()
    data["schema"] = 2
    del data["accel"]["steps"]
    data["accel"]["quant"] = {"scheme": "none"}
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    p = load_profile(path)
    assert p.migrated_from == 2 and p.accel.quant == Q.NoQuantConfig()


def test_the_registry_and_show_leave_the_quant_installer_and_torchao_unimported():
    # the method modules import accel.quant's configs only; the installer (torch, torchao) loads when it runs
    code = ("import sys; import mindiesd_tune.accel.methods.quant; import mindiesd_tune.accel.quant as Q; "
            "from mindiesd_tune.accel import AccelConfig; AccelConfig(quant=Q.W8A16Config()).summary(); "
            "print(sorted(m for m in sys.modules if m.startswith(('torchao', 'mindiesd_tune.accel.quant.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['mindiesd_tune.accel.quant.config']"


def test_apply_profile_refuses_a_scheme_the_device_cannot_run_in_one_line(tiny_flux):
    from mindiesd_tune.deploy import apply_profile

    with pytest.raises(Q.QuantUnsupportedError) as e:
        apply_profile(tiny_flux.pipe, _profile(tiny_flux, Q.FP8W8A8Config()))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("quant.scheme fp8_w8a8 cannot run on cpu")


def test_apply_profile_keeps_no_original_weights_unless_asked(tiny_flux):
    from mindiesd_tune.deploy import apply_profile
    from mindiesd_tune.models import load

    loaded = load("tiny-flux-random", device="cpu")  # its weights are dropped: not the shared fixture
    prof = _profile(loaded, Q.NoQuantConfig(precision={"denoiser": "bfloat16"}))
    kept = apply_profile(tiny_flux.pipe, prof, keep_original=True)
    kept.remove()  # keep_original=True: remove() restores the float32 weights
    assert pipeline_dtype(tiny_flux.pipe) == "float32"
    handle = apply_profile(loaded.pipe, prof)
    assert handle.keep_original is False
    with pytest.raises(RuntimeError, match="original weights are gone"):
        handle.remove()


def test_a_quantised_trial_then_the_baseline_is_bit_for_bit(tiny_flux):
    base = generate(tiny_flux, num_inference_steps=2)
    handle = apply(tiny_flux.pipe, AccelConfig(quant=Q.W8A8Config(precision={"text_encoder": "bfloat16"})))
    try:
        quantised = generate(tiny_flux, num_inference_steps=2)
    finally:
        handle.remove()
    assert not np.array_equal(quantised, base)
    assert np.array_equal(generate(tiny_flux, num_inference_steps=2), base)


@pytest.fixture(scope="module")
def weight_capped_run(tmp_path_factory):
    """A short joint study on tiny-flux-random, weights capped below the float32 model's: the presets
    (baseline, caches, bfloat16 denoiser, first-block cache + bfloat16, w8a16) all run: the
    budget is as many trials as there are presets."""
    from mindiesd_tune.models import load
    from mindiesd_tune.search_spaces import SpaceContext, presets
    from mindiesd_tune.tuner import parse_budget, run_study
    from mindiesd_tune.tuner.worker import WorkerSpec, build_evaluator

    full = sum(Q.weight_bytes(load("tiny-flux-random", device="cpu").pipe).values())
    out = tmp_path_factory.mktemp("quant-run")
    space = SpaceContext.from_dict(build_evaluator(WorkerSpec("tiny-flux-random", repeats=1))[1]["space"])
    n = len(presets("dit-image", space))
    outcome = run_study("tiny-flux-random", parse_budget(f"{n}t"), out, objective="weight_bytes", floors=[],
                        max_weight_bytes=int(full * 0.9), repeats=1, isolate=False, log=lambda s: None)
    return out, outcome, full


@pytest.mark.slow
def test_a_joint_study_samples_quant_beside_caching_and_records_weights_and_setup(weight_capped_run):
    _, outcome, full = weight_capped_run
    trials = [t for t in outcome.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    schemes = {(t.params["quant.scheme"], t.params["quant.precision.denoiser"], t.params["cache.method"]) for t in trials}
    assert {("none", None, "none"), ("none", "bfloat16", "none"), ("none", "bfloat16", "first_block"),
            ("w8a16", None, "none")} <= schemes
    for t in trials:
        counters = t.user_attrs["counters"]
        assert counters["setup_s"] >= 0 and sum(counters["weight_bytes_by_component"].values()) == counters["weight_bytes"]
        assert t.values[1] == counters["weight_bytes"]  # --objective weight_bytes: the second axis, minimised
        assert t.constraints["weight_bytes"] == pytest.approx((counters["weight_bytes"] - int(full * 0.9)) / 2**20)
    base = trials[0]
    assert base.user_attrs["counters"]["weight_bytes"] == full
    w8 = next(t for t in trials if t.params["quant.scheme"] == "w8a16")
    assert w8.user_attrs["counters"]["weight_bytes_by_component"]["denoiser"] < \
        0.55 * base.user_attrs["counters"]["weight_bytes_by_component"]["denoiser"]
    assert outcome.study.directions[1] == optuna.study.StudyDirection.MINIMIZE


def test_the_weight_capped_profile_is_quantised_meets_the_cap_and_reproduces(weight_capped_run):
    import pandas as pd
    from PIL import Image

    from mindiesd_tune.deploy import apply_profile
    from mindiesd_tune.models import load
    from mindiesd_tune.tuner.evaluator import to_uint8

    out, outcome, full = weight_capped_run
    prof = load_profile(out / "profile.yaml")
    quant = prof.accel.quant
    assert quant.quantises or quant.precision
    chosen = outcome.study.trials[prof.study["trial"]]
    assert chosen.user_attrs["counters"]["weight_bytes"] <= full * 0.9 and prof.measured["feasible"]
    assert prof.measured["weight_bytes"] == chosen.user_attrs["counters"]["weight_bytes"]
    fresh = load("tiny-flux-random", device="cpu")
    apply_profile(fresh.pipe, out / "profile.yaml")  # production: no originals kept, nothing to remove
    assert sum(Q.weight_bytes(fresh.pipe).values()) == chosen.user_attrs["counters"]["weight_bytes"]
    img = to_uint8(generate(fresh, prompt=prof.study["prompts"][0], seed=prof.study["seeds"][0], **prof.call_kwargs()))
    saved = np.asarray(Image.open(out / "samples" / f"trial-{prof.study['trial']:04d}.png"))
    assert np.array_equal(img, saved)
    assert "weight_mb" in pd.read_csv(out / "trials.csv").columns
    page = (out / "report.html").read_text()
    assert "weights MB" in page and "weight cap" in page


@pytest.mark.parametrize("args,needle", [
    (["--max-weight-bytes", "lots"], "--max-weight-bytes 'lots': not a size"),
    (["--max-weight-bytes", "0MB"], "--max-weight-bytes '0MB': a size must be positive"),
    (["--max-memory", "lots"], "--max-memory 'lots': not a size"),
    (["--objective", "weights"], "unknown objective 'weights'"),
])
def test_the_cli_options_fail_in_one_line(capsys, tmp_path, args, needle):
    code, _, err = cli(capsys, "tune", "fake", "--out", str(tmp_path / "r"), "--budget", "1t", *args)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
