"""steps.batch_cfg: a true-CFG step's two denoiser calls run as one call over both batches.

The output must be the unbatched one up to the batched kernels' rounding, with every cache and
precision the config puts beside it; ``remove()`` gives the pipeline back bit for bit; pipelines
that make one call per step, or whose second call cannot be known before the first step, are
refused in one line naming the pipeline.
"""

import pytest
import torch

from mindiesd_tune.accel import AccelConfig, ConfigError, apply
from mindiesd_tune.accel.parallel.cfg import BATCH_HOOK_NAME
from mindiesd_tune.search_spaces import describe, presets
from tiny_pipelines import BUILDERS

# one negative prompt per prompt: Flux encodes a lone negative string once, for a batch of one,
# and the two calls then differ beyond their batch (batch_cfg runs them one after the other)
TRUE_CFG = {"true_cfg_scale": 4.0, "negative_prompt": ["a gray background"] * 2}
SCHEDULE = {"method": "schedule", "compute_steps": [0, 1, 3, 6, 9], "budget": 0.5}


def _run(loaded, **extra):
    gen = {**loaded.generation, **extra, "output_type": "latent"}
    with torch.inference_mode():
        return loaded.pipe(prompt=["a red circle", "a blue square"], generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
                           return_dict=False, **gen)[0]


def _merged(pipe) -> int:
    return pipe.transformer._diffusers_hook.get_hook(BATCH_HOOK_NAME).merged_calls


@pytest.mark.parametrize("beside", [{}, {"cache": SCHEDULE}, {"quant": {"scheme": "none", "precision": {"denoiser": "bfloat16"}}}],
                         ids=["alone", "schedule", "bf16"])
def test_flux_true_cfg_batched_gives_the_unbatched_output_and_remove_restores_it(tiny_flux, beside):
    base = _run(tiny_flux, **TRUE_CFG)
    handle = apply(tiny_flux.pipe, AccelConfig.from_dict(beside))
    unbatched = _run(tiny_flux, **TRUE_CFG)
    handle.remove()
    handle = apply(tiny_flux.pipe, AccelConfig.from_dict({**beside, "steps": {"batch_cfg": True}}))
    try:
        batched = _run(tiny_flux, **TRUE_CFG)
        steps = tiny_flux.generation["num_inference_steps"]
        assert _merged(tiny_flux.pipe) == steps  # every step's two calls ran as one, from the first step on
    finally:
        handle.remove()
    # rounding of a batch-of-4 call against two of 2; in bfloat16 the rounding is bfloat16's
    tol = 2e-2 if "quant" in beside else 1e-4
    torch.testing.assert_close(batched, unbatched, atol=tol, rtol=tol)
    if beside.get("cache"):  # the cache computed the same steps, once per step instead of once per branch
        assert handle.counters.computed_steps == len(SCHEDULE["compute_steps"])
    assert torch.equal(_run(tiny_flux, **TRUE_CFG), base)
    assert BATCH_HOOK_NAME not in tiny_flux.pipe.transformer._diffusers_hook.hooks


@pytest.mark.parametrize("call", [{}, {"true_cfg_scale": 4.0, "negative_prompt": "a gray background"}],
                         ids=["no negative prompt", "calls differing beyond their batch"])
def test_calls_it_cannot_merge_run_as_they_are(tiny_flux, call):
    base = _run(tiny_flux, **call)
    handle = apply(tiny_flux.pipe, AccelConfig.from_dict({"steps": {"batch_cfg": True}}))
    try:
        out = _run(tiny_flux, **call)
        assert _merged(tiny_flux.pipe) == 0
    finally:
        handle.remove()
    assert torch.equal(out, base)


def test_wan_batched_by_its_guidance_flag(tiny_wan):
    base = _run(tiny_wan)
    handle = apply(tiny_wan.pipe, AccelConfig.from_dict({"steps": {"batch_cfg": True}}))
    try:
        out = _run(tiny_wan)
        assert _merged(tiny_wan.pipe) == tiny_wan.generation["num_inference_steps"]
    finally:
        handle.remove()
    torch.testing.assert_close(out, base, atol=1e-4, rtol=1e-4)
    assert torch.equal(_run(tiny_wan), base)


@pytest.mark.parametrize("name", ["sd3", "hunyuan_video"])
def test_pipelines_it_cannot_batch_are_refused_in_one_line(name):
    # SD3 batches CFG itself; HunyuanVideo names no way to know before its first step that an
    # unconditional call follows, and a step run whole then batched would mix a cache's states
    tiny = BUILDERS[name]()
    with pytest.raises(ConfigError, match=rf"steps.batch_cfg: {type(tiny.pipe).__name__} does not run CFG") as e:
        apply(tiny.pipe, AccelConfig.from_dict({"steps": {"batch_cfg": True}}))
    assert "\n" not in str(e.value)


def test_not_a_bool_is_a_config_error():
    with pytest.raises(ConfigError, match="steps.batch_cfg"):
        AccelConfig.from_dict({"steps": {"batch_cfg": "yes"}}).validate()


def test_offered_where_the_calibration_call_ran_two_branches(tiny_flux):
    from mindiesd_tune.accel.cache import step_statistics

    gen = dict(tiny_flux.generation)
    with_cfg = describe(tiny_flux.pipe, {**gen, **TRUE_CFG},
                        step_statistics(tiny_flux.pipe, "a red circle", **{**gen, **TRUE_CFG}))
    without = describe(tiny_flux.pipe, gen, step_statistics(tiny_flux.pipe, "a red circle", **gen))
    assert with_cfg.batch_cfg and not without.batch_cfg
    assert {"steps.batch_cfg": True}.items() <= next(p for p in presets("dit-image", with_cfg)
                                                    if p.get("steps.batch_cfg")).items()
    assert not any(p.get("steps.batch_cfg") for p in presets("dit-image", without))
