import numpy as np
import pytest

from conftest import generate
from mindiesd_tune.accel import AccelConfig, AlreadyAppliedError, FirstBlockCacheConfig, apply


def fbc(**kw):
    return AccelConfig(cache=FirstBlockCacheConfig(**kw))


@pytest.mark.parametrize("model", ["tiny_flux", "tiny_wan"])
@pytest.mark.slow
def test_threshold_zero_gives_baseline_output(model, request):
    loaded = request.getfixturevalue(model)
    base = generate(loaded)
    with apply(loaded.pipe, fbc(threshold=0.0)) as handle:
        out = generate(loaded)
        stats = handle.stats()
    assert np.array_equal(out, base)
    assert stats["blocks_skipped"] == 0 and stats["blocks_computed"] > 0


@pytest.mark.parametrize("model", ["tiny_flux", "tiny_wan"])
@pytest.mark.slow
def test_remove_restores_bit_identical_output(model, request):
    loaded = request.getfixturevalue(model)
    base = generate(loaded)
    handle = apply(loaded.pipe, fbc(threshold=10.0))
    cached = generate(loaded)
    assert handle.stats()["blocks_skipped"] > 0
    assert not np.array_equal(cached, base)
    handle.remove()
    assert np.array_equal(generate(loaded), base)
    blocks = [b for b in loaded.pipe.transformer.modules() if hasattr(b, "_diffusers_hook")]
    assert all(not b._diffusers_hook.hooks for b in blocks)


@pytest.mark.slow
def test_positive_threshold_on_demo_flux_skips_blocks_and_counts_them(demo_flux):
    steps = demo_flux.generation["num_inference_steps"]
    n_blocks = len(demo_flux.pipe.transformer.transformer_blocks) + len(demo_flux.pipe.transformer.single_transformer_blocks)
    base = generate(demo_flux)
    with apply(demo_flux.pipe, fbc(threshold=10.0, warmup_steps=3)) as handle:
        out = generate(demo_flux)
        s = handle.stats()
    # demo-flux runs true CFG: every step has a cond and an uncond forward, each with its own cache
    gen = demo_flux.generation
    branches = 2 if gen.get("true_cfg_scale", 1) > 1 and gen.get("negative_prompt") is not None else 1
    forwards = steps * branches
    # every forward computes the first block; after warm-up every other forward reuses the rest
    assert s["computed_steps"] + s["cached_steps"] == forwards
    assert s["computed_steps"] == 3 * branches  # each branch's warm-up steps compute and fill its cache
    assert s["blocks_skipped"] == s["cached_steps"] * (n_blocks - 1)
    assert s["blocks_computed"] + s["blocks_skipped"] == forwards * n_blocks
    assert 0 < s["skipped_fraction"] < 1
    assert np.isfinite(out).all() and not np.array_equal(out, base)


def test_max_cached_steps_bounds_reuse(tiny_flux):
    with apply(tiny_flux.pipe, fbc(threshold=10.0, max_cached_steps=2)) as handle:
        generate(tiny_flux)
        assert handle.stats()["cached_steps"] == 2


def test_max_consecutive_cached_steps_forces_refresh(tiny_flux):
    steps = tiny_flux.generation["num_inference_steps"]
    with apply(tiny_flux.pipe, fbc(threshold=10.0, max_consecutive_cached_steps=1)) as handle:
        generate(tiny_flux)
        s = handle.stats()
    # compute, cache, compute, cache, ...
    assert s["cached_steps"] == steps // 2


def test_state_is_reset_between_calls(tiny_flux):
    with apply(tiny_flux.pipe, fbc(threshold=10.0, warmup_steps=2)) as handle:
        a = generate(tiny_flux)
        first = handle.stats()
        handle.reset_stats()
        b = generate(tiny_flux)
        assert handle.stats() == first  # a stale cache would change the second call's counters
    assert np.array_equal(a, b)


def test_cfg_branches_keep_separate_state(tiny_wan):
    # Wan runs "cond" and "uncond" passes per step; each branch computes its own first step
    with apply(tiny_wan.pipe, fbc(threshold=10.0)) as handle:
        generate(tiny_wan)
        s = handle.stats()
    steps = tiny_wan.generation["num_inference_steps"]
    assert s["computed_steps"] == 2
    assert s["cached_steps"] == 2 * steps - 2


def test_applying_twice_is_an_error(tiny_flux):
    with apply(tiny_flux.pipe, fbc(threshold=0.1)):
        with pytest.raises(AlreadyAppliedError):
            apply(tiny_flux.pipe, fbc(threshold=0.1))
    apply(tiny_flux.pipe, fbc(threshold=0.1)).remove()  # fine again after remove()


def test_neutral_config_installs_nothing(tiny_flux):
    base = generate(tiny_flux)
    with apply(tiny_flux.pipe, AccelConfig()) as handle:
        assert np.array_equal(generate(tiny_flux), base)
        assert handle.stats()["blocks_computed"] == 0


@pytest.mark.slow
def test_accumulate_refreshes_sooner_than_the_plain_change(tiny_flux):
    cached = {}
    for accumulate in (False, True):
        with apply(tiny_flux.pipe, fbc(threshold=0.5, accumulate=accumulate)) as handle:
            generate(tiny_flux)
            cached[accumulate] = handle.stats()["cached_steps"]
    # the sum of changes since the last computed step crosses the threshold before any single one
    assert 0 < cached[True] < cached[False]


def test_warmup_steps_are_always_computed(tiny_wan):
    with apply(tiny_wan.pipe, fbc(threshold=10.0, warmup_steps=4)) as handle:
        generate(tiny_wan)
        s = handle.stats()
    steps = tiny_wan.generation["num_inference_steps"]
    assert s["computed_steps"] == 2 * 4 and s["cached_steps"] == 2 * (steps - 4)  # per CFG branch
