"""`compile:` (regional torch.compile) through accel.apply and Handle.remove() on a tiny model."""

import os
import shutil

import numpy as np
import pytest
import torch

from conftest import generate
from mindiesd_tune import accel
from mindiesd_tune.models import load

# Inductor on the CPU writes C++ and builds it; without a compiler there is nothing to test here.
needs_compiler = pytest.mark.skipif(
    not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "clang++")),
    reason="torch.compile on the CPU needs a C++ compiler",
)

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


def test_neutral_compile_is_exact(model):
    with torch.inference_mode():
        base = generate(model)
        with accel.apply(model.pipe, {"compile": {"mode": "none"}}):
            assert all(getattr(b, "_compiled_call_impl", None) is None for b in _blocks(model))
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
        assert all(b._compiled_call_impl is not None for b in blocks)
        compiled = generate(model)
        # the blocks really ran through Dynamo: at least one graph per block class
        assert _frames_compiled() - frames >= len({type(b) for b in blocks})
        again = generate(model)  # compiled once, then reused: deterministic call to call
        handle.remove()

        assert all(b._compiled_call_impl is None for b in blocks)
        frames = _frames_compiled()
        restored = generate(model)
        assert _frames_compiled() == frames  # eager again: nothing goes through Dynamo
    assert np.abs(compiled - base).max() <= COMPILE_ATOL
    assert np.array_equal(again, compiled)
    assert np.array_equal(restored, base)
    assert not handle.active and getattr(model.pipe, "_mindiesd_accel_handle", None) is None


def test_uncompile_returns_a_compiled_module_to_eager_calls_on_this_torch():
    # the one private use (nn.Module._compiled_call_impl): fails here first on a torch that moves it
    from mindiesd_tune.accel.methods.compile import uncompile

    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    m, x = torch.nn.Linear(2, 2), torch.ones(1, 2)
    eager = m(x)
    m.compile(backend=backend)
    assert torch.equal(m(x), eager) and len(graphs) == 1  # compile() wraps __call__ on this torch
    uncompile(m)
    torch._dynamo.reset()  # a still-compiled call would now compile again
    assert torch.equal(m(x), eager) and len(graphs) == 1
