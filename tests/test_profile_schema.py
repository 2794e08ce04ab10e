"""The profile schema is versioned: older files migrate, unreadable ones are refused naming the version."""

import pytest
import yaml

from mindiesd_tune import AccelConfig, ProfileError, load_profile
from mindiesd_tune.accel import FirstBlockCacheConfig
from mindiesd_tune.profile import MIGRATIONS, SCHEMA_VERSION, Profile


def _profile(**model):
    return Profile(
        model={"name": "tiny-flux-random", "family": "dit-image", "pipeline": "FluxPipeline", "fingerprint": "abc",
               "dtype": "float32", **model},
        generation={"height": 32, "width": 32, "num_frames": None, "num_inference_steps": 10},
        accel=AccelConfig(cache=FirstBlockCacheConfig(threshold=0.1, warmup_steps=2)),
        measured={"latency_s": 0.1, "baseline_s": 0.2, "speedup": 2.0, "psnr": "inf", "ssim": 0.98, "feasible": True},
        hardware={"device": "cpu", "name": "x86_64", "count": 1, "torch": "2.14.1", "diffusers": "0.42.1"},
        study={"name": "s", "trial": 3, "prompts": ["a", "b"], "seeds": [0, 1]},
    )


def _write(tmp_path, data):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_every_schema_before_the_current_one_has_a_migration():
    assert SCHEMA_VERSION == 5
    assert sorted(MIGRATIONS) == list(range(min(MIGRATIONS), SCHEMA_VERSION))


def _schema_3(data: dict | None = None) -> dict:
    """A schema-3 file: the parallel section had cfg, ulysses and ring only, no world size was recorded."""
    data = data or _profile().to_dict()
    data["schema"] = 3
    data["accel"]["parallel"] = {"cfg": 1, "ulysses": 1, "ring": 1}
    del data["hardware"]["world_size"]
    return data


def test_schema_1_file_migrates_on_load(tmp_path):
    data = _schema_3()
    data["schema"] = 1
    del data["model"]["dtype"]  # schema 1 had no model.dtype
    p = load_profile(_write(tmp_path, data))
    assert p.schema == SCHEMA_VERSION and p.migrated_from == 1
    assert p.model["dtype"] is None and p.model["fingerprint"] == "abc"
    assert p.accel == _profile().accel
    again = load_profile(p.save(tmp_path / "again.yaml"))  # saving writes the current schema
    assert yaml.safe_load((tmp_path / "again.yaml").read_text())["schema"] == SCHEMA_VERSION
    assert again.migrated_from is None and again == p


def _schema_2(accel_cache: dict) -> dict:
    data = _schema_3()
    data["schema"] = 2
    del data["accel"]["steps"]  # schema 2 had no steps section
    data["accel"]["cache"] = accel_cache
    return data


def test_schema_2_step_reduction_becomes_the_steps_section(tmp_path):
    from mindiesd_tune.accel import NoCache, StepsConfig

    data = _schema_2({"method": "step_reduction", "num_inference_steps": 4, "scheduler": "unipc"})
    p = load_profile(_write(tmp_path, data))
    assert p.migrated_from == 2
    assert p.accel.steps == StepsConfig(num_inference_steps=4, scheduler="unipc") and p.accel.cache == NoCache()
    assert p.call_kwargs()["num_inference_steps"] == 4
    saved = yaml.safe_load(p.save(tmp_path / "again.yaml").read_text())
    assert saved["schema"] == SCHEMA_VERSION and saved["accel"]["cache"] == {"method": "none"}
    assert saved["accel"]["steps"] == {"num_inference_steps": 4, "scheduler": "unipc", "batch_cfg": False}
    # other schema-2 caches are left as they were
    kept = load_profile(_write(tmp_path, _schema_2({"method": "first_block", "threshold": 0.1, "warmup_steps": 2})))
    assert kept.accel == _profile().accel


