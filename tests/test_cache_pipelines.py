"""The caching family on real diffusers pipelines at toy size (see tiny_pipelines): SD3, PixArt-Sigma,
SD 1.5, SDXL, CogVideoX, HunyuanVideo and Qwen-Image, each with classifier-free guidance on,
two prompts per call and the pipeline's own CFG layout (batched, or separate cond/uncond calls).

Flux and Wan are covered the same way in test_cache_family.py and test_first_block_cache.py.
"""

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
from tiny_pipelines import BUILDERS, PROMPTS, STEPS


@pytest.fixture(scope="module", params=list(BUILDERS))
def case(request):
    """(tiny pipeline, its baseline latents for PROMPTS)."""
    tiny = BUILDERS[request.param]()
    return tiny, tiny()


def cfg(cache):
    return AccelConfig(cache=cache)


def _hooks_left(model) -> int:
    return sum(len(m._diffusers_hook.hooks) for m in model.modules() if hasattr(m, "_diffusers_hook"))


def _assert_clean(tiny) -> None:
    assert _hooks_left(tiny.denoiser) == 0
    assert "maybe_free_model_hooks" not in vars(tiny.pipe)
    assert getattr(tiny.pipe, "_mindiesd_accel_handle", None) is None


def _neutral(tiny):
    if tiny.is_unet:
        return [DeepCacheConfig(cache_interval=1), DeepCacheConfig(cache_interval=1, branch=1)]
    return [FirstBlockCacheConfig(threshold=0.0), BlockCacheConfig(step_interval=1), BlockCacheConfig(block_start=0),
            TaylorSeerConfig(step_interval=1, order=2), AttentionCacheConfig(step_interval=1)]


def _caching(tiny):
    """(config, expected counters) for a scheduled cache on this pipeline, per call of STEPS steps."""
    k = tiny.cfg_branches  # every branch counts its own steps
    half = STEPS // 2  # step_interval 2: steps 0, 2, 4 compute, 1, 3, 5 reuse
    n = tiny.blocks
    if tiny.is_unet:
        n_deep = n - 2  # branch 0: only the outermost down and up blocks stay live
        return [(DeepCacheConfig(cache_interval=2),
                 dict(computed_steps=k * half, cached_steps=k * half, blocks_skipped=k * half * n_deep,
                      blocks_computed=k * (STEPS * n - half * n_deep)))]
    n_attn = sum(len(b.attention_modules()) for b in transformer_blocks(tiny.denoiser))
    return [
        (BlockCacheConfig(block_start=1, step_interval=2),
         dict(computed_steps=k * half, cached_steps=k * half, blocks_skipped=k * half * (n - 1),
              blocks_computed=k * (STEPS * n - half * (n - 1)))),
        # steps 0, 1 warm up, then 2 predicted, 3 computed, 4 predicted, 5 computed; the whole stack is predicted
        (TaylorSeerConfig(order=2, step_start=2, step_interval=2),
         dict(computed_steps=k * 4, cached_steps=k * 2, blocks_skipped=k * 2 * n, blocks_computed=k * 4 * n)),
        (AttentionCacheConfig(step_interval=2),
         dict(attention_skipped=k * half * n_attn, attention_computed=k * half * n_attn, blocks_skipped=0)),
    ]


# ---------------------------------------------------------------- the pipelines as built


def test_pipelines_run_cfg_as_assumed(case):
    """Guards the premises of the tests below: the denoiser sees cond and uncond, batched or separately."""
    tiny, base = case
    batches = []
    hook = tiny.denoiser.register_forward_pre_hook(lambda m, args, kwargs: batches.append(_batch(args, kwargs)),
                                                   with_kwargs=True)
    try:
        out = tiny()
    finally:
        hook.remove()
    per_call = 2 * len(PROMPTS) // tiny.cfg_branches
    assert batches == [per_call] * (STEPS * tiny.cfg_branches)
    assert torch.equal(out, base) and torch.isfinite(base).all()


def _batch(args, kwargs) -> int:
    x = args[0] if args else kwargs.get("hidden_states", kwargs.get("sample"))
    return x.shape[0]


# ---------------------------------------------------------------- neutral settings, caching, removal


def test_neutral_settings_give_the_baseline_bit_for_bit(case):
    tiny, base = case
    for cache in _neutral(tiny):
        with apply(tiny.pipe, cfg(cache)) as handle:
            out = tiny()
            s = handle.stats()
        assert torch.equal(out, base), cache
        assert s["blocks_skipped"] == 0 and s["attention_skipped"] == 0 and s["cached_steps"] == 0, cache
        _assert_clean(tiny)


def test_scheduled_cache_skips_the_counted_work_and_remove_restores(case):
    tiny, base = case
    for cache, expected in _caching(tiny):
        handle = apply(tiny.pipe, cfg(cache))
        out = tiny()
        s = handle.stats()
        handle.remove()
        assert {k: s[k] for k in expected} == expected, cache
        assert torch.isfinite(out).all() and not torch.equal(out, base), cache
        _assert_clean(tiny)
        assert torch.equal(tiny(), base), cache


