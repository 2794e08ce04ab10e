"""Warm starts: how stored points are ordered and fitted into a new workload's space, and how the
points that held are counted. No model is called and nothing is timed."""

import optuna
import pytest

from mindiesd_tune import AccelConfig
from mindiesd_tune.accel.methods.first_block import FirstBlockCacheConfig
from mindiesd_tune.accel.methods.schedule import ScheduleCacheConfig
from mindiesd_tune.profile import Profile, ProfileError, profile_from_dict
from mindiesd_tune.search_spaces import SpaceContext, config_from_params, suggest
from mindiesd_tune.store import ProfileStore
from mindiesd_tune.store import db as store_db
from mindiesd_tune.tuner.warm import CALIBRATION, WARM, change_ratio, fit_point, warm_points, warm_trials

FAMILY = "dit-image"
HW = {"device": "cpu", "name": "test cpu", "count": 1, "torch": "x", "diffusers": "x"}


def _fit(cfg, steps_there=20, steps_here=28, **space) -> AccelConfig:
    ctx = SpaceContext(n_blocks=4, num_inference_steps=steps_here, **space)
    params = fit_point(cfg, FAMILY, ctx, steps_here / steps_there)
    assert params is not None
    return suggest(optuna.trial.FixedTrial(params), FAMILY, ctx)  # what the new study makes of the enqueued point


def test_step_positions_keep_their_share_of_the_new_step_count():
    cfg = AccelConfig(cache=FirstBlockCacheConfig(threshold=0.1, warmup_steps=2, max_cached_steps=8))
    fitted = _fit(cfg).cache
    # 2 of 20 steps -> 3 of 28; 8 cached of 20 -> 11 of 28, the nearest choice offered is 12
    assert fitted.warmup_steps == 3 and fitted.max_cached_steps == 12
    # -1 (no limit) is not a count: it stays
    assert _fit(AccelConfig(cache=FirstBlockCacheConfig(threshold=0.1, max_cached_steps=-1))).cache.max_cached_steps == -1


def test_a_threshold_follows_the_per_step_change():
    cfg = AccelConfig(cache=FirstBlockCacheConfig(threshold=0.1, warmup_steps=1))
    # nothing recorded: with 28 steps instead of 20 each step changes 20/28 as much
    assert _fit(cfg).cache.threshold == pytest.approx(0.1 * 20 / 28)
    # both calibrations known: the ratio of their centres (here the new model changes half as much)
    ctx = SpaceContext(n_blocks=4, num_inference_steps=20, thresholds=(0.02, 0.2))
    params = fit_point(cfg, FAMILY, ctx, 1.0, change_ratio([0.04, 0.4], ctx.thresholds))
    assert config_from_params(params).cache.threshold == pytest.approx(0.05)
    # and still clamped into the new range
    params = fit_point(AccelConfig(cache=FirstBlockCacheConfig(threshold=0.6)), FAMILY, ctx, 1.0, change_ratio([0.04, 0.4], ctx.thresholds))
    assert config_from_params(params).cache.threshold == pytest.approx(0.2)


@pytest.mark.parametrize("stored, here", [(None, (0.1, 1.0)), ([0.1, 1.0], None), ([0.0, 1.0], (0.1, 1.0)), ("x", (0.1, 1.0))])
def test_change_ratio_is_none_when_a_calibration_is_missing_or_bad(stored, here):
    assert change_ratio(stored, here) is None


def test_a_schedule_carries_its_budget_and_the_new_study_derives_the_mask():
    change = tuple(1.0 / (i + 1) for i in range(28))
    cfg = AccelConfig(cache=ScheduleCacheConfig(compute_steps=[0, 1, 3, 6, 10, 15, 19], budget=0.35, warmup_steps=2))
    fitted = _fit(cfg, step_change=change).cache
    assert fitted.method == "schedule" and fitted.budget == pytest.approx(0.35) and fitted.warmup_steps == 3
    # a mask for 28 steps, computing about the same share of them
    assert fitted.compute_steps[0] == 0 and max(fitted.compute_steps) < 28 and 8 <= len(fitted.compute_steps) <= 12


