"""Every supported denoiser class, at tiny size, driven directly by a fake sampling loop (see tiny_denoisers)."""

import pytest
import torch

from mindiesd_tune.accel import (
    AccelConfig,
    AttentionCacheConfig,
    BlockCacheConfig,
    DeepCacheConfig,
    FirstBlockCacheConfig,
    TaylorSeerConfig,
    UnsupportedModelError,
    apply,
    transformer_blocks,
)
from tiny_denoisers import BUILDERS, build, denoise

STEPS = 8
TRANSFORMERS = [n for n in BUILDERS if n != "UNet2DConditionModel"]


@pytest.fixture(scope="module", params=list(BUILDERS))
def case(request):
    model, inputs, x_name, t_scale = build(request.param)
    run = lambda: denoise(model, inputs, x_name, t_scale, steps=STEPS)  # noqa: E731
    return request.param, model, run, run()


def _hooks_left(model) -> int:
    return sum(len(m._diffusers_hook.hooks) for m in model.modules() if hasattr(m, "_diffusers_hook"))


def _neutral(name):
    if name == "UNet2DConditionModel":
        return [DeepCacheConfig(cache_interval=1, branch=0)]
    return [FirstBlockCacheConfig(threshold=0.0), BlockCacheConfig(step_interval=1), TaylorSeerConfig(step_interval=1, order=2),
            AttentionCacheConfig(step_interval=1)]


def test_neutral_settings_give_the_baseline_bit_for_bit(case):
    name, model, run, base = case
    for cfg in _neutral(name):
        with apply(model, AccelConfig(cache=cfg)) as handle:
            out = run()
            handle.reset_state()
            stats = handle.stats()
        assert torch.equal(out, base), cfg
        assert stats["blocks_skipped"] == 0 and stats["attention_skipped"] == 0


def test_scheduled_cache_skips_the_counted_work_and_remove_restores(case):
    name, model, run, base = case
    if name == "UNet2DConditionModel":
        cfg = DeepCacheConfig(cache_interval=2, branch=0)
        n_deep = len(model.down_blocks) - 1 + 1 + len(model.up_blocks) - 1
        n_total = len(model.down_blocks) + 1 + len(model.up_blocks)
    else:
        cfg = BlockCacheConfig(block_start=1, step_interval=2)
        n_total = len(transformer_blocks(model))
        n_deep = n_total - 1
    handle = apply(model, AccelConfig(cache=cfg))
    out = run()
    s = handle.stats()
    handle.remove()
    # steps 0, 2, 4, 6 compute everything; 1, 3, 5, 7 skip the cached blocks
    assert (s["computed_steps"], s["cached_steps"]) == (STEPS // 2, STEPS // 2)
    assert s["blocks_skipped"] == STEPS // 2 * n_deep
    assert s["blocks_computed"] + s["blocks_skipped"] == STEPS * n_total
    assert torch.isfinite(out).all() and not torch.equal(out, base)
    assert torch.equal(run(), base)
    assert _hooks_left(model) == 0


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_attention_cache_reuses_every_other_step(name):
    model, inputs, x_name, t_scale = build(name)
    base = denoise(model, inputs, x_name, t_scale, steps=STEPS)
    n_attn = sum(len(b.attention_modules()) for b in transformer_blocks(model))
    with apply(model, AccelConfig(cache=AttentionCacheConfig(step_interval=2, step_start=2))) as handle:
        out = denoise(model, inputs, x_name, t_scale, steps=STEPS)
        s = handle.stats()
    # steps 0, 1 compute (before step_start); then every other step reuses: 2, 4, 6
    assert s["attention_skipped"] == 3 * n_attn and s["attention_computed"] == 5 * n_attn
    assert not torch.equal(out, base)
    assert torch.equal(denoise(model, inputs, x_name, t_scale, steps=STEPS), base)


@pytest.mark.parametrize("name", ["SD3Transformer2DModel", "HunyuanVideoTransformer3DModel", "QwenImageTransformer2DModel"])
def test_threshold_and_taylor_methods_run_on_more_architectures(name):
    model, inputs, x_name, t_scale = build(name)
    base = denoise(model, inputs, x_name, t_scale, steps=STEPS)
    for cfg in (FirstBlockCacheConfig(threshold=10.0, warmup_steps=1), TaylorSeerConfig(order=2, step_interval=3, step_start=3),
                BlockCacheConfig(block_start=1, block_end=len(transformer_blocks(model)) - 1, step_interval=4, threshold=10.0)):
        with apply(model, AccelConfig(cache=cfg)) as handle:
            out = denoise(model, inputs, x_name, t_scale, steps=STEPS)
            handle.reset_state()
            s = handle.stats()
        assert s["blocks_skipped"] > 0 and torch.isfinite(out).all(), cfg
        assert (out - base).abs().mean() < base.abs().mean(), cfg  # an approximation, not garbage
    assert torch.equal(denoise(model, inputs, x_name, t_scale, steps=STEPS), base)


def test_unknown_denoiser_gets_an_error_naming_the_supported_ones():
    with pytest.raises(UnsupportedModelError, match="FluxTransformer2DModel.*WanTransformer3DModel"):
        transformer_blocks(torch.nn.Linear(2, 2))


def test_unet_needs_deepcache_and_says_so():
    model, *_ = build("UNet2DConditionModel")
    with pytest.raises(UnsupportedModelError, match="deepcache"):
        apply(model, AccelConfig(cache=BlockCacheConfig(step_interval=2)))
    with pytest.raises(ValueError, match="branch"):
        apply(model, AccelConfig(cache=DeepCacheConfig(cache_interval=2, branch=5)))
    assert _hooks_left(model) == 0