def test_schema_3_file_migrates_recording_one_rank(tmp_path):
    p = load_profile(_write(tmp_path, _schema_3()))
    assert p.migrated_from == 3 and p.hardware["world_size"] == 1 and p.world_size == 1
    assert p.accel == _profile().accel and p.accel.parallel.is_neutral
    saved = yaml.safe_load(p.save(tmp_path / "again.yaml").read_text())
    assert saved["schema"] == SCHEMA_VERSION and saved["hardware"]["world_size"] == 1
    assert saved["accel"]["parallel"] == {"cfg": 1, "ring": 1, "ulysses": 1, "tensor": 1, "vae": 1, "vae_halo": 2}


def test_schema_4_file_migrates_without_batched_cfg_calls(tmp_path):
    data = _profile().to_dict()
    data["schema"] = 4
    del data["accel"]["steps"]["batch_cfg"]  # schema 4 files did not batch the CFG branches
    p = load_profile(_write(tmp_path, data))
    assert p.migrated_from == 4 and p.accel.steps.batch_cfg is False and p.accel == _profile().accel
    # files written while the key was new but the schema still 4 read as they were
    data["accel"]["steps"]["batch_cfg"] = True
    assert load_profile(_write(tmp_path, data)).accel.steps.batch_cfg is True


def test_schema_4_carries_the_mesh_and_its_world_size(tmp_path):
    from mindiesd_tune.accel import ParallelConfig

    prof = _profile()
    prof = Profile(prof.model, prof.generation, AccelConfig(cache=prof.accel.cache, parallel=ParallelConfig(cfg=2, ulysses=2, vae=2)),
                   prof.measured, {k: v for k, v in prof.hardware.items() if k != "world_size"}, prof.study)
    assert prof.hardware["world_size"] == 4 == prof.world_size
    saved = yaml.safe_load(prof.save(tmp_path / "mesh.yaml").read_text())
    assert saved["accel"]["parallel"] == {"cfg": 2, "ring": 1, "ulysses": 2, "tensor": 1, "vae": 2, "vae_halo": 2}
    assert saved["hardware"]["world_size"] == 4
    assert load_profile(tmp_path / "mesh.yaml") == prof
    # a mesh that is no mesh is refused naming the field
    bad = _schema_3(prof.to_dict())
    bad["accel"]["parallel"] = {"cfg": 3}
    with pytest.raises(ProfileError, match=r"accel\.parallel.*cfg=3"):
        load_profile(_write(tmp_path, bad))
    bad["accel"]["parallel"] = {"cfg": 2, "pipeline": 2}
    with pytest.raises(ProfileError, match="unknown"):
        load_profile(_write(tmp_path, bad))


def test_schema_3_refuses_step_reduction_as_a_cache_method(tmp_path):
    data = _profile().to_dict()
    data["accel"]["cache"] = {"method": "step_reduction", "num_inference_steps": 4}
    with pytest.raises(ProfileError, match=r"accel\.cache\.method: 'step_reduction' is not a cache method"):
        load_profile(_write(tmp_path, data))


def test_schema_1_file_with_a_dtype_is_refused_naming_the_field(tmp_path):
    data = _profile().to_dict()
    data["schema"] = 1
    data["model"]["dtype"] = 32
    with pytest.raises(ProfileError, match=r"model\.dtype: 32 must be"):
        load_profile(_write(tmp_path, data))


@pytest.mark.parametrize(
    "schema, needle",
    [
        (6, "schema: 6 is newer than this mindiesd-tune reads (schema 5 at most); upgrade"),
        (0, "schema: 0 is too old to read; this version reads schema 1 to 5"),
        ("two", "schema: 'two' must be an integer"),
        (None, "schema: None must be an integer"),
    ],
)
def test_unreadable_schema_is_refused_saying_which_version_is_needed(tmp_path, schema, needle):
    data = _profile().to_dict()
    data["schema"] = schema
    with pytest.raises(ProfileError) as e:
        load_profile(_write(tmp_path, data))
    assert needle in str(e.value)


