"""The caching family on whole pipelines (tiny Flux and Wan): methods, CFG/batch state, the steps section,
diffusers adapters, statistics, config round trip."""

import numpy as np
import pytest
import torch

from conftest import generate
from mindiesd_tune.accel import (
    AccelConfig,
    AttentionCacheConfig,
    BlockCacheConfig,
    ConfigError,
    DiffusersFirstBlockCacheConfig,
    DiffusersMagCacheConfig,
    DiffusersPyramidAttentionBroadcastConfig,
    DiffusersTaylorSeerConfig,
    StepsConfig,
    TaylorSeerConfig,
    apply,
    cache_methods,
    compatible_schedulers,
    step_statistics,
)
from mindiesd_tune.accel.cache import relative_l1


def cfg(cache):
    return AccelConfig(steps=cache) if isinstance(cache, StepsConfig) else AccelConfig(cache=cache)


def _hooks_left(pipe) -> int:
    return sum(len(m._diffusers_hook.hooks) for m in pipe.transformer.modules() if hasattr(m, "_diffusers_hook"))


# ---------------------------------------------------------------- residual methods on pipelines


@pytest.mark.parametrize("cache", [BlockCacheConfig(step_interval=1), TaylorSeerConfig(step_interval=1),
                                   AttentionCacheConfig(step_interval=1), StepsConfig(),
                                   DiffusersFirstBlockCacheConfig(threshold=0.0)])
def test_neutral_settings_give_the_baseline_on_pipelines(tiny_flux, cache):
    base = generate(tiny_flux)
    with apply(tiny_flux.pipe, cfg(cache)) as handle:
        assert handle.call_overrides == {}
        assert np.array_equal(generate(tiny_flux), base)


def test_block_cache_with_bn_keeps_the_last_block_live(tiny_wan):
    steps = tiny_wan.generation["num_inference_steps"]  # 10, two CFG branches
    n = len(tiny_wan.pipe.transformer.blocks)  # 2: Fn=0 and Bn=1 leave one block to cache
    base = generate(tiny_wan)
    handle = apply(tiny_wan.pipe, cfg(BlockCacheConfig(block_start=0, block_end=n - 1, step_start=2, step_end=8, step_interval=3)))
    out = generate(tiny_wan)
    s = handle.stats()
    handle.remove()
    # per branch: steps 0,1 warm up; 2 full, 3,4 cached, 5 full, 6,7 cached; 8,9 full after step_end
    assert s["cached_steps"] == 2 * 4 and s["computed_steps"] == 2 * 6
    assert s["blocks_skipped"] == 2 * 4 * (n - 1)
    assert s["blocks_computed"] + s["blocks_skipped"] == 2 * steps * n
    assert not np.array_equal(out, base)
    assert np.array_equal(generate(tiny_wan), base) and _hooks_left(tiny_wan.pipe) == 0


def test_block_cache_threshold_gates_the_schedule(tiny_flux):
    with apply(tiny_flux.pipe, cfg(BlockCacheConfig(step_interval=4, threshold=1e-9))) as handle:
        generate(tiny_flux)
        assert handle.stats()["cached_steps"] == 0  # no step changes that little
    with apply(tiny_flux.pipe, cfg(BlockCacheConfig(step_interval=4, threshold=10.0))) as handle:
        generate(tiny_flux)
        assert handle.stats()["cached_steps"] == 7  # 0 full, 1-3 cached, 4 full, 5-7, 8 full, 9


def test_taylorseer_extrapolates_instead_of_reusing(tiny_flux):
    base = generate(tiny_flux)
    outs = {}
    for order in (0, 1, 2):
        cache = BlockCacheConfig(block_start=0, step_start=2, step_interval=3) if order == 0 else \
            TaylorSeerConfig(order=order, step_start=2, step_interval=3)
        with apply(tiny_flux.pipe, cfg(cache)) as handle:
            outs[order] = generate(tiny_flux)
            assert handle.stats()["cached_steps"] == 6
    assert not np.array_equal(outs[1], outs[0]) and not np.array_equal(outs[2], outs[1])
    for o in outs.values():
        assert np.isfinite(o).all() and np.abs(o - base).mean() < 0.1


def test_attention_cache_counts_reused_attention(tiny_wan):
    n = len(tiny_wan.pipe.transformer.blocks)
    with apply(tiny_wan.pipe, cfg(AttentionCacheConfig(step_interval=2, block_start=1))) as handle:
        generate(tiny_wan)
        s = handle.stats()
    assert s["attention_skipped"] == 2 * 5 * (n - 1)  # two branches, odd steps, blocks 1..n-1
    assert s["blocks_skipped"] == 0 and s["skipped_fraction"] == 0.5