def test_two_calls_under_the_cache_give_the_same_output(case):
    """State resets at the end of every call: a stale cache would make the second call reuse from step 0."""
    tiny, base = case
    # an interval that does not divide STEPS: a schedule carried over would start the next call mid-interval
    cache = DeepCacheConfig(cache_interval=4) if tiny.is_unet else BlockCacheConfig(block_start=1, step_interval=4)
    with apply(tiny.pipe, cfg(cache)) as handle:
        first = tiny()
        s1 = handle.stats()
        handle.reset_stats()
        second = tiny()
        s2 = handle.stats()
    assert torch.equal(first, second)
    assert s1 == s2 and s1["cached_steps"] == tiny.cfg_branches * 4  # steps 1-3 and 5 reuse
    _assert_clean(tiny)
    assert torch.equal(tiny(), base)


# ---------------------------------------------------------------- CFG and batch


def test_batched_prompts_match_their_single_runs_under_the_cache(case):
    """Two prompts in one call (batch 4 with batched CFG, two batch-2 calls with separate CFG) give what each
    prompt gives alone: the cache decides per call and branch, never mixing samples or branches."""
    tiny, _ = case
    cache, _ = _caching(tiny)[0]
    with apply(tiny.pipe, cfg(cache)):
        both = tiny()
        single = [tiny([p], seeds=[s]) for s, p in enumerate(PROMPTS)]
    for i in range(len(PROMPTS)):
        torch.testing.assert_close(both[i:i + 1], single[i], rtol=1e-4, atol=1e-4 * float(both.abs().max()))


def test_first_block_cache_warms_up_each_cfg_branch(case):
    """A threshold that always passes: after the warm-up every step reuses, per CFG branch. With separate
    cond/uncond calls each branch warms up on its own; sharing one state would halve the warm-up."""
    tiny, base = case
    fbc = cfg(FirstBlockCacheConfig(threshold=100.0, warmup_steps=2))
    if tiny.is_unet:  # block methods need a chain of blocks; UNets get DeepCache, and are told so
        with pytest.raises(UnsupportedModelError, match="deepcache"):
            apply(tiny.pipe, fbc)
        _assert_clean(tiny)
        return
    n, k = tiny.blocks, tiny.cfg_branches
    with apply(tiny.pipe, fbc) as handle:
        out = tiny()
        s = handle.stats()
    assert (s["computed_steps"], s["cached_steps"]) == (k * 2, k * (STEPS - 2))
    assert s["blocks_skipped"] == k * (STEPS - 2) * (n - 1)
    assert s["blocks_computed"] + s["blocks_skipped"] == k * STEPS * n
    assert torch.isfinite(out).all() and not torch.equal(out, base)
    _assert_clean(tiny)
    assert torch.equal(tiny(), base)


# ---------------------------------------------------------------- SD3 skip-layer guidance


@pytest.fixture(scope="module")
def tiny_sd3():
    return BUILDERS["sd3"]()


# SD3.5's skip-layer guidance: from step 1 on, a third forward per step on the conditional half of the
# batch, with no cache context and blocks 0 and 1 (where the hooks of the block methods live) left out
SLG = dict(skip_guidance_layers=[0, 1], skip_layer_guidance_start=0.0, skip_layer_guidance_stop=1.0)


def test_sd3_skip_layer_guidance_forwards_run_uncached(tiny_sd3):
    tiny = tiny_sd3
    slg_calls = []
    hook = tiny.denoiser.register_forward_pre_hook(
        lambda m, args, kwargs: slg_calls.append(kwargs.get("skip_layers") is not None), with_kwargs=True)
    try:
        base = tiny(**SLG)
    finally:
        hook.remove()
    assert sum(slg_calls) == STEPS - 1 and len(slg_calls) == 2 * STEPS - 1
    assert not torch.equal(base, tiny())

    for cache in _neutral(tiny):
        with apply(tiny.pipe, cfg(cache)):
            assert torch.equal(tiny(**SLG), base), cache
    for cache, expected in _caching(tiny):
        with apply(tiny.pipe, cfg(cache)) as handle:
            first = tiny(**SLG)
            s = handle.stats()
            second = tiny(**SLG)
        # the counters and the schedule are those of the CFG forward alone
        assert {k: s[k] for k in expected} == expected, cache
        assert torch.isfinite(first).all() and not torch.equal(first, base), cache
        assert torch.equal(first, second), cache
        _assert_clean(tiny)
    assert torch.equal(tiny(**SLG), base)


def test_sd3_step_statistics_trace_the_cfg_forward_only(tiny_sd3):
    from mindiesd_tune.accel import step_statistics

    call = {k: v for k, v in tiny_sd3.call.items() if k != "output_type"}
    stats = step_statistics(tiny_sd3.pipe, list(PROMPTS), **call, **SLG)
    assert [(r["branch"], r["step"]) for r in stats.rows] == [("default", i) for i in range(STEPS)]
    assert all(r["residual_change"] is not None for r in stats.rows[1:])
    _assert_clean(tiny_sd3)
