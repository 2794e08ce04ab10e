"""`compile:` (regional torch.compile) through accel.apply and Handle.remove(), and as a searched section."""

import numpy as np
import pytest
import torch

from conftest import generate
from mindiesd_tune import accel
from mindiesd_tune.accel.methods.compile import has_compiler
from mindiesd_tune.models import load

# Inductor on the CPU writes C++ and builds it; without a compiler there is nothing to test here.
needs_compiler = pytest.mark.skipif(not has_compiler("cpu"), reason="torch.compile on the CPU needs a C++ compiler")

# The compiled blocks fuse and reorder the same float32 arithmetic, so their output may differ
# from eager by rounding (a few float32 ulps per op, observed ~5e-7 after 10 steps on outputs in
# [0, 1]). 1e-4 leaves room for that to grow over the denoising steps, and is still 40x below one
# uint8 level (1/255), so any real change to what the blocks compute fails it.
COMPILE_ATOL = 1e-4


@pytest.fixture
def model():
    loaded = load("tiny-flux-random", device="cpu")
    yield loaded
    torch._dynamo.reset()  # compiled graphs and their guards stay in this process otherwise


def _blocks(loaded):
    return [b.module for b in accel.transformer_blocks(loaded.pipe.transformer)]


def _frames_compiled() -> int:
    from torch._dynamo.utils import counters

    return counters["frames"]["ok"]


def _compiled(block) -> bool:
    return "forward" in vars(block)


def test_neutral_compile_is_exact(model):
    with torch.inference_mode():
        base = generate(model)
        with accel.apply(model.pipe, {"compile": {"mode": "none"}}):
            assert not any(_compiled(b) for b in _blocks(model))
            out = generate(model)
    assert np.array_equal(out, base)


@pytest.mark.slow
@needs_compiler
def test_regional_compile_matches_eager_and_remove_restores_it(model):
    blocks = _blocks(model)
    assert len(blocks) >= 2
    with torch.inference_mode():
        base = generate(model)
        frames = _frames_compiled()
        handle = accel.apply(model.pipe, {"compile": {"mode": "default", "dynamic": False}})
        assert all(_compiled(b) for b in blocks)
        compiled = generate(model)
        # the blocks really ran through Dynamo: at least one graph per block class
        assert _frames_compiled() - frames >= len({type(b) for b in blocks})
        again = generate(model)  # compiled once, then reused: deterministic call to call
        handle.remove()

        assert not any(_compiled(b) for b in blocks)
        frames = _frames_compiled()
        restored = generate(model)
        assert _frames_compiled() == frames  # eager again: nothing goes through Dynamo
    assert np.abs(compiled - base).max() <= COMPILE_ATOL
    assert np.array_equal(again, compiled)
    assert np.array_equal(restored, base)
    assert not handle.active and getattr(model.pipe, "_mindiesd_accel_handle", None) is None


@pytest.mark.slow
@needs_compiler
def test_compile_under_a_step_cache_traces_the_blocks_only(model):
    # Compiled with the cache hooks inside the graph, Dynamo met a new hook state (step, branch,
    # skip or not) on every call and recompiled until its limit, then ran eagerly. Installed
    # first, only the blocks' own forwards are compiled: the graphs are made on the first call
    # and every later apply/remove round (as a study's interleaved timing does) reuses them.
    n = model.generation["num_inference_steps"]
    cache = {"method": "schedule", "compute_steps": [0, n - 1], "budget": 0.5}
    with torch.inference_mode():
        with accel.apply(model.pipe, {"cache": cache}):
            eager = generate(model)
        outs, frames = [], []
        for _ in range(3):
            with accel.apply(model.pipe, {"cache": cache, "compile": {"mode": "default"}}) as handle:
                outs.append(generate(model))
                frames.append(_frames_compiled())
                assert handle.stats()["cached_steps"] > 0  # the cache still skips steps around the compiled blocks
    assert frames[1] == frames[0] and frames[2] == frames[0]
    assert np.abs(outs[0] - eager).max() <= COMPILE_ATOL
    assert np.array_equal(outs[1], outs[0]) and np.array_equal(outs[2], outs[0])


def test_remove_puts_back_a_forward_another_library_had_installed(monkeypatch, model):
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)  # what is compiled is not the point here
    block = _blocks(model)[0]
    theirs = block.forward  # a bound method, stored on the instance as a hooking library does
    block.forward = theirs
    try:
        handle = accel.apply(model.pipe, {"compile": {"mode": "default"}})
        handle.remove()
        assert vars(block)["forward"] is theirs
    finally:
        vars(block).pop("forward", None)


