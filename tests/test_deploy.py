"""apply_profile checks the pipeline and the machine against the profile before applying it."""

import warnings

import pytest
import torch

from mindiesd_tune import (
    AccelConfig,
    Handle,
    ProfileMismatchError,
    ProfileMismatchWarning,
    apply_profile,
    check_profile,
)
from mindiesd_tune.accel import FirstBlockCacheConfig
from mindiesd_tune.kernels import hardware_info
from mindiesd_tune.profile import Profile, model_fingerprint, pipeline_dtype


def _profile_for(loaded, **changes):
    model = {"name": loaded.name, "family": loaded.family, "pipeline": type(loaded.pipe).__name__,
             "fingerprint": model_fingerprint(loaded.pipe), "dtype": pipeline_dtype(loaded.pipe)}
    hardware = hardware_info(loaded.pipe.device)
    for key, value in changes.items():
        section, name = key.split(".")
        (model if section == "model" else hardware)[name] = value
    return Profile(model=model, generation={}, accel=AccelConfig(cache=FirstBlockCacheConfig(threshold=0.1)),
                   hardware=hardware)


def test_matching_profile_applies_silently_and_returns_the_handle(tiny_flux):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProfileMismatchWarning)
        handle = apply_profile(tiny_flux.pipe, _profile_for(tiny_flux), strict=True)
    try:
        assert isinstance(handle, Handle) and handle.active and handle.config.cache.threshold == 0.1
    finally:
        handle.remove()


def test_mismatch_warns_naming_every_field_that_differs(tiny_flux):
    prof = _profile_for(tiny_flux, **{"model.pipeline": "WanPipeline", "model.family": "dit-video",
                                      "hardware.torch": "1.0.0", "hardware.name": "Ascend910B"})
    with pytest.warns(ProfileMismatchWarning) as record:
        handle = apply_profile(tiny_flux.pipe, prof)
    handle.remove()
    msg = str(record[0].message)
    assert "model.pipeline is FluxPipeline here, WanPipeline in the profile" in msg
    assert "model.family is dit-image here, dit-video in the profile" in msg
    assert f"hardware.torch is {torch.__version__.split('+')[0]} here, 1.0.0 in the profile" in msg
    assert "hardware.name" in msg and "Ascend910B" in msg
    assert "fingerprint" not in msg and "dtype" not in msg


def test_strict_raises_and_applies_nothing(tiny_flux):
    prof = _profile_for(tiny_flux, **{"model.dtype": "bfloat16", "hardware.device": "cuda"})
    with pytest.raises(ProfileMismatchError) as e:
        apply_profile(tiny_flux.pipe, prof, strict=True)
    assert [m.field for m in e.value.mismatches] == ["model.dtype", "hardware.device"]
    assert "model.dtype is float32 here, bfloat16 in the profile" in str(e.value)
    apply_profile(tiny_flux.pipe, _profile_for(tiny_flux), strict=True).remove()  # nothing was left applied


def test_changed_weights_change_the_fingerprint(tiny_flux):
    prof = _profile_for(tiny_flux)
    p = next(tiny_flux.pipe.transformer.parameters())
    original = p.detach().clone()
    with torch.no_grad():
        p.view(-1)[0] += 1.0
        try:
            assert [m.field for m in check_profile(tiny_flux.pipe, prof)] == ["model.fingerprint"]
        finally:
            p.copy_(original)
    assert check_profile(tiny_flux.pipe, prof) == []


def test_fields_the_profile_leaves_empty_are_not_checked(tiny_flux):
    prof = _profile_for(tiny_flux, **{"model.fingerprint": None, "model.dtype": None})
    prof.hardware = {}
    assert check_profile(tiny_flux.pipe, prof) == []
