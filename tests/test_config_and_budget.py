import pytest

from mindiesd_tune import AccelConfig
from mindiesd_tune.accel import ConfigError, FirstBlockCacheConfig, NoCache
from mindiesd_tune.errors import UserError
from mindiesd_tune.tuner import parse_budget, parse_floor


def test_yaml_round_trip_keeps_every_field():
    cfg = AccelConfig(cache=FirstBlockCacheConfig(threshold=0.12, warmup_steps=3, max_cached_steps=8, accumulate=True))
    again = AccelConfig.from_yaml(cfg.to_yaml())
    assert again == cfg
    assert isinstance(again.cache, FirstBlockCacheConfig)


def test_absent_sections_mean_off():
    cfg = AccelConfig.from_dict({})
    assert isinstance(cfg.cache, NoCache) and cfg.is_neutral


@pytest.mark.parametrize(
    "data, field",
    [
        ({"cache": {"method": "first_block", "treshold": 0.1}}, "accel.cache.treshold"),
        ({"cache": {"method": "magic"}}, "accel.cache.method"),
        ({"cache": {"method": "first_block", "threshold": -1}}, "cache.threshold"),
        ({"cache": {"method": "first_block", "warmup_steps": "two"}}, "accel.cache.warmup_steps"),
        ({"turbo": {}}, "accel.turbo"),
        ({"parallel": {"cfg": 4}}, "parallel"),
        ({"compile": {"mode": "fastest"}}, "compile.mode"),
    ],
)
def test_bad_fields_are_named(data, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        AccelConfig.from_dict(data)


@pytest.mark.parametrize(
    "text, seconds, trials",
    [("90s", 90, None), ("30m", 1800, None), ("2h", 7200, None), ("40t", None, 40), ("30m+40t", 1800, 40), ("1.5m", 90, None)],
)
def test_budget_forms(text, seconds, trials):
    b = parse_budget(text)
    assert b.seconds == seconds and b.trials == trials


@pytest.mark.parametrize("text", ["", "soon", "10", "0s", "-5m", "2.5t", "10t+20t", "1h+2m"])
def test_bad_budget_is_a_user_error(text):
    with pytest.raises(UserError, match="budget"):
        parse_budget(text)


def test_quality_floor_parsing():
    f = parse_floor("ssim>=0.9")
    assert f.holds(0.95) and not f.holds(0.85) and not f.holds(None)
    assert f.violation(0.85) == pytest.approx(0.05) and f.violation(0.95) < 0
    rel = parse_floor("psnr>=0.5x")
    assert rel.holds(20, baseline_value=30) and not rel.holds(10, baseline_value=30)
    with pytest.raises(UserError):
        parse_floor("beauty>=3")
    with pytest.raises(UserError):
        parse_floor("ssim=0.9")