def test_compile_is_searched_where_inductor_builds_kernels(monkeypatch):
    from mindiesd_tune.accel.methods import compile as compile_entry
    from mindiesd_tune.search_spaces import SpaceContext, neutral_params, offered, presets

    monkeypatch.setenv(compile_entry.COMPILE_ENV, "1")
    monkeypatch.setattr(compile_entry, "has_compiler", lambda device: device in ("cpu", "cuda"))
    ctx = SpaceContext(device="cpu")
    assert offered("compile", "dit-image", ctx) == ["regional"]
    assert neutral_params("dit-image", ctx)["compile.mode"] == "none"
    points = presets("dit-image", ctx)
    assert {"compile.mode": "default"}.items() <= points[-1].items()
    assert all(p["compile.mode"] == "none" for p in points[:-1])
    # left out: --no-compile, the environment, an NPU, a rank group, a UNet
    for family, context in (("dit-image", SpaceContext(device="cpu", compile=False)),
                            ("dit-image", SpaceContext(device="npu")),
                            ("dit-image", SpaceContext(device="cpu", world_size=2)),
                            ("unet-image", ctx)):
        assert offered("compile", family, context) == []
    monkeypatch.setenv(compile_entry.COMPILE_ENV, "0")
    assert offered("compile", "dit-image", ctx) == []


def test_the_space_never_proposes_compile_beside_a_method_it_conflicts_with(monkeypatch):
    import optuna

    from mindiesd_tune.accel.methods import compile as compile_entry
    from mindiesd_tune.search_spaces import SpaceContext, suggest

    monkeypatch.setenv(compile_entry.COMPILE_ENV, "1")
    monkeypatch.setattr(compile_entry, "has_compiler", lambda device: True)
    ctx = SpaceContext(device="cpu")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    conflicting, compiled = 0, 0
    for _ in range(300):
        trial = study.ask()
        config = suggest(trial, "dit-image", ctx)
        study.tell(trial, 0.0)
        method = config.cache.method if config.cache is not None else "none"
        if f"cache.{method}" in compile_entry.COMPILE_CONFLICTS:
            conflicting += 1
            assert "compile.mode" not in trial.params  # not sampled: the section stays off
            assert config.compile is None or config.compile.mode == "none"
        elif "compile.mode" in trial.params:
            compiled += trial.params["compile.mode"] != "none"
    assert conflicting > 20 and compiled > 20  # both kinds were drawn


def test_the_evaluator_drops_earlier_graphs_before_a_trial_that_compiles_and_fails_past_the_limit(monkeypatch):
    from mindiesd_tune.accel.config import AccelConfig
    from mindiesd_tune.tuner import evaluator

    resets = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))
    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", False)  # put back after the test
    evaluator._fresh_compile(AccelConfig.from_dict({"cache": {"method": "first_block", "threshold": 0.1}}))
    assert resets == [] and not torch._dynamo.config.fail_on_recompile_limit_hit
    evaluator._fresh_compile(AccelConfig.from_dict({"compile": {"mode": "default"}}))
    # and past the recompile limit a trial fails rather than timing eager blocks as compiled ones
    assert resets == [1] and torch._dynamo.config.fail_on_recompile_limit_hit


@pytest.mark.slow
@needs_compiler
def test_a_study_runs_its_compile_preset(monkeypatch, tmp_path):
    from mindiesd_tune.accel.methods.compile import COMPILE_ENV
    from mindiesd_tune.tuner import TuneOptions, parse_budget, run_study
    from mindiesd_tune.tuner.pick import speed_of

    monkeypatch.setenv(COMPILE_ENV, "1")
    out = run_study("tiny-flux-random", parse_budget("12t"), tmp_path / "run",
                    TuneOptions(isolate=False, quiet=True, confirm_precision=None, log=lambda line: None))
    torch._dynamo.reset()
    compiled = [t for t in out.study.trials if t.params.get("compile.mode") == "default"]
    assert compiled, "the compile preset was not queued"
    first = compiled[0]
    # it ran: timed in full (interleaved with the baseline), or timed by its screen and dropped
    # there as no faster than the baseline (a cold inductor cache makes a compiled tiny model slow)
    assert first.state.name in ("COMPLETE", "PRUNED"), first.user_attrs.get("fail_reason")
    if first.state.name == "COMPLETE":
        assert speed_of(first).speedup is not None
    else:
        assert first.user_attrs["screen"]["speedup"] is not None
