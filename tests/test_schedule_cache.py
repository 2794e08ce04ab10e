"""Calibrated methods: our step schedule, diffusers' MagCache with the study's ratios, calibrated presets."""

import dataclasses

import numpy as np
import optuna
import pytest

from conftest import generate
from mindiesd_tune import apply_profile, load_profile
from mindiesd_tune.accel import AccelConfig, apply, step_statistics
from mindiesd_tune.accel.cache.schedule import budget_steps, rescale, select_steps
from mindiesd_tune.accel.methods import ScheduleCacheConfig
from mindiesd_tune.accel.methods.first_block import can_skip
from mindiesd_tune.profile import Profile
from mindiesd_tune.search_spaces import SpaceContext, describe, neutral_params, presets, suggest


def cfg(cache):
    return AccelConfig(cache=cache)


# ---------------------------------------------------------------- the mask


# demo-flux's shape: fast change at the start and the end, a slow drift in between
CURVE = [0.0, 0.45, 0.2, 0.14, 0.09, 0.09, 0.08, 0.07, 0.06, 0.06, 0.06, 0.06, 0.07, 0.07, 0.08, 0.08, 0.09, 0.11, 0.14, 0.2]


@pytest.mark.parametrize("budget", [0.2, 0.3, 0.45, 0.7])
@pytest.mark.parametrize("warmup", [1, 3])
def test_mask_respects_the_budget_and_computes_the_first_and_last_steps(budget, warmup):
    steps = select_steps(CURVE, budget, warmup)
    n = len(CURVE)
    assert len(steps) == budget_steps(n, budget, warmup) == max(warmup + 1, round(budget * n))
    assert steps == sorted(set(steps))
    assert set(range(warmup)) <= set(steps) and steps[-1] == n - 1


def test_mask_computes_steps_closer_where_the_model_changes_faster():
    steps = select_steps(CURVE, 0.35, 1)
    gaps = np.diff(steps)
    # the slow middle gets the longest run of reused steps, the fast start the shortest
    assert gaps[0] < max(gaps) and max(gaps) == max(b - a for a, b in zip(steps, steps[1:]) if 5 <= a <= 14)
    # a flat curve spreads the same budget evenly
    even = np.diff(select_steps([0.0] + [0.1] * 19, 0.35, 1))
    assert even.max() - even.min() <= 1


def _exact_cost(mask, distance):
    return sum(distance[a][s] for a, b in zip(mask, mask[1:]) for s in range(a + 1, b))


def test_mask_minimises_the_measured_distance_where_the_bound_points_elsewhere():
    import itertools

    n = 8
    change = [0.0] + [0.1] * (n - 1)  # flat: the bound spreads the computed steps evenly
    # a residual that drifts steadily except that steps 2..4 return to where step 1 was: reusing
    # step 1 there costs nothing, which the step-to-step change cannot show
    level = [0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 4.0]
    distance = [[abs(level[s] - level[k]) for s in range(n)] for k in range(n)]
    k = budget_steps(n, 0.5, 1)
    best = min((sorted({0, n - 1, *mid}) for mid in itertools.combinations(range(1, n - 1), k - 2)),
               key=lambda m: _exact_cost(m, distance))
    proxy = select_steps(change, 0.5, 1)
    exact = select_steps(change, 0.5, 1, distance=distance)
    assert len(exact) == k and _exact_cost(exact, distance) == pytest.approx(_exact_cost(best, distance))
    assert _exact_cost(proxy, distance) > _exact_cost(exact, distance)
    assert exact != proxy
    # the search space carries the matrix row by row, and the method's mask follows it
    from mindiesd_tune.accel.methods.schedule import mask

    ctx = SpaceContext(num_inference_steps=n, step_change=tuple(change),
                       residual_distance=tuple(x for row in distance for x in row))
    assert mask(ctx, 0.5, 1) == exact
    assert mask(dataclasses.replace(ctx, residual_distance=None), 0.5, 1) == proxy
    with pytest.raises(ValueError, match="8 x 8"):
        select_steps(change, 0.5, 1, distance=distance[:-1])


