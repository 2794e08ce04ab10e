"""bench --max-seconds is a cap on the whole measurement: no model call starts past it but the
first round's. Every model call here advances a fake clock by one second; nothing is timed."""

import json

import pytest

from conftest import cli
from mindiesd_tune.accel import AccelConfig, FirstBlockCacheConfig

CONFIG = AccelConfig(cache=FirstBlockCacheConfig(threshold=0.3, warmup_steps=1))
CALL_S = 1.0  # fake seconds per model call


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.starts: list[float] = []  # when each model call started

    def __call__(self) -> float:
        return self.now

    def wrap(self, generate):
        def call(*args, **kwargs):
            self.starts.append(self.now)
            out = generate(*args, **kwargs)
            self.now += CALL_S
            return out
        return call


@pytest.fixture
def evaluator(tiny_flux):
    from mindiesd_tune.tuner.evaluator import Evaluator, Workload

    prompts = ["a red circle on a blue background", "a green square"]
    return Evaluator(tiny_flux, Workload(prompts, [0, 1], dict(tiny_flux.generation)), warmup=1, repeats=1)


def _measure(ev, max_s, repeats=3, precision=1e-9):
    from mindiesd_tune.bench import measure

    clock = FakeClock()
    ev.generate = clock.wrap(ev.generate)
    try:
        return measure(ev, CONFIG, repeats, precision=precision, max_s=max_s, clock=clock), clock
    finally:
        del ev.generate


def test_no_call_starts_past_the_cap_and_it_ends_within_one_call(evaluator):
    m, clock = _measure(evaluator, max_s=7.5)  # the precision asked for is out of reach
    deadline = 100.0 + 7.5
    assert m.capped and m.rounds >= 1
    assert all(t < deadline for t in clock.starts), clock.starts
    assert clock.now <= deadline + CALL_S
    # the rounds it got are reported as timed: two calls each, after each prompt's warm-up pair
    assert m.rounds == len(m.comparison.ratios) == sum(m.rounds_by_prompt)
    assert m.prompts_scored == sum(1 for r in m.rounds_by_prompt if r) and set(m.metrics) >= {"psnr", "ssim"}


def test_a_spent_cap_still_times_one_round(evaluator):
    m, clock = _measure(evaluator, max_s=0.0)
    assert m.capped and m.rounds == 1 and m.rounds_by_prompt == [1, 0] and m.prompts_scored == 1
    assert len(clock.starts) == 2 * evaluator.warmup + 2  # one warm-up pair, one timed pair


def test_without_a_cap_every_prompt_gets_its_rounds_alternating_sides(evaluator):
    m, clock = _measure(evaluator, max_s=None, repeats=2, precision=None)
    assert not m.capped and m.rounds_by_prompt == [2, 2] and m.prompts_scored == 2
    assert len(clock.starts) == 2 * (2 * evaluator.warmup) + 2 * 2 * 2
    assert all(r > 0 for r in m.comparison.ratios)


def test_bench_command_stops_at_its_cap_and_says_how_many_rounds(capsys, tmp_path, monkeypatch):
    from test_cli_profiles import make_profile

    import mindiesd_tune.bench
    from mindiesd_tune.models import load
    from mindiesd_tune.tuner.evaluator import Evaluator

    profile = make_profile(load("tiny-flux-random", device="cpu")).save(tmp_path / "p.yaml")
    clock = FakeClock()
    monkeypatch.setattr(mindiesd_tune.bench, "_clock", clock)
    monkeypatch.setattr(Evaluator, "generate", clock.wrap(Evaluator.generate))
    code, out, err = cli(capsys, "bench", "tiny-flux-random", "--profile", str(profile), "--json", "--device", "cpu",
                         "--repeats", "50", "--max-seconds", "5")
    assert code == 0, err
    r = json.loads(out)
    assert r["capped"] and r["rounds"] >= 1 and r["rounds"] < 50
    assert clock.now <= 100.0 + 5 + CALL_S and all(t < 105.0 for t in clock.starts)
    assert f"stopped at the --max-seconds cap after {r['rounds']} interleaved round(s)" in err
    assert "not counted in --max-seconds" in err