# ---------------------------------------------------------------- CFG and batch


def test_change_is_measured_per_sample_and_the_largest_decides():
    ref = torch.ones(2, 4, 3)
    new = ref.clone()
    new[1] *= 1.5  # only the second sample changed
    assert relative_l1(new, ref) == pytest.approx(0.5)
    assert relative_l1(new[:1], ref[:1]) == 0.0


def test_several_prompts_in_one_batch_match_their_single_runs(tiny_flux):
    prompts = ["a red circle on a blue background", "a green square"]
    cache = cfg(BlockCacheConfig(step_interval=2))
    gen = dict(tiny_flux.generation)
    with apply(tiny_flux.pipe, cache):
        both = tiny_flux.pipe(prompt=prompts, generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
                              output_type="np", **gen).images
        single = [generate(tiny_flux, prompt=p, seed=s) for p, s in zip(prompts, (0, 1))]
    for i in range(2):
        np.testing.assert_allclose(both[i], single[i], atol=2e-3)


class _NoMixinPipe:
    """A pipeline stand-in whose denoiser lacks diffusers' CacheMixin (as SD3's and PixArt's do)."""

    def __init__(self):
        from tiny_denoisers import build, denoise

        self.transformer, self.inputs, self.x, self.ts = build("PixArtTransformer2DModel")
        self._denoise = denoise
        self.resets = 0

    def maybe_free_model_hooks(self):
        self.resets += 1

    def __call__(self):
        out = self._denoise(self.transformer, self.inputs, self.x, self.ts, steps=6)
        self.maybe_free_model_hooks()
        return out


def test_state_resets_between_calls_without_cachemixin():
    pipe = _NoMixinPipe()
    assert not hasattr(pipe.transformer, "_reset_stateful_cache")
    base = pipe()
    with apply(pipe, cfg(BlockCacheConfig(step_interval=2))) as handle:
        a = pipe()
        first = handle.stats()
        handle.reset_stats()
        b = pipe()
        assert handle.stats() == first  # a stale cache would skip step 0 of the second call
    assert torch.equal(a, b) and pipe.resets == 3
    assert "maybe_free_model_hooks" not in vars(pipe) and torch.equal(pipe(), base)


# ---------------------------------------------------------------- steps section


def test_scheduler_choices_follow_the_pipeline(tiny_flux, tiny_wan):
    assert compatible_schedulers(tiny_flux.pipe) == ["default", "euler", "unipc"]  # Flux passes sigmas
    assert compatible_schedulers(tiny_wan.pipe) == ["default", "euler", "dpmsolver++", "unipc"]


@pytest.mark.parametrize("scheduler", ["euler", "dpmsolver++", "unipc"])
def test_step_reduction_reports_call_overrides_and_restores_the_scheduler(tiny_wan, scheduler):
    base = generate(tiny_wan)
    original = tiny_wan.pipe.scheduler
    handle = apply(tiny_wan.pipe, cfg(StepsConfig(num_inference_steps=4, scheduler=scheduler)))
    assert handle.call_overrides == {"num_inference_steps": 4}
    assert handle.generation(tiny_wan.generation)["num_inference_steps"] == 4
    assert tiny_wan.pipe.scheduler is not original
    assert tiny_wan.pipe.scheduler.config.get("prediction_type", "flow_prediction") == "flow_prediction"
    out = generate(tiny_wan, **handle.call_overrides)
    handle.remove()
    assert tiny_wan.pipe.scheduler is original and handle.call_overrides == {}
    assert np.isfinite(out).all() and not np.array_equal(out, base)
    assert np.array_equal(generate(tiny_wan), base)


def test_incompatible_scheduler_is_refused_with_the_choices(tiny_flux):
    with pytest.raises(ValueError, match="default, euler, unipc"):
        apply(tiny_flux.pipe, cfg(StepsConfig(scheduler="dpmsolver++")))
    assert not getattr(tiny_flux.pipe, "_mindiesd_accel_handle", None)


# ---------------------------------------------------------------- diffusers adapters


def test_diffusers_first_block_cache_adapter_counts_and_removes(tiny_flux):
    base = generate(tiny_flux)
    handle = apply(tiny_flux.pipe, cfg(DiffusersFirstBlockCacheConfig(threshold=10.0)))
    assert tiny_flux.pipe.transformer.is_cache_enabled
    out = generate(tiny_flux)
    s = handle.stats()
    handle.remove()
    n = len(tiny_flux.pipe.transformer.transformer_blocks) + len(tiny_flux.pipe.transformer.single_transformer_blocks)
    assert s["blocks_computed"] + s["blocks_skipped"] == 10 * n and s["blocks_skipped"] > 0
    assert not np.array_equal(out, base)
    assert not tiny_flux.pipe.transformer.is_cache_enabled and _hooks_left(tiny_flux.pipe) == 0
    assert np.array_equal(generate(tiny_flux), base)