def test_full_budget_and_rescaling():
    assert select_steps(CURVE, 1.0, 1) == list(range(20))
    assert rescale([0, 2, 5, 9], 10) == [0, 2, 5, 9]
    assert rescale([0, 2, 5, 9], 5) == [0, 1, 2, 4]


# ---------------------------------------------------------------- the method on a model


@pytest.mark.slow
def test_calibration_measures_the_distance_between_every_pair_of_steps(tiny_flux, monkeypatch):
    from mindiesd_tune.accel.cache import stats as stats_module

    gen = tiny_flux.generation
    n = gen["num_inference_steps"]
    stats = step_statistics(tiny_flux.pipe, "a red circle", **gen)
    d = np.asarray(stats.residual_distance)
    assert d.shape == (n, n)
    assert np.allclose(np.diag(d), 0) and np.allclose(d, d.T)
    assert (d[~np.eye(n, dtype=bool)] > 0).all()
    assert stats.to_dict()["residual_distance"] == stats.residual_distance
    # a model larger than the sample: a subset of the elements, the same at every step
    monkeypatch.setattr(stats_module, "DISTANCE_SAMPLES", 16)
    small = np.asarray(step_statistics(tiny_flux.pipe, "a red circle", **gen).residual_distance)
    assert small.shape == (n, n) and np.allclose(np.diag(small), 0) and (small[~np.eye(n, dtype=bool)] > 0).all()
    assert not np.allclose(small, d)



@pytest.mark.slow
def test_neutral_schedule_is_the_baseline_bit_for_bit_and_remove_restores(tiny_flux):
    base = generate(tiny_flux)
    steps = tiny_flux.generation["num_inference_steps"]
    for neutral in (ScheduleCacheConfig(), ScheduleCacheConfig(compute_steps=list(range(steps)))):
        with apply(tiny_flux.pipe, cfg(neutral)) as handle:
            assert np.array_equal(generate(tiny_flux), base)
            assert handle.stats()["blocks_skipped"] == 0
    mask = [0, 1, steps - 1]
    handle = apply(tiny_flux.pipe, cfg(ScheduleCacheConfig(compute_steps=mask, budget=0.5)))
    out = generate(tiny_flux)
    stats = handle.stats()
    handle.remove()
    assert not np.array_equal(out, base)
    # every block of every skipped step is counted, for each CFG branch alike
    assert stats["blocks_skipped"] > 0 and stats["cached_steps"] > 0
    assert stats["blocks_skipped"] / (stats["blocks_skipped"] + stats["blocks_computed"]) == pytest.approx(
        1 - len(mask) / steps)
    assert np.array_equal(generate(tiny_flux), base)


@pytest.mark.slow
def test_schedule_is_sampled_with_its_mask_and_survives_a_profile_round_trip(tiny_flux, tmp_path):
    gen = tiny_flux.generation
    stats = step_statistics(tiny_flux.pipe, "a red circle", **gen)
    ctx = describe(tiny_flux.pipe, gen, stats)
    n = gen["num_inference_steps"]
    assert len(ctx.step_change) == len(ctx.mag_ratios) == n
    # the measured distances reach the space row by row, and the mask is chosen on them
    assert np.allclose(np.reshape(ctx.residual_distance, (n, n)), stats.residual_distance)
    assert SpaceContext.from_dict(ctx.to_dict()) == ctx
    study = optuna.create_study()
    study.enqueue_trial({**neutral_params("dit-image", ctx), "cache.method": "schedule", "cache.budget": 0.5,
                         "cache.warmup_steps": 1, "cache.taylor_order": 0})
    config = suggest(study.ask(), "dit-image", ctx)
    assert config.cache.compute_steps == select_steps(ctx.step_change, 0.5, 1, stats.residual_distance)
    prof = Profile(model={"name": "tiny-flux-random", "family": "dit-image", "pipeline": "FluxPipeline"},
                   generation=dict(gen), accel=config)
    loaded = load_profile(prof.save(tmp_path / "p.yaml"))
    assert loaded.accel.cache == config.cache
    with apply(tiny_flux.pipe, config):
        expected = generate(tiny_flux)
    with apply_profile(tiny_flux.pipe, loaded, keep_original=True) as handle:
        assert np.array_equal(generate(tiny_flux, **handle.call_overrides), expected)


