import pytest
import yaml

from mindiesd_tune import AccelConfig, ProfileError, load_profile
from mindiesd_tune.accel import FirstBlockCacheConfig
from mindiesd_tune.profile import Profile, model_fingerprint


def _profile():
    return Profile(
        model={"name": "tiny-flux-random", "family": "dit-image", "pipeline": "FluxPipeline", "fingerprint": "abc"},
        generation={"height": 32, "width": 32, "num_frames": None, "num_inference_steps": 10},
        accel=AccelConfig(cache=FirstBlockCacheConfig(threshold=0.1, warmup_steps=2)),
        measured={"latency_s": 0.1, "baseline_s": 0.2, "speedup": 2.0},
    )


def test_save_and_load_round_trip(tmp_path):
    path = _profile().save(tmp_path / "p.yaml")
    again = load_profile(path)
    assert again.accel == _profile().accel and again.model == _profile().model
    assert again.call_kwargs() == {"height": 32, "width": 32, "num_inference_steps": 10}


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.update(schema=7), "schema"),
        (lambda d: d.pop("model"), "model"),
        (lambda d: d["model"].update(colour="red"), "model.colour"),
        (lambda d: d["generation"].update(height="tall"), "generation.height"),
        (lambda d: d["accel"]["cache"].update(threshold="high"), "accel.cache.threshold"),
        (lambda d: d.update(extras={}), "extras"),
    ],
)
def test_malformed_profile_names_the_field(tmp_path, mutate, field):
    data = _profile().to_dict()
    mutate(data)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ProfileError, match=field.replace(".", r"\.")) as e:
        load_profile(path)
    assert "\n" not in str(e.value)


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema: [1\n")
    with pytest.raises(ProfileError, match="YAML"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="no such"):
        load_profile(tmp_path / "missing.yaml")


def test_fingerprint_is_stable_and_sees_weight_changes(tiny_flux):
    import torch

    a = model_fingerprint(tiny_flux.pipe)
    assert a == model_fingerprint(tiny_flux.pipe)
    p = next(tiny_flux.pipe.transformer.parameters())
    original = p.detach().clone()
    with torch.no_grad():
        p.view(-1)[0] += 1.0
        try:
            assert model_fingerprint(tiny_flux.pipe) != a
        finally:
            p.copy_(original)  # exactly: the session's other tests share this pipeline
    assert model_fingerprint(tiny_flux.pipe) == a
