"""Search-space entries for every cache method: valid, reproducible from trial.params, centred on statistics."""

import optuna
import pytest

from mindiesd_tune.accel.cache import StepStatistics
from mindiesd_tune.search_spaces import (
    NEUTRAL_PARAMS,
    SpaceContext,
    config_from_params,
    offered,
    presets,
    suggest,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

FAMILIES = ("dit-image", "dit-video", "unet-image")
CACHE_METHODS_BY_FAMILY = {  # what each family is offered, as before the registry (step reduction is its own section)
    "dit-image": {"none", "first_block", "block_cache", "taylorseer", "attention_cache", "diffusers_first_block",
                  "diffusers_taylorseer", "diffusers_pab"},
    "dit-video": {"none", "first_block", "block_cache", "taylorseer", "attention_cache", "diffusers_first_block",
                  "diffusers_taylorseer", "diffusers_pab", "diffusers_faster"},
    "unet-image": {"none", "deepcache"},
}
CONTEXTS = {
    "dit-image": SpaceContext(n_blocks=8, num_inference_steps=20, schedulers=("default", "euler", "unipc")),
    "dit-video": SpaceContext(n_blocks=6, num_inference_steps=20, schedulers=("default", "euler", "dpmsolver++", "unipc")),
    "unet-image": SpaceContext(num_inference_steps=25, unet_branches=2, schedulers=("default", "euler", "dpmsolver++", "unipc")),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("with_context", [False, True])
def test_every_method_is_sampled_validly_and_rebuilds_from_params(family, with_context):
    ctx = CONTEXTS[family] if with_context else None
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen, steps = set(), set()
    assert set(offered("cache", family, ctx)) == CACHE_METHODS_BY_FAMILY[family]
    for p in presets(family, ctx):
        study.enqueue_trial(p)
    enqueued = presets(family, ctx)
    for k in range(150):
        trial = study.ask()
        config = suggest(trial, family, ctx)  # validates: an invalid point would raise
        assert config_from_params(trial.params) == config
        if k < len(enqueued):
            assert trial.params == enqueued[k]  # presets name every parameter: nothing sampled
        seen.add(config.cache.method)
        steps.add(config.steps.num_inference_steps > 0)
        study.tell(trial, 0.0)
    assert seen == CACHE_METHODS_BY_FAMILY[family]  # "none" included
    assert steps == {False, True}  # the step count is searched beside every cache method


def test_presets_start_with_the_baseline_and_are_valid():
    for family in FAMILIES:
        ps = presets(family)
        # a component's precision None: left at the load dtype
        assert ps[0] == NEUTRAL_PARAMS == {"steps.num_inference_steps": 0, "cache.method": "none", "sparse.method": "none",
                                           "quant.scheme": "none", "quant.precision.denoiser": None,
                                           "quant.precision.text_encoder": None, "quant.precision.vae": None}
        assert config_from_params(ps[0]).is_neutral
        for p in ps:
            config_from_params(p)


def test_thresholds_are_centred_on_the_models_statistics():
    rows = [{"branch": "cond", "step": s, "first_block_residual_change": 0.001 * s} for s in range(1, 21)]
    stats = StepStatistics(rows)
    lo, hi = stats.threshold_range()
    assert lo == pytest.approx(stats.percentiles("first_block_residual_change")["p10"])
    assert hi == pytest.approx(3 * stats.percentiles("first_block_residual_change")["p90"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    ctx = SpaceContext(thresholds=stats.threshold_range())
    assert SpaceContext.from_dict(ctx.to_dict()) == ctx
    thresholds = []
    for _ in range(80):
        trial = study.ask()
        cfg = suggest(trial, "dit-image", ctx)
        if cfg.cache.method == "first_block":
            thresholds.append(cfg.cache.threshold)
        study.tell(trial, 0.0)
    assert thresholds and all(lo <= t <= hi for t in thresholds)
    assert hi < 0.1  # far below the fixed range's top (1.0) for this slowly changing model


def test_step_reduction_and_deepcache_follow_the_context():
    ctx = SpaceContext(num_inference_steps=8, schedulers=("default", "unipc"), unet_branches=2)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    for _ in range(60):
        trial = study.ask()
        cfg = suggest(trial, "unet-image", ctx)
        if cfg.steps.num_inference_steps:
            assert 2 <= cfg.steps.num_inference_steps <= 7 and cfg.steps.scheduler in ("default", "unipc")
        else:
            assert "steps.scheduler" not in trial.params  # no scheduler swap at the workload's own step count
        if cfg.cache.method == "deepcache":
            assert cfg.cache.branch in (0, 1)
        study.tell(trial, 0.0)


def test_denoisers_without_cachemixin_get_no_diffusers_adapters():
    ctx = SpaceContext(methods=("none", "first_block", "block_cache"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(30):
        trial = study.ask()
        assert not suggest(trial, "dit-image", ctx).cache.method.startswith("diffusers_")
        study.tell(trial, 0.0)