@pytest.mark.parametrize("cache", [
    DiffusersPyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=2, timestep_skip_start=0, timestep_skip_end=1000),
    DiffusersTaylorSeerConfig(cache_interval=3, disable_cache_before_step=2),
])
@pytest.mark.parametrize("model", ["tiny_flux", "tiny_wan"])
def test_diffusers_attention_adapters_skip_attention(model, cache, request):
    loaded = request.getfixturevalue(model)
    base = generate(loaded)
    with apply(loaded.pipe, cfg(cache)) as handle:
        generate(loaded)
        assert handle.stats()["attention_skipped"] > 0
    assert np.array_equal(generate(loaded), base)


def test_magcache_adapter_uses_measured_ratios(tiny_flux):
    with pytest.raises(ValueError, match="step_statistics"):
        apply(tiny_flux.pipe, cfg(DiffusersMagCacheConfig(threshold=0.5)))
    stats = step_statistics(tiny_flux.pipe, "a red circle", **tiny_flux.generation)
    ratios = stats.mag_ratios
    assert len(ratios) == tiny_flux.generation["num_inference_steps"]
    with apply(tiny_flux.pipe, cfg(DiffusersMagCacheConfig(threshold=10.0, retention_ratio=0.2, mag_ratios=ratios))) as handle:
        generate(tiny_flux)
        assert handle.stats()["blocks_skipped"] > 0


# ---------------------------------------------------------------- statistics


def test_step_statistics_per_branch_and_step(tiny_wan):
    base = generate(tiny_wan)
    steps = tiny_wan.generation["num_inference_steps"]
    stats = step_statistics(tiny_wan.pipe, "a red circle", **tiny_wan.generation)
    assert {r["branch"] for r in stats.rows} == {"cond", "uncond"}
    assert len(stats.rows) == 2 * steps
    assert all(r["first_block_change"] is None for r in stats.rows if r["step"] == 0)
    p = stats.percentiles("first_block_residual_change")
    assert 0 < p["p10"] <= p["p50"] <= p["p90"]
    lo, hi = stats.threshold_range()
    assert lo == pytest.approx(p["p10"]) and hi > lo
    assert "output_change" in stats.summary()
    assert _hooks_left(tiny_wan.pipe) == 0 and np.array_equal(generate(tiny_wan), base)


# ---------------------------------------------------------------- config


def test_every_method_round_trips_through_yaml():
    assert {"none", "first_block", "block_cache", "taylorseer", "attention_cache", "deepcache",
            "diffusers_first_block", "diffusers_taylorseer", "diffusers_mag", "diffusers_faster", "diffusers_pab"} <= set(cache_methods())
    for method in cache_methods():
        c = AccelConfig.from_dict({"cache": {"method": method}})
        assert AccelConfig.from_yaml(c.to_yaml()) == c


@pytest.mark.parametrize("data,field", [
    ({"method": "block_cache", "step_interval": 0}, "cache.step_interval"),
    ({"method": "block_cache", "threshold": 0.1, "block_start": 0}, "cache.block_start"),
    ({"method": "taylorseer", "order": 3}, "cache.order"),
    ({"method": "attention_cache", "step_end": 0}, "cache.step_end"),
])
def test_bad_values_name_the_field(data, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        AccelConfig.from_dict({"cache": data})


def test_a_bad_scheduler_is_named_in_the_steps_section():
    with pytest.raises(ConfigError, match=r"steps\.scheduler"):
        AccelConfig.from_dict({"steps": {"scheduler": "ddim"}})


def test_a_steps_profile_calls_with_its_step_count(tmp_path):
    from mindiesd_tune import load_profile
    from mindiesd_tune.profile import Profile

    prof = Profile(
        model={"name": "tiny-wan-random", "family": "dit-video", "pipeline": "WanPipeline", "fingerprint": "abc"},
        generation={"height": 32, "width": 32, "num_frames": 5, "num_inference_steps": 10},
        accel=AccelConfig(steps=StepsConfig(num_inference_steps=4, scheduler="unipc")),
        measured={"latency_s": 0.1, "baseline_s": 0.2, "speedup": 2.0},
    )
    again = load_profile(prof.save(tmp_path / "p.yaml"))
    assert again.accel == prof.accel
    assert again.call_kwargs()["num_inference_steps"] == 4
