"""The combination contract of the method registry, on real toy pipelines.

Every pair of registered methods from different sections, each at its non-neutral
``example`` setting, on the first toy pipeline both apply to: ``apply`` installs them in
their declared order (or refuses a declared conflict in one line naming both), the pipeline
runs, and ``remove()`` gives the baseline bit for bit.
"""

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from mindiesd_tune.accel import AccelConfig, ConflictError, apply
from mindiesd_tune.accel.methods import methods
from mindiesd_tune.models import family_of
from mindiesd_tune.search_spaces import describe

STEPS = 3


def _active():
    """Every entry with a non-neutral example: what a combination can be made of."""
    return [m for m in methods() if m.example is not None and m.example != m.neutral]


def _pairs():
    return [(a, b) for a, b in itertools.combinations(_active(), 2) if a.section != b.section]


class Toy:
    """One toy pipeline, its search context, and its baseline output at STEPS steps."""

    def __init__(self, name, pipe, call):
        self.name, self.pipe = name, pipe
        self.call = {**call, "num_inference_steps": STEPS}
        self.ctx = dataclasses.replace(describe(pipe, self.call), family=family_of(pipe))
        self.base = self.run()

    def run(self, **overrides) -> np.ndarray:
        call = {**self.call, **overrides}
        out = self.pipe(prompt="a red circle", generator=torch.Generator().manual_seed(0), output_type="latent", **call)
        latents = out.frames if hasattr(out, "frames") else out.images
        return latents.float().numpy()


@pytest.fixture(scope="module")
def toys():
    from mindiesd_tune.models import load
    from tiny_pipelines import sd15

    out = []
    for name in ("tiny-flux-random", "tiny-wan-random"):
        loaded = load(name, device="cpu")
        out.append(Toy(name, loaded.pipe, loaded.generation))
    unet = sd15()
    out.append(Toy("sd15", unet.pipe, {k: v for k, v in unet.call.items() if k != "output_type"}))
    return out


@pytest.fixture
def eager_compile(monkeypatch):
    """torch.compile through the eager backend: Dynamo still traces every block with the other
    methods' hooks in place, without Inductor's minutes of C++ compilation on a CPU."""
    compile_ = torch.compile

    def eager(fn, *args, mode=None, **kwargs):
        return compile_(fn, *args, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", eager)
    # the toys must take compile.regional whatever a study here may search (conftest turns it
    # off) and whether or not a C++ compiler is installed (the eager backend needs none)
    from mindiesd_tune.accel.methods import compile as compile_entry

    monkeypatch.setenv(compile_entry.COMPILE_ENV, "1")
    monkeypatch.setattr(compile_entry, "has_compiler", lambda device: True)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_every_method_with_a_setting_to_combine_has_a_non_neutral_example():
    # the neutral entries, dense attention's backends (none installed here) and the single-device mesh
    # (quant.none's example casts the denoiser to bfloat16)
    assert {m.key for m in methods() if m.example is None} == {"cache.none", "sparse.none", "parallel.mesh"}
    for m in _active():
        m.example.validate()


@pytest.mark.parametrize("a,b", _pairs(), ids=lambda m: m.key)
@pytest.mark.slow
def test_every_pair_installs_runs_and_removes_to_the_baseline(toys, eager_compile, a, b):
    toy = next((t for t in toys if a.applies(t.ctx) and b.applies(t.ctx)), None)
    if toy is None:
        pytest.skip(f"no toy pipeline takes both {a.key} and {b.key}")
    config = AccelConfig(**{a.section: a.example, b.section: b.example})
    if a.conflicts_with(b):
        with pytest.raises(ConflictError) as e:
            apply(toy.pipe, config)
        assert a.key in str(e.value) and b.key in str(e.value) and "\n" not in str(e.value)
        return
    handle = apply(toy.pipe, config)
    try:
        out = toy.run(**handle.call_overrides)
    finally:
        handle.remove()
    assert np.isfinite(out).all()
    assert np.array_equal(toy.run(), toy.base), f"{a.key} + {b.key} left {toy.name} changed"


def test_a_declared_conflict_is_refused_in_one_line_naming_both(monkeypatch):
    from mindiesd_tune.accel import FirstBlockCacheConfig, StepsConfig
    from mindiesd_tune.accel.methods import get_method, registry

    steps = dataclasses.replace(get_method("steps", "steps"), conflicts=("cache.first_block",))
    monkeypatch.setitem(registry._METHODS["steps"], "steps", steps)
    monkeypatch.setitem(registry._BY_CONFIG, StepsConfig, steps)

    with pytest.raises(ConflictError, match=r"^steps\.steps cannot be combined with cache\.first_block$"):
        AccelConfig(steps=StepsConfig(num_inference_steps=2), cache=FirstBlockCacheConfig(threshold=0.1)).validate()
    AccelConfig(steps=StepsConfig(num_inference_steps=2)).validate()  # alone, it is fine


def test_apply_installs_in_declared_order_and_removes_in_reverse(monkeypatch, tiny_flux):
    from mindiesd_tune.accel import CompileConfig, FirstBlockCacheConfig, LocalWindowConfig, StepsConfig
    from mindiesd_tune.accel.methods import registry

    calls = []

    def recorder(key):
        def install(model, cfg, handle):
            calls.append(("install", key))
            return lambda: calls.append(("remove", key))

        return install

    def patch(entry, **changes):
        patched = dataclasses.replace(entry, **changes)
        monkeypatch.setitem(registry._METHODS[entry.section], entry.name, patched)
        monkeypatch.setitem(registry._BY_CONFIG, entry.config, patched)

    for entry in list(methods()):
        if entry.install is not None:
            patch(entry, install=recorder(entry.key))
    config = AccelConfig(compile=CompileConfig(mode="default"), sparse=LocalWindowConfig(ratio=0.5, block_size=16),
                         cache=FirstBlockCacheConfig(threshold=0.1), steps=StepsConfig(num_inference_steps=2))
    apply(tiny_flux.pipe, config).remove()
    installed = [key for what, key in calls if what == "install"]
    # the sections' order, except compile's own order (first: the other hooks wrap the compiled
    # blocks); quant's and parallel's neutral entries install too (the load dtype, one device)
    assert installed == ["compile.regional", "steps.steps", "cache.first_block", "sparse.local", "quant.none",
                         "parallel.mesh"]
    assert [key for what, key in calls if what == "remove"] == installed[::-1]

    calls.clear()
    patch(registry.get_method("sparse", "local"), order=5)  # an entry's own order goes before its section's
    apply(tiny_flux.pipe, config).remove()
    assert [key for what, key in calls if what == "install"] == ["compile.regional", "sparse.local", "steps.steps",
                                                                  "cache.first_block", "quant.none", "parallel.mesh"]