# ---------------------------------------------------------------- diffusers' MagCache in a study


@pytest.mark.slow
def test_magcache_is_sampled_with_the_studys_ratios_and_the_profile_carries_them(tmp_path, tiny_flux):
    from mindiesd_tune.tuner import parse_budget, run_study
    from mindiesd_tune.tuner.outputs import freeze_profile

    outcome = run_study("tiny-flux-random", parse_budget("4t"), tmp_path, repeats=1, isolate=False, sampler="random",
                        worker_factory="calibrated_factory:mag_only", log=lambda s: None)
    study = outcome.study
    workload = study.user_attrs["workload"]
    # the calibration the study made: one baseline call on its first prompt and seed
    ratios = step_statistics(tiny_flux.pipe, workload["prompts"][0], seed=workload["seeds"][0],
                             **workload["generation"]).mag_ratios
    mags = [t for t in study.trials if t.params.get("cache.method") == "diffusers_mag" and "config" in t.user_attrs]
    assert mags, [t.params for t in study.trials]
    trial = mags[0]
    assert "cache.mag_ratios" not in trial.params  # a list is no Optuna parameter
    prof = freeze_profile(study, trial)
    assert prof.accel.cache.mag_ratios == pytest.approx(list(ratios))
    assert prof.accel.cache.threshold == pytest.approx(trial.params["cache.threshold"])
    loaded = load_profile(prof.save(tmp_path / "mag.yaml"))
    assert loaded.accel.cache == prof.accel.cache
    with apply(tiny_flux.pipe, prof.accel) as handle:
        expected = generate(tiny_flux, **handle.call_overrides)
    with apply_profile(tiny_flux.pipe, loaded, keep_original=True) as handle:
        assert np.array_equal(generate(tiny_flux, **handle.call_overrides), expected)


def test_magcache_needs_ratios_of_the_workloads_step_count():
    from mindiesd_tune.accel.methods import get_method

    mag = get_method("cache", "diffusers_mag")
    ctx = SpaceContext(num_inference_steps=4, cache_mixin=True, family="dit-image")
    assert not mag.applies(ctx)
    assert not mag.applies(dataclasses.replace(ctx, mag_ratios=(1.0, 0.9, 0.9)))
    assert mag.applies(dataclasses.replace(ctx, mag_ratios=(1.0, 0.9, 0.9, 0.9)))
    assert not mag.applies(dataclasses.replace(ctx, mag_ratios=(1.0, 0.9, 0.9, 0.9), cache_mixin=False))


# ---------------------------------------------------------------- calibrated presets


def _cache_presets(ctx):
    return [p for p in presets("dit-image", ctx) if p.get("cache.method") not in (None, "none")]


def test_first_block_preset_follows_the_measured_change():
    # every step's first-block change is above the fixed 0.08: that preset would cache nothing
    changes = (0.0, 0.3, 0.2, 0.12, 0.1, 0.09, 0.09, 0.095, 0.1, 0.13)
    assert not can_skip(0.08, changes, 2)
    ctx = SpaceContext(n_blocks=4, num_inference_steps=10, family="dit-image", first_block_change=changes)
    # (the same cache preset may come again beside another section's preset)
    (fb,) = {(p["cache.threshold"], p["cache.warmup_steps"]) for p in _cache_presets(ctx) if p["cache.method"] == "first_block"}
    assert can_skip(fb[0], changes, fb[1])
    assert fb[0] > 0.08
    # uncalibrated, the fixed anchor stays
    fixed = {p["cache.threshold"] for p in _cache_presets(SpaceContext(n_blocks=4, family="dit-image"))
             if p["cache.method"] == "first_block"}
    assert fixed == {0.08}