def _stored_profile(accel, steps, fingerprint="a" * 16, threshold_range=None) -> Profile:
    study = {"prompts": ["p"], "seeds": [0], "floors": ["psnr>=30"]}
    if threshold_range:
        study[CALIBRATION] = threshold_range
    return Profile(model={"name": "m", "family": FAMILY, "pipeline": "FluxPipeline", "fingerprint": fingerprint},
                   generation={"height": 64, "width": 64, "num_inference_steps": steps}, accel=accel,
                   measured={"speedup": 2.0, "speedup_low": 1.9, "speedup_high": 2.1, "psnr": 31.0}, hardware=HW,
                   study=study)


def test_the_stored_pick_comes_first_then_its_front_then_the_other_checkpoints(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    st = ProfileStore(url)
    pick = AccelConfig(cache=ScheduleCacheConfig(compute_steps=[0, 1, 5, 19], budget=0.35, warmup_steps=2))
    # the front lists a faster point first (unconfirmed in its study), then the pick's own params
    front = [{"cache.method": "first_block", "cache.threshold": 0.3, "cache.warmup_steps": 1, "cache.max_cached_steps": -1,
              "cache.max_consecutive_cached_steps": -1, "cache.accumulate": False},
             {"cache.method": "schedule", "cache.budget": 0.35, "cache.warmup_steps": 2, "cache.taylor_order": 0}]
    st.publish(_stored_profile(pick, 20, threshold_range=[0.08, 0.8]), front=front)
    st.publish(_stored_profile(AccelConfig(cache=FirstBlockCacheConfig(threshold=0.1)), 20, fingerprint="b" * 16))
    info = {"model": {"family": FAMILY, "fingerprint": "a" * 16}, "hardware": HW,
            "workload": {"generation": {"num_inference_steps": 28}}}
    ctx = SpaceContext(n_blocks=4, num_inference_steps=28, thresholds=(0.06, 0.6), step_change=tuple([0.5] * 28))
    lines = []
    points = warm_points(url, info, ctx, lines.append)
    configs = [config_from_params(p) for p, _ in points]
    # each pick, then the pick with bf16 and compile laid over it (the next test), then the front;
    # the pick's front copy is the same point: once
    assert [(a[WARM], "combined" in a) for _, a in points] == [(1, False), (1, True), (1, False), (2, False), (2, True)]
    assert configs[0].cache.method == "schedule" and configs[2].cache.method == "first_block"
    # the stored calibration [0.08, 0.8] against this one [0.06, 0.6]: thresholds scaled by 0.75
    assert configs[2].cache.threshold == pytest.approx(0.3 * 0.75)
    # the other checkpoint recorded no calibration: the inverse step ratio
    assert configs[3].cache.threshold == pytest.approx(0.1 * 20 / 28)
    assert "5 point(s) from 2 stored profile(s) (1 of this model's weights" in lines[0]
    store_db.dispose(url)


def test_a_profile_records_its_threshold_range_and_refuses_a_bad_one():
    prof = _stored_profile(AccelConfig(), 20, threshold_range=[0.08, 0.8])
    assert profile_from_dict(prof.to_dict()).study[CALIBRATION] == [0.08, 0.8]
    data = prof.to_dict()
    data["study"][CALIBRATION] = [0.08]
    with pytest.raises(ProfileError, match="study.threshold_range"):
        profile_from_dict(data)


def test_a_repeat_of_a_warm_point_counts_once():
    study = optuna.create_study()
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for number, attrs in enumerate([{"preset": True}, {WARM: 1}, {WARM: 1}, {"preset": True, WARM: 1, "repeat_of": 1}]):
        study.add_trial(optuna.trial.create_trial(params={"x": number / 10}, distributions=dist, value=1.0, user_attrs=attrs))
    assert [t.number for t in warm_trials(study)] == [1, 2]


def test_a_warm_point_set_aside_on_held_out_prompts_did_not_hold():
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from mindiesd_tune.tuner.pick import HELDOUT
    from mindiesd_tune.tuner.warm import held

    study = optuna.create_study(directions=["minimize", "maximize"])
    dist = {"cache.method": CategoricalDistribution(["none", "first_block"]), "cache.threshold": FloatDistribution(0.01, 1.0)}
    for n, threshold in enumerate((0.1, 0.2)):
        study.add_trial(optuna.trial.create_trial(
            params={"cache.method": "first_block", "cache.threshold": threshold}, distributions=dist, values=[0.5, 35.0],
            user_attrs={WARM: f"id{n}", "latency_s": 0.5, "speedup": 2.0, "speedup_low": 1.9, "speedup_high": 2.1},
            constraints={"psnr>=30": -5.0}))
    assert held(study) == (2, 2)
    study.set_user_attr(HELDOUT, {"1": {"meets": False}})
    assert held(study) == (1, 2)


def test_the_pick_is_followed_by_itself_with_the_presets_that_move_no_quality_knob(tmp_path, monkeypatch):
    import dataclasses

    from mindiesd_tune.accel.methods.compile import COMPILE_ENV
    from mindiesd_tune.tuner.warm import lay_over, over_pick

    monkeypatch.setenv(COMPILE_ENV, "1")  # the suite leaves compile out of studies (conftest.py)

    url = f"sqlite:///{tmp_path / 'p.db'}"
    pick = AccelConfig(cache=ScheduleCacheConfig(compute_steps=[0, 1, 5, 19], budget=0.35, warmup_steps=2))
    ProfileStore(url).publish(_stored_profile(pick, 20))
    ctx = SpaceContext(n_blocks=4, num_inference_steps=20, step_change=tuple([0.5] * 20), batch_cfg=True)
    # batched CFG calls, bf16 and compile: no cache or sparse preset (they trade quality for speed)
    assert [s for s, _ in over_pick(FAMILY, ctx)] == ["steps", "quant", "compile"]
    info = {"model": {"family": FAMILY, "fingerprint": "a" * 16}, "hardware": HW,
            "workload": {"generation": {"num_inference_steps": 20}}}
    (first, a1), (second, a2) = warm_points(url, info, ctx, lambda _: None)
    assert a1 == {WARM: 1} and a2 == {WARM: 1, "combined": True}  # a combination that misses is not walked back
    one, both = config_from_params(first), config_from_params(second)
    assert one.cache == both.cache and both.cache.method == "schedule"
    assert both.steps.batch_cfg and both.quant.precision["denoiser"] == "bfloat16" and both.compile.mode == "default"
    assert not one.steps.batch_cfg and one.compile.mode == "none"
    # a section the pick sets keeps the pick's setting; nothing to lay gives no second point
    assert lay_over(second, over_pick(FAMILY, ctx)) is None
    # compile conflicts with a method hooking the attention inside the blocks: the rest is laid
    hooked = {**first, "cache.method": "attention_cache", "cache.step_interval": 2, "cache.step_start": 0, "cache.block_start": 0}
    hooked = {k: v for k, v in hooked.items() if not k.startswith("cache.") or k in (
        "cache.method", "cache.step_interval", "cache.step_start", "cache.block_start")}
    laid = config_from_params(lay_over(hooked, over_pick(FAMILY, ctx)))
    assert laid.compile.mode == "none" and laid.quant.precision["denoiser"] == "bfloat16"
    # without batched calls in the space, only precision and compile
    assert [s for s, _ in over_pick(FAMILY, dataclasses.replace(ctx, batch_cfg=False))] == ["quant", "compile"]
    store_db.dispose(url)


def test_a_front_point_set_aside_on_held_out_prompts_is_not_handed_on():
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from mindiesd_tune.tuner.pick import HELDOUT
    from mindiesd_tune.tuner.warm import front_params

    study = optuna.create_study(directions=["minimize", "maximize"])
    dist = {"cache.method": CategoricalDistribution(["none", "first_block"]), "cache.threshold": FloatDistribution(0.01, 1.0)}
    study.add_trial(optuna.trial.create_trial(
        params={"cache.method": "none"}, distributions={"cache.method": dist["cache.method"]}, values=[1.0, 100.0],
        user_attrs={"latency_s": 1.0, "speedup": 1.0}, constraints={"psnr>=30": -70.0}))
    # a bolder point, the same point again, and a safer one: the bolder missed on the held-out prompts
    for threshold, latency, psnr in ((0.3, 0.3, 31.0), (0.3, 0.3, 31.0), (0.1, 0.5, 36.0)):
        study.add_trial(optuna.trial.create_trial(
            params={"cache.method": "first_block", "cache.threshold": threshold}, distributions=dist,
            values=[latency, psnr], user_attrs={"latency_s": latency, "speedup": 1.0 / latency},
            constraints={"psnr>=30": 30.0 - psnr}))
    assert [p["cache.threshold"] for p in front_params(study)] == [0.3, 0.1]
    study.set_user_attr(HELDOUT, {"1": {"meets": False}})
    assert [p["cache.threshold"] for p in front_params(study)] == [0.1]
