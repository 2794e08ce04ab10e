"""benchmarks/peers.py: one row per peer on a freshly loaded pipeline, and the pipeline left as found."""

import importlib.util
import math

import pytest

from benchmarks import peers

FIELDS = {"model", "method", "params", "speedup", "speedup_low", "speedup_high", "speedup_q1", "speedup_q3", "latency_s", "baseline_s", "psnr", "ssim",
          "attn_computed", "attn_total", "held_out_prompts", "restored"}
PROMPTS = ["a red circle on a blue background"]
FAST = {"num_inference_steps": 2}


def row(cand):
    return peers.run_row("tiny-flux-random", cand, PROMPTS, repeats=1, warmup=0, generation=FAST)


def test_diffusers_peer_row_has_its_fields_and_restores_the_pipeline():
    from diffusers.hooks import FirstBlockCacheConfig

    # a threshold no step's change reaches: the second step is served from the cache
    r = row(peers.Candidate("diffusers_first_block", {"threshold": 1e6}, peers._diffusers(FirstBlockCacheConfig(threshold=1e6))))
    assert FIELDS <= set(r), r
    assert r["restored"] is True
    assert r["speedup_low"] <= r["speedup"] <= r["speedup_high"] and r["speedup_q1"] <= r["speedup_q3"]
    assert r["latency_s"] > 0 and r["baseline_s"] > 0
    assert r["held_out_prompts"] == 1
    # the cached step changed the output and skipped attention in every block but the first
    assert math.isfinite(r["psnr"]) and r["ssim"] < 1.0
    assert r["attn_computed"] < r["attn_total"]


def test_a_method_left_switched_on_is_reported_as_not_restored():
    from diffusers.hooks import FirstBlockCacheConfig

    def leaky(pipe):
        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=1e6))
        return lambda: None

    r = row(peers.Candidate("leaky", {}, leaky))
    assert r["restored"] is False


def test_baseline_against_itself_is_identical():
    r = row(peers.Candidate("baseline_aa", {}))
    assert r["psnr"] == math.inf and r["restored"] is True
    assert r["attn_computed"] == r["attn_total"]


@pytest.mark.skipif(importlib.util.find_spec("cache_dit") is None, reason="cache-dit not installed (the peers extra)")
def test_cache_dit_row_restores_the_pipeline():
    cache = {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "residual_diff_threshold": 0.08, "num_inference_steps": 2}
    r = row(peers.Candidate("cachedit_dbcache", {}, peers._cache_dit(cache, {"taylorseer_order": 1})))
    assert "error" not in r, r
    assert r["restored"] is True


def test_heldout_prompts_exclude_the_tuning_prompts():
    from mindiesd_tune.models import load

    loaded = load("tiny-flux-random")
    drawn = peers.heldout(loaded, 6, seed=15, exclude=["a red circle on a blue background"])
    assert len(drawn) == 6 and "a red circle on a blue background" not in drawn
    assert not set(drawn) & set(peers.DEFAULT_PROMPTS)


def test_floor_summary_picks_the_fastest_row_meeting_it():
    rows = [{"method": "a", "params": {}, "speedup": 2.0, "speedup_low": 1.9, "speedup_high": 2.1, "psnr": 25.0, "ssim": 0.9},
            {"method": "b", "params": {}, "speedup": 1.5, "speedup_low": 1.4, "speedup_high": 1.6, "psnr": 35.0, "ssim": 0.99},
            {"method": "mindiesd_tune_profile", "params": {}, "speedup": 1.4, "speedup_low": 1.3, "speedup_high": 1.5,
             "psnr": 40.0, "ssim": 0.99}]
    (s,) = peers.best_per_floor(rows, [peers.parse_floor("psnr>=30")])
    assert s["best"]["method"] == "b" and s["best_peer"]["method"] == "b"
    assert s["profile"]["method"] == "mindiesd_tune_profile" and s["profile_meets_floor"] is True


def test_bad_floor_is_one_line_and_exit_2(capsys):
    assert peers.main(["--floor", "psnr>>30"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: bad quality floor") and "\n" not in err


def test_without_cache_dit_its_rows_are_skipped_with_the_install_line(monkeypatch):
    from mindiesd_tune.models import load

    monkeypatch.setattr(peers, "has_cache_dit", lambda: False)
    notes = []
    cands = peers.peer_candidates(load("tiny-flux-random"), None, None, notes)
    assert notes == ["cache-dit is not installed: pip install 'mindiesd-tune[peers]'"]
    assert cands and not any(c.method.startswith("cachedit") for c in cands)


def test_profile_row_applies_the_profile_and_removes_it():
    import warnings

    from mindiesd_tune import AccelConfig, Profile
    from mindiesd_tune.accel.methods import FirstBlockCacheConfig

    prof = Profile(model={"name": "tiny-flux-random"}, generation=dict(FAST),
                   accel=AccelConfig(cache=FirstBlockCacheConfig(threshold=1e6)))
    cand = peers.profile_candidate(prof)
    assert cand.method == "mindiesd_tune_profile" and cand.params["cache"] == "first_block"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # made here, not by a tuner run: the fingerprint is not recorded
        r = row(cand)
    assert "error" not in r, r
    assert r["restored"] is True and r["attn_computed"] < r["attn_total"]


def test_true_cfg_adds_the_peers_best_settings_over_batched_cfg_calls(monkeypatch):
    import dataclasses

    from mindiesd_tune.accel.parallel.cfg import BATCH_HOOK_NAME
    from mindiesd_tune.models import load

    monkeypatch.setattr(peers, "has_cache_dit", lambda: False)
    loaded = load("tiny-flux-random")
    plain = peers.peer_candidates(loaded, None, None, [])
    assert not any(c.method.endswith("+batch_cfg") for c in plain)  # one call per step: nothing to batch
    true_cfg = dataclasses.replace(loaded, generation={**loaded.generation, "true_cfg_scale": 4.0})
    cands = peers.peer_candidates(true_cfg, None, None, [])
    (batched,) = [c for c in cands if c.method.endswith("+batch_cfg")]  # MagCache needs ratios, none given here
    assert batched.method == "diffusers_first_block+batch_cfg" and batched.params == {"threshold": 0.2}
    off = batched.setup(loaded.pipe)
    assert BATCH_HOOK_NAME in loaded.pipe.transformer._diffusers_hook.hooks
    off()
    assert BATCH_HOOK_NAME not in loaded.pipe.transformer._diffusers_hook.hooks