def test_presets_that_cannot_skip_are_not_enqueued():
    # ratios this far from 1 break MagCache's default threshold at once: it would skip nothing
    steps = 10
    wild = SpaceContext(n_blocks=4, num_inference_steps=steps, family="dit-image", cache_mixin=True,
                        mag_ratios=(1.0,) + (0.5,) * (steps - 1), step_change=(0.0,) + (0.1,) * (steps - 1))
    names = [p["cache.method"] for p in _cache_presets(wild)]
    assert "diffusers_mag" not in names and "schedule" in names
    calm = dataclasses.replace(wild, mag_ratios=(1.0,) + (0.99,) * (steps - 1))
    assert "diffusers_mag" in [p["cache.method"] for p in _cache_presets(calm)]


def test_schedule_and_magcache_stay_out_of_an_uncalibrated_space():
    from mindiesd_tune.search_spaces import offered

    ctx = SpaceContext(n_blocks=4, num_inference_steps=10, cache_mixin=True)
    names = offered("cache", "dit-image", ctx)
    assert "schedule" not in names and "diffusers_mag" not in names
    cal = dataclasses.replace(ctx, mag_ratios=(1.0,) * 10, step_change=(0.0,) + (0.1,) * 9)
    assert {"schedule", "diffusers_mag"} <= set(offered("cache", "dit-image", cal))


# ---------------------------------------------------------------- the report's front


def test_report_front_is_built_on_the_speedup_not_on_absolute_latency():
    import pandas as pd

    from mindiesd_tune.reports.figures import pareto_figure, plotted

    # trial 6 was timed on a busier moment (slower in seconds) yet is faster against its baseline
    df = pd.DataFrame([
        {"trial": 0, "state": "complete", "latency_s": 1.08, "speedup": 1.0, "psnr": float("inf"), "feasible": True},
        {"trial": 6, "state": "complete", "latency_s": 0.983, "speedup": 1.26, "psnr": 32.0, "feasible": True},
        {"trial": 7, "state": "complete", "latency_s": 0.865, "speedup": 1.12, "psnr": 32.0, "feasible": True},
    ])
    done = plotted(df, "psnr").set_index("trial")
    assert done.loc[6, "front"] and not done.loc[7, "front"] and done.loc[0, "front"]
    fig = pareto_figure(df, "psnr", chosen=6)
    assert "speed-up" in fig.layout.xaxis.title.text
    star = [t for t in fig.data if t.name == "chosen profile"][0]
    assert list(star.x) == [1.26]


def test_budgets_that_choose_one_mask_are_one_configuration():
    one = cfg(ScheduleCacheConfig(compute_steps=[0, 1, 5, 9], budget=0.386, warmup_steps=2))
    same = cfg(ScheduleCacheConfig(compute_steps=[0, 1, 5, 9], budget=0.377, warmup_steps=1))
    other = cfg(ScheduleCacheConfig(compute_steps=[0, 1, 4, 9], budget=0.386, warmup_steps=2))
    extrapolated = cfg(ScheduleCacheConfig(compute_steps=[0, 1, 5, 9], budget=0.386, warmup_steps=2, taylor_order=1))
    assert one.identity() == same.identity()
    assert len({one.identity(), other.identity(), extrapolated.identity()}) == 3
    assert one.to_dict() != same.to_dict()  # the profile still records what the mask was chosen with


def test_a_trial_installing_an_earlier_trials_configuration_is_answered_from_storage():
    from mindiesd_tune.tuner.search import _same_params

    study = optuna.create_study(directions=["minimize", "maximize"])
    first = study.ask()
    first.suggest_float("cache.budget", 0.25, 0.7)
    first.set_user_attr("config_id", "mask 0,1,5,9")
    first.set_user_attr("latency_s", 0.5)
    study.tell(first, [0.5, 31.0])
    other = study.ask()
    other.suggest_float("cache.budget", 0.25, 0.7)
    other.set_user_attr("config_id", "mask 0,1,4,9")
    assert _same_params(study, other) is None
    again = study.ask()
    again.suggest_float("cache.budget", 0.25, 0.7)
    again.set_user_attr("config_id", "mask 0,1,5,9")
    assert again.params != first.params and _same_params(study, again).number == first.number