def test_missing_schema_says_what_to_write(tmp_path):
    data = _profile().to_dict()
    del data["schema"]
    with pytest.raises(ProfileError, match="schema: missing; a profile starts with `schema: 5`"):
        load_profile(_write(tmp_path, data))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["model"].update(fingerprint=""), "model.fingerprint: '' must be"),
        (lambda d: d["model"].pop("family"), "model.family: missing"),
        (lambda d: d["generation"].update(num_inference_steps=2.5), "generation.num_inference_steps: 2.5 must be a positive integer"),
        (lambda d: d["generation"].update(height=0), "generation.height: 0 must be a positive integer"),
        (lambda d: d["generation"].update(negative_prompt=["", ""]), "generation.negative_prompt: ['', ''] must be a string"),
        (lambda d: d["generation"].update(true_cfg_scale="4"), "generation.true_cfg_scale: '4' must be a number"),
        (lambda d: d["measured"].update(speedup="fast"), "measured.speedup: 'fast' must be a number"),
        (lambda d: d["measured"].update(latency_s=-1), "measured.latency_s: -1 must be >= 0"),
        (lambda d: d["hardware"].update(count="two"), "hardware.count: 'two' must be an integer"),
        (lambda d: d["hardware"].update(extra=[1, 2]), "hardware.extra: [1, 2] must be a plain value"),
        (lambda d: d["study"].update(seeds=[0]), "study.seeds: [0] must give one seed per prompt (2 prompts)"),
        (lambda d: d["study"].update(prompts=["a", 7]), "study.prompts[1]: 7 must be a string"),
        (lambda d: d.update(measured=[1]), "measured: [1] must be a mapping"),
        (lambda d: d.update(extras={"a": 1}), "extras: unknown section {'a': 1}"),
        (lambda d: d["accel"]["cache"].update(threshold="high"), "accel.cache.threshold: 'high' must be a number"),
        (lambda d: d["accel"]["cache"].update(threshold=-1.0), "accel.cache.threshold: -1.0 must be >= 0"),
        (lambda d: d["accel"]["cache"].update(colour="red"), "accel.cache.colour: unknown field 'red' (known:"),
        (lambda d: d["accel"].update(turbo={"on": True}), "accel.turbo: unknown section {'on': True} (known:"),
        (lambda d: d["accel"]["cache"].update(method="magic"), "accel.cache.method: 'magic' is not a cache method"),
    ],
)
def test_bad_field_is_named_with_its_value(tmp_path, mutate, message):
    data = _profile().to_dict()
    mutate(data)
    with pytest.raises(ProfileError) as e:
        load_profile(_write(tmp_path, data))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_first_bad_field_in_file_order_is_the_one_named(tmp_path):
    data = _profile().to_dict()
    data["generation"]["height"] = "tall"
    data["hardware"]["count"] = "two"
    with pytest.raises(ProfileError, match="generation.height") as e:
        load_profile(_write(tmp_path, data))
    assert "hardware" not in str(e.value)


def test_open_sections_accept_new_scalar_fields(tmp_path):
    data = _profile().to_dict()
    data["measured"]["clip_score"] = 0.31
    data["hardware"]["driver"] = "550.1"
    p = load_profile(_write(tmp_path, data))
    assert p.measured["clip_score"] == 0.31 and p.hardware["driver"] == "550.1"


def test_true_cfg_settings_round_trip_into_the_call(tmp_path):
    data = _profile().to_dict()
    data["generation"].update(true_cfg_scale=4.0, negative_prompt="")
    p = load_profile(_write(tmp_path, data))
    kw = p.call_kwargs()
    assert kw["true_cfg_scale"] == 4.0 and kw["negative_prompt"] == ""  # "" is a prompt, not a missing value
