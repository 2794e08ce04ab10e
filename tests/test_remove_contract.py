"""The one contract of ``handle.remove()``: it gives the pipeline back bit for bit, or, when the
install dropped original weights, it refuses before taking anything off; ``handle.removable``
says which, decided when the config is applied.

A profile that casts the denoiser to bfloat16 (what a short demo-flux study picks) is the case:
with ``keep_original=True`` it is removable; by default ``apply_profile`` frees the float32
weights, and ``remove()`` says so and leaves the pipeline accelerated as it was.
"""

import numpy as np
import pytest
import torch

from conftest import generate
from mindiesd_tune.accel import AccelConfig, FirstBlockCacheConfig, NotRemovableError, apply
from mindiesd_tune.accel import quant as Q
from mindiesd_tune.deploy import apply_profile
from mindiesd_tune.models import load
from mindiesd_tune.profile import Profile, model_fingerprint, pipeline_dtype

BF16 = Q.NoQuantConfig(precision={"denoiser": "bfloat16"})
CACHE = FirstBlockCacheConfig(threshold=10.0, warmup_steps=1)  # skips every step after the first


def _profile(loaded, **accel):
    return Profile(
        model={"name": loaded.name, "family": loaded.family, "pipeline": type(loaded.pipe).__name__,
               "fingerprint": model_fingerprint(loaded.pipe), "dtype": pipeline_dtype(loaded.pipe)},
        generation=dict(loaded.generation), accel=AccelConfig(**accel),
        measured={"latency_s": 0.1, "baseline_s": 0.2, "speedup": 2.0, "psnr": 40.0, "ssim": 0.99, "feasible": True},
        hardware={"device": "cpu"}, study={"name": "r", "trial": 1, "prompts": ["a"], "seeds": [0]},
    )


def test_a_bfloat16_profile_applied_to_be_removed_gives_the_pipeline_back_bit_for_bit(tiny_flux):
    base = generate(tiny_flux, num_inference_steps=2)
    handle = apply_profile(tiny_flux.pipe, _profile(tiny_flux, quant=BF16, cache=CACHE),
                           keep_original=True)
    assert handle.removable and next(tiny_flux.pipe.transformer.parameters()).dtype == torch.bfloat16
    assert not np.array_equal(generate(tiny_flux, num_inference_steps=2), base)
    handle.remove()
    assert not handle.active and pipeline_dtype(tiny_flux.pipe) == "float32"
    assert np.array_equal(generate(tiny_flux, num_inference_steps=2), base)


def test_a_bfloat16_profile_deployed_by_default_refuses_remove_and_takes_nothing_off():
    loaded = load("tiny-flux-random", device="cpu")  # its float32 weights are dropped: not the shared fixture
    handle = apply_profile(loaded.pipe, _profile(loaded, quant=BF16, cache=CACHE))
    accelerated = generate(loaded, num_inference_steps=2)
    assert not handle.removable and "not removable" in repr(handle)
    with pytest.raises(NotRemovableError, match=r"^this handle cannot be removed, nothing was taken off: transformer: "
                                                r"cast to bfloat16 without keep_original, so its original weights are gone"):
        handle.remove()
    # still installed, every section of it: the same output as before the refused call
    assert handle.active and np.array_equal(generate(loaded, num_inference_steps=2), accelerated)
    assert handle.stats()["blocks_skipped"] > 0


def test_a_profile_that_replaces_no_weights_is_removable_whatever_keep_original_says(tiny_flux):
    base = generate(tiny_flux, num_inference_steps=2)
    handle = apply_profile(tiny_flux.pipe, _profile(tiny_flux, cache=CACHE))
    assert handle.removable
    handle.remove()
    assert np.array_equal(generate(tiny_flux, num_inference_steps=2), base)


def test_accel_apply_keeps_the_originals_by_default(tiny_flux):
    with apply(tiny_flux.pipe, AccelConfig(quant=BF16)) as handle:
        assert handle.removable and handle.keep_original
    assert pipeline_dtype(tiny_flux.pipe) == "float32"
