"""The model registry (accel.specs): specs match the real pipelines, a toy denoiser joins through one spec."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import toy_denoiser
from mindiesd_tune.accel import AccelConfig, FirstBlockCacheConfig, apply, compatible_schedulers, transformer_blocks
from mindiesd_tune.accel.blocks import unet_structure
from mindiesd_tune.accel.sparse import sparse_token_count
from mindiesd_tune.accel.specs import (
    DenoiserSpec,
    PipelineSpec,
    UnsupportedModelError,
    denoiser_spec,
    pipeline_spec,
    register_denoiser,
    register_pipeline,
    registered_denoisers,
    unregister_denoiser,
)
from mindiesd_tune.errors import UserError
from mindiesd_tune.plugins import PluginError, load_plugins
from tiny_pipelines import BUILDERS, PROMPTS, STEPS

ROOT = Path(__file__).resolve().parent.parent
BUILTIN_DENOISERS = {
    "FluxTransformer2DModel", "SD3Transformer2DModel", "WanTransformer3DModel", "HunyuanVideoTransformer3DModel",
    "CogVideoXTransformer3DModel", "QwenImageTransformer2DModel", "PixArtTransformer2DModel", "UNet2DConditionModel",
}
unregister_denoiser("ToyDenoiser")  # importing the module registered it; the ``toy`` fixture does it per test


@pytest.fixture
def toy():
    register_denoiser(toy_denoiser.SPEC)
    yield toy_denoiser
    unregister_denoiser("ToyDenoiser")


@pytest.fixture(scope="module")
def tiny_pipelines():
    return {name: build() for name, build in BUILDERS.items()}


# ----------------------------------------------------------------------------- a toy denoiser


@pytest.mark.slow
def test_first_block_cache_runs_on_a_toy_denoiser_through_its_spec(toy):
    torch.manual_seed(0)
    model = toy.ToyDenoiser().eval()
    base = toy.denoise(model)

    with apply(model, AccelConfig(cache=FirstBlockCacheConfig(threshold=0.0))) as handle:
        neutral = toy.denoise(model)
        assert handle.stats()["blocks_skipped"] == 0 and handle.stats()["blocks_computed"] == 8 * 4
    assert torch.equal(neutral, base)

    handle = apply(model, AccelConfig(cache=FirstBlockCacheConfig(threshold=10.0)))
    cached = toy.denoise(model)
    stats = handle.stats()
    # step 0 computes and fills the cache; every later step runs block 0 and reuses blocks 1-3
    assert stats["cached_steps"] == 7 and stats["blocks_skipped"] == 7 * 3
    assert not torch.equal(cached, base)
    handle.remove()
    assert torch.equal(toy.denoise(model), base)
    assert all(not m._diffusers_hook.hooks for m in model.modules() if hasattr(m, "_diffusers_hook"))


def test_toy_spec_reaches_blocks_attention_and_subclasses(toy):
    class Deeper(toy.ToyDenoiser):  # a subclass is found through its MRO
        pass

    model = Deeper(depth=3)
    assert denoiser_spec(model) is toy.SPEC and denoiser_spec(Deeper) is toy.SPEC
    blocks = transformer_blocks(model)
    assert [b.name for b in blocks] == ["blocks.0", "blocks.1", "blocks.2"]
    assert [n for b in blocks for n, _ in b.attention_modules()] == ["blocks.0.attn", "blocks.1.attn", "blocks.2.attn"]
    assert "ToyDenoiser" in registered_denoisers()
    # no sparse layout, no pipelines: both say so instead of guessing
    assert sparse_token_count(SimpleNamespace(transformer=model), {"height": 64, "width": 64}) is None
    with pytest.raises(UnsupportedModelError, match="SimpleNamespace is not a supported pipeline"):
        pipeline_spec(SimpleNamespace(transformer=model))


def test_unknown_denoiser_is_one_line_naming_it_and_the_supported_ones():
    with pytest.raises(UnsupportedModelError) as err:
        denoiser_spec(torch.nn.Linear(2, 2))
    message = str(err.value)
    assert "\n" not in message and message.startswith("Linear is not a supported denoiser (supported: ")
    assert all(name in message for name in BUILTIN_DENOISERS)

    from mindiesd_tune.models import family_of

    with pytest.raises(UserError) as err:
        family_of(SimpleNamespace(transformer=torch.nn.Linear(2, 2)))
    assert "\n" not in str(err.value) and str(err.value).startswith("unsupported denoiser Linear (supported: ")


def test_a_spec_refuses_an_unknown_family_or_cfg_mode():
    with pytest.raises(ValueError, match="family 'audio'"):
        DenoiserSpec(name="X", family="audio")
    with pytest.raises(ValueError, match="cfg: 'twice'"):
        PipelineSpec("twice")


# ----------------------------------------------------------------------------- the built-in specs


def test_every_builtin_spec_is_checked_against_a_real_pipeline(tiny_pipelines, tiny_flux, tiny_wan):
    covered = {type(t.denoiser).__name__ for t in tiny_pipelines.values()}
    covered |= {type(tiny_flux.pipe.transformer).__name__, type(tiny_wan.pipe.transformer).__name__}
    assert BUILTIN_DENOISERS <= set(registered_denoisers())
    assert covered == BUILTIN_DENOISERS


def _check_spec_against(model, expected_blocks: int):
    spec = denoiser_spec(model)
    if spec.unet is not None:
        unet = unet_structure(model)
        down, mid, up = getattr(model, unet.down), getattr(model, unet.mid), getattr(model, unet.up)
        assert len(down) + (mid is not None) + len(up) == expected_blocks
        return
    n = 0
    for attr in spec.block_lists:
        blocks = getattr(model, attr)
        assert isinstance(blocks, torch.nn.ModuleList) and len(blocks) > 0, attr
        for block in blocks:
            block_spec = spec.block_spec(block)
            assert block_spec is not None, type(block).__name__
            assert "hidden_states" in block_spec.returns
            assert any(isinstance(getattr(block, a, None), torch.nn.Module) for a in block_spec.attention)
            n += 1
    assert n == len(transformer_blocks(model))
    if expected_blocks:
        assert n == expected_blocks
    if spec.sparse is not None:
        for attr, attn_attrs in spec.sparse.layers:
            assert any(isinstance(getattr(b, a, None), torch.nn.Module) for b in getattr(model, attr) for a in attn_attrs)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_spec_blocks_exist_on_the_real_pipeline(name, tiny_pipelines):
    tiny = tiny_pipelines[name]
    _check_spec_against(tiny.denoiser, tiny.blocks)


def test_spec_blocks_exist_on_the_builtin_models(tiny_flux, tiny_wan):
    for loaded in (tiny_flux, tiny_wan):
        _check_spec_against(loaded.pipe.transformer, 0)


def _forwards_per_step(pipe, denoiser, run, steps: int) -> float:
    calls = []
    hook = denoiser.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        run()
    finally:
        hook.remove()
    return len(calls) / steps


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.slow
def test_cfg_mode_of_the_pipeline_spec_is_what_the_pipeline_does(name, tiny_pipelines):
    tiny = tiny_pipelines[name]
    spec = pipeline_spec(tiny.pipe)
    per_step = _forwards_per_step(tiny.pipe, tiny.denoiser, lambda: tiny(prompts=PROMPTS[:1]), STEPS)
    assert per_step == {"batched": 1, "separate": 2}[spec.cfg]
    assert per_step == tiny.cfg_branches


def test_cfg_mode_of_the_builtin_pipelines(demo_flux, tiny_wan):
    for loaded, cfg in ((demo_flux, "separate"), (tiny_wan, "separate")):
        assert pipeline_spec(loaded.pipe).cfg == cfg
        gen = {**loaded.generation, "num_inference_steps": 2}
        assert gen.get("true_cfg_scale", gen.get("guidance_scale", 1)) > 1  # CFG on
        run = lambda: loaded.pipe(prompt="a red circle", output_type="latent", **gen)  # noqa: E731, B023  (called within the iteration)
        assert _forwards_per_step(loaded.pipe, loaded.pipe.transformer, run, 2) == 2


def test_scheduler_arguments_come_from_the_pipeline_spec(tiny_pipelines, tiny_flux, tiny_wan):
    assert pipeline_spec(tiny_flux.pipe).scheduler_args == ("sigmas", "mu")
    assert pipeline_spec(tiny_wan.pipe).scheduler_args == ()
    # DPM-Solver++ takes no sigmas: offered only where the pipeline passes none
    for tiny in tiny_pipelines.values():
        offered = compatible_schedulers(tiny.pipe)
        assert ("dpmsolver++" in offered) == ("sigmas" not in pipeline_spec(tiny.pipe).scheduler_args), tiny.name


def test_pipeline_lookup_order_registered_then_listed_then_default(tiny_flux):
    class MyFluxPipeline:  # unknown to the Flux spec: its default applies
        transformer = tiny_flux.pipe.transformer

    assert pipeline_spec(MyFluxPipeline()) == denoiser_spec(tiny_flux.pipe).default_pipeline
    register_pipeline("MyFluxPipeline", PipelineSpec("none"))
    try:
        assert pipeline_spec(MyFluxPipeline()).cfg == "none"
    finally:
        from mindiesd_tune.accel import specs

        specs._PIPELINES.pop("MyFluxPipeline")


def test_no_source_sniffing_left():
    sources = [p for p in (ROOT / "mindiesd_tune").rglob("*.py") if "getsource" in p.read_text()]
    assert sources == []


# ----------------------------------------------------------------------------- sparse token count


def test_sparse_token_count_on_demo_flux_and_tiny_wan(demo_flux, tiny_wan):
    # 64 px, VAE factor 4, 2x2 packing -> an 8x8 grid
    assert sparse_token_count(demo_flux.pipe, demo_flux.generation) == 64
    assert sparse_token_count(demo_flux.pipe, {**demo_flux.generation, "height": 128}) == 128
    # what the sparse layout sees in a real call, at two sizes
    import inspect
    import math

    model = tiny_wan.pipe.transformer
    layout, signature, seen = denoiser_spec(model).sparse.layout, inspect.signature(model.forward), []
    hook = model.register_forward_pre_hook(
        lambda m, a, k: seen.append(math.prod(layout(m, signature.bind_partial(*a, **k).arguments).grid)), with_kwargs=True)
    try:
        for gen in (tiny_wan.generation, {**tiny_wan.generation, "num_frames": 9, "width": 64}):
            gen = {**gen, "num_inference_steps": 1}
            seen.clear()
            tiny_wan.pipe(prompt="a red circle", output_type="latent", **gen)
            assert set(seen) == {sparse_token_count(tiny_wan.pipe, gen)}
    finally:
        hook.remove()
    assert sparse_token_count(tiny_wan.pipe, {**tiny_wan.generation, "num_frames": 9, "width": 64}) > sparse_token_count(
        tiny_wan.pipe, tiny_wan.generation)


def test_sparse_token_count_is_none_where_sparse_cannot_go(tiny_pipelines):
    for name in ("pixart_sigma", "cogvideox", "hunyuan_video", "qwen_image", "sd15"):
        tiny = tiny_pipelines[name]
        assert sparse_token_count(tiny.pipe, tiny.call) is None, name
    sd3 = tiny_pipelines["sd3"]
    assert sparse_token_count(sd3.pipe, sd3.call) == (16 // sd3.pipe.vae_scale_factor // 2) ** 2


# ----------------------------------------------------------------------------- plugins


def _python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def test_specs_import_neither_torch_nor_diffusers():
    # the parent packages import torch; load only the registry, as a torch-free tool would
    code = f"""
        import sys, types
        for name, path in (("mindiesd_tune", {str(ROOT / 'mindiesd_tune')!r}),
                           ("mindiesd_tune.accel", {str(ROOT / 'mindiesd_tune' / 'accel')!r})):
            pkg = types.ModuleType(name); pkg.__path__ = [path]; sys.modules[name] = pkg
        from mindiesd_tune.accel.specs import registered_denoisers
        assert len(registered_denoisers()) >= 8
        print(sorted(m for m in ("torch", "diffusers") if m in sys.modules))
    """
    out = _python(code, {})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_a_spec_plugin_is_found_through_the_environment_and_entry_points(tmp_path):
    code = """
        from mindiesd_tune.accel.specs import registered_denoisers
        print(sorted(n for n in registered_denoisers() if n.startswith("Toy")))
    """
    tests = str(Path(__file__).parent)
    path = os.pathsep.join([str(ROOT), tests, str(tmp_path)])
    out = _python(code, {"PYTHONPATH": path, "MINDIESD_TUNE_PLUGINS": "toy_denoiser"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['ToyDenoiser']"

    # an installed distribution declaring the entry point, found without the variable
    (tmp_path / "toy_spec_plugin.py").write_text(textwrap.dedent("""
        from mindiesd_tune.accel.specs import BlockSpec, DenoiserSpec, register_denoiser

        def register():
            register_denoiser(DenoiserSpec(name="ToyPluginDenoiser", family="dit-video", block_lists=("blocks",),
                                           block_types={"ToyBlock": BlockSpec(("hidden_states",))}))
    """))
    dist = tmp_path / "toy_spec_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-spec-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[mindiesd_tune.specs]\ntoy = toy_spec_plugin:register\n")
    out = _python(code, {"PYTHONPATH": path, "MINDIESD_TUNE_PLUGINS": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['ToyPluginDenoiser']"


def test_a_plugin_that_does_not_import_is_one_line(monkeypatch):
    monkeypatch.setenv("MINDIESD_TUNE_PLUGINS", "toy_denoiser, no_such_plugin_module")
    with pytest.raises(PluginError) as err:
        load_plugins()
    assert str(err.value) == (
        "MINDIESD_TUNE_PLUGINS: cannot import 'no_such_plugin_module' "
        "(ModuleNotFoundError: No module named 'no_such_plugin_module')"
    )
    monkeypatch.setenv("MINDIESD_TUNE_PLUGINS", "toy_denoiser")
    load_plugins()
    load_plugins()  # idempotent
