"""accel.parallel: every mesh matches the single-device output, with 2 (and 4) CPU ranks on gloo."""

from __future__ import annotations

import math

import pytest
import torch
from parallel_ranks import run_ranks

from mindiesd_tune.accel.parallel import ParallelConfig, ParallelError, check, supported, valid_meshes

STEPS = 4
PROMPT = "a red circle on a blue background"


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two decodes in [-1, 1], as images in [0, 1]."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def _latents(loaded, generation=None):
    gen = {**(generation or loaded.generation), "num_inference_steps": STEPS}
    out = loaded.pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(0), output_type="latent", **gen)
    return (out.frames if loaded.is_video else out.images).clone()


def _decode(vae, shape):
    z = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    return vae.decode(z, return_dict=False)[0]


def _change_pair():
    g = torch.Generator().manual_seed(3)
    new, ref = torch.randn(4, 64, 8, generator=g), torch.randn(4, 64, 8, generator=g)
    return new, ref * torch.linspace(0.5, 2.0, 64)[None, :, None]  # shards differ in scale


def _full_change() -> float:
    from mindiesd_tune.accel.cache.residual import relative_l1

    return relative_l1(*_change_pair())


def _sharded_change(index: int, shards: int, dim: int = 1) -> float:
    """The cache's change metric of this rank's shard, while the mesh is installed."""
    from mindiesd_tune.accel.cache.residual import relative_l1

    return relative_l1(*(t.chunk(shards, dim=dim)[index] for t in _change_pair()))


def _meshes_scenario(rank, world, model, meshes, cache_threshold):
    """Single-device reference, then each mesh installed, run, removed; rank-local results."""
    from mindiesd_tune.accel import AccelConfig, DiffusersFirstBlockCacheConfig, FirstBlockCacheConfig, apply
    from mindiesd_tune.accel.parallel import install_parallel
    from mindiesd_tune.models import load

    loaded = load(model, device="cpu")
    pipe = loaded.pipe
    ref = _latents(loaded)
    channels = getattr(pipe.vae.config, "latent_channels", None) or pipe.vae.config.z_dim
    latent_shape = (1, channels, *([3] if loaded.is_video else []), 8, 8)
    ref_decode = _decode(pipe.vae, latent_shape)
    out = {"rank": rank}
    for degrees in meshes:
        cfg = ParallelConfig(**degrees)
        undo = install_parallel(pipe, cfg)
        got = _latents(loaded)
        out[cfg.describe()] = (got - ref).abs().max().item()
        out[cfg.describe() + ".comm"] = undo.comm.bytes
        if cfg.sequence > 1:
            out[cfg.describe() + ".change"] = _sharded_change(undo.meshes.local_rank("ulysses"), cfg.ulysses)
        if cfg.vae > 1:
            out[cfg.describe() + ".psnr"] = _psnr(_decode(pipe.vae, latent_shape), ref_decode)
        undo()
        out[cfg.describe() + ".undo_exact"] = torch.equal(_latents(loaded), ref)
    if cache_threshold is not None:
        handle = apply(pipe, AccelConfig(cache=FirstBlockCacheConfig(threshold=cache_threshold)))
        cached_ref = _latents(loaded)
        single_skipped = handle.counters.cached_steps
        for degrees in meshes:
            cfg = ParallelConfig(**degrees)
            if cfg.vae > 1:
                continue
            handle.reset_stats()
            undo = install_parallel(pipe, cfg)  # after the cache: the sequence split wraps its hooks
            got = _latents(loaded)
            undo()
            out["cache+" + cfg.describe()] = (got - cached_ref).abs().max().item()
            out["cache+" + cfg.describe() + ".latents"] = got
        out["cache.single_cached_steps"] = single_skipped
        handle.remove()
        # diffusers' own threshold cache measures change out of the reduction's reach: refused
        handle = apply(pipe, AccelConfig(cache=DiffusersFirstBlockCacheConfig(threshold=0.1)))
        try:
            install_parallel(pipe, ParallelConfig(ulysses=2))
        except ParallelError as e:
            out["diffusers_fbc+ulysses2"] = str(e)
        handle.remove()
    return out


def _assert_meshes(results, meshes, tol=1e-4):
    for r in results:
        for degrees in meshes:
            name = ParallelConfig(**degrees).describe()
            assert r[name] <= tol, (r["rank"], name, r[name])
            assert r[name + ".undo_exact"], (r["rank"], name)
            if degrees.get("vae", 1) > 1:
                assert r[name + ".psnr"] >= 40, (r["rank"], name, r[name + ".psnr"])
            if name + ".change" in r:  # every rank decides on the whole sequence's change
                assert r[name + ".change"] == pytest.approx(_full_change(), rel=1e-6), (r["rank"], name)


_TWO_RANK_MESHES = [{}, {"cfg": 2}, {"ulysses": 2}, {"cfg": 2, "vae": 2}]


@pytest.mark.slow
def test_two_ranks_demo_flux_true_cfg():
    results = run_ranks(_meshes_scenario, 2, "demo-flux", _TWO_RANK_MESHES, 0.5)
    _assert_meshes(results, _TWO_RANK_MESHES)
    assert results[0]["single"] == 0.0  # the neutral mesh is exact
    assert results[0]["cfg2.comm"] > 0
    # cache + mesh: the same output on every rank, and the single-device cached output
    assert results[0]["cache.single_cached_steps"] > 0
    for mesh in ("cfg2", "ulysses2"):
        assert torch.equal(results[0][f"cache+{mesh}.latents"], results[1][f"cache+{mesh}.latents"]), mesh
        assert results[0][f"cache+{mesh}"] <= 1e-4, mesh
    assert results[0]["diffusers_fbc+ulysses2"] == (
        "parallel mesh ulysses2: conflicts with cache diffusers_first_block "
        "(its change threshold is measured on each rank's part of the call)")


@pytest.mark.slow
def test_two_ranks_demo_wan():
    results = run_ranks(_meshes_scenario, 2, "demo-wan", _TWO_RANK_MESHES, None)
    _assert_meshes(results, _TWO_RANK_MESHES)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["demo-flux", "demo-wan"])
def test_four_ranks_cfg_by_ulysses(model):
    meshes = [{"cfg": 2, "ulysses": 2}, {"cfg": 2, "ulysses": 2, "vae": 4}]
    _assert_meshes(run_ranks(_meshes_scenario, 4, model, meshes, None, timeout=900), meshes)


def _batched_scenario(rank, world, names):
    """Pipelines that batch CFG: each cfg rank runs half the doubled batch (a UNet's added
    conditioning dict is split too). Cached: a transformer's first-block cache, a UNet's DeepCache."""
    import tiny_pipelines
    from mindiesd_tune.accel import AccelConfig, DeepCacheConfig, FirstBlockCacheConfig, apply
    from mindiesd_tune.accel.parallel import install_parallel

    out = {}
    for name in names:
        tp = getattr(tiny_pipelines, name)()
        ref = tp()
        undo = install_parallel(tp.pipe, ParallelConfig(cfg=2))
        got = tp()
        change = _sharded_change(rank, 2, dim=0)  # this rank's half of the batch
        undo()
        out[name] = {"cfg2": (got - ref).abs().max().item(), "undo_exact": torch.equal(tp(), ref), "change": change}
        cache = DeepCacheConfig(cache_interval=2) if tp.is_unet else FirstBlockCacheConfig(threshold=0.3)
        handle = apply(tp.pipe, AccelConfig(cache=cache))
        cached_ref = tp()
        undo = install_parallel(tp.pipe, ParallelConfig(cfg=2))
        got = tp()
        undo()
        handle.remove()
        out[name].update({"cache+cfg2": (got - cached_ref).abs().max().item(), "cache+cfg2.latents": got})
    return out


@pytest.mark.slow
def test_two_ranks_batched_cfg():
    names = ("sd3", "sdxl")
    results = run_ranks(_batched_scenario, 2, names)
    for name in names:
        for r in (results[0][name], results[1][name]):
            assert r["cfg2"] <= 1e-4 and r["undo_exact"], (name, r)
            assert r["cache+cfg2"] <= 1e-4, (name, r)
            assert r["change"] == pytest.approx(_full_change(), rel=1e-6)  # the largest over both halves
        assert torch.equal(results[0][name]["cache+cfg2.latents"], results[1][name]["cache+cfg2.latents"]), name


# ---------------------------------------------------------------- meshes that cannot run, without ranks


def _refusal(pipe, generation, **degrees) -> str:
    with pytest.raises(ParallelError) as err:
        check(pipe, ParallelConfig(**degrees), generation, device="cpu", world_size=8)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_meshes_that_cannot_divide_the_model_are_refused_in_one_line(demo_flux):
    pipe, gen = demo_flux.pipe, demo_flux.generation
    assert "ulysses=3" in _refusal(pipe, gen, ulysses=3) and "4 attention heads" in _refusal(pipe, gen, ulysses=3)
    odd = _refusal(pipe, {**gen, "height": 40, "width": 40}, ulysses=2)
    assert "25 tokens" in odd and "5x5" in odd
    assert "text sequence of 6 tokens" in _refusal(pipe, {**gen, "max_sequence_length": 6}, ulysses=4)
    assert "ring=2 is not offered on cpu" in _refusal(pipe, gen, ring=2)
    assert "tensor=2 is not offered on cpu" in _refusal(pipe, gen, tensor=2)
    assert "latent height 10 is not divisible by 4" in _refusal(pipe, {**gen, "height": 40}, cfg=2, ulysses=2, vae=4)
    with pytest.raises(ParallelError, match="needs 4 devices, 2 available"):
        check(pipe, ParallelConfig(cfg=2, ulysses=2), gen, device="cpu", world_size=2)
    distilled = type("FluxFillPipeline", (), {"transformer": pipe.transformer})()
    with pytest.raises(ParallelError, match="cfg=2: FluxFillPipeline runs no unconditional pass"):
        check(distilled, ParallelConfig(cfg=2))


def test_config_validation():
    assert ParallelConfig().is_neutral and ParallelConfig().world_size == 1
    assert ParallelConfig(cfg=2, ulysses=2, vae=4).world_size == 4
    for bad, needle in [({"cfg": 3}, "cfg=3"), ({"ulysses": 0}, "ulysses=0"), ({"cfg": 2, "vae": 4}, "vae=4"),
                        ({"ring": True}, "ring=True")]:
        with pytest.raises(ParallelError, match=needle):
            ParallelConfig(**bad).validate()
    with pytest.raises(ParallelError, match="unknown key"):
        ParallelConfig.from_dict({"pipeline": 2})


def test_valid_meshes_and_supported_axes(demo_flux):
    assert supported("cpu") == {"cfg": True, "ring": False, "ulysses": True, "tensor": False, "vae": True}
    assert supported("cuda")["ring"] and supported("cuda")["tensor"]
    two = {m.describe() for m in valid_meshes(demo_flux.pipe, demo_flux.generation, 2)}
    assert two == {"single", "cfg2", "ulysses2", "cfg2xvae2", "ulysses2xvae2"}
    four = {m.describe() for m in valid_meshes(demo_flux.pipe, demo_flux.generation, 4)}
    assert {"cfg2xulysses2", "ulysses4", "cfg2xulysses2xvae4"} <= four
    assert not any("ring" in m or "tensor" in m for m in four)
    assert valid_meshes(demo_flux.pipe, demo_flux.generation, 4)[0].describe() == "single"


def _cfg_calls_scenario(rank, world, model="demo-flux"):
    """Denoiser calls each rank computes per pipeline call under cfg2, guided and unguided."""
    from mindiesd_tune.accel.parallel import install_parallel
    from mindiesd_tune.models import load

    loaded = load(model, device="cpu")
    pipe = loaded.pipe
    unguided = {**loaded.generation, "true_cfg_scale" if model == "demo-flux" else "guidance_scale": 1.0}
    ref_unguided = _latents(loaded, unguided)
    undo = install_parallel(pipe, ParallelConfig(cfg=2))
    calls = []
    # the first block runs only when a call is computed (a skipped branch returns a placeholder)
    blocks = pipe.transformer.transformer_blocks if model == "demo-flux" else pipe.transformer.blocks
    hook = blocks[0].register_forward_pre_hook(lambda *a: calls.append(1))
    _latents(loaded)
    guided_calls = len(calls)
    calls.clear()
    got_unguided = _latents(loaded, unguided)
    hook.remove()
    undo()
    return {"guided_calls": guided_calls, "unguided_calls": len(calls),
            "unguided_diff": (got_unguided - ref_unguided).abs().max().item(),
            "probe_removed": "encode_prompt" not in pipe.__dict__}


@pytest.mark.parametrize("model", ["demo-flux", "demo-wan"])
@pytest.mark.slow
def test_cfg_splits_from_the_first_step_when_the_spec_says_whether_both_branches_run(model):
    # FluxPipeline encodes the negative prompt exactly when true CFG is on (the spec's probe);
    # WanPipeline's do_classifier_free_guidance says so before the loop (the spec's flag). So
    # each rank runs one branch in every step, the first included; unguided, every step whole
    results = run_ranks(_cfg_calls_scenario, 2, model)
    for r in results:
        assert r["guided_calls"] == STEPS, r
        assert r["unguided_calls"] == STEPS and r["unguided_diff"] == 0.0, r
        assert r["probe_removed"], r


def _boundary_scenario(rank, world, model):
    """What the denoiser returns under Ulysses: its output gather must be over before the pipeline's
    next denoiser call, or that call's all-to-alls run while it is in flight (a gloo heap corruption,
    benchmarks/gloo_inflight_repro.py)."""
    from torch.distributed._functional_collectives import AsyncCollectiveTensor

    from mindiesd_tune.accel.parallel import install_parallel
    from mindiesd_tune.models import load

    loaded = load(model, device="cpu")
    undo = install_parallel(loaded.pipe, ParallelConfig(ulysses=2))
    kinds = []
    hook = loaded.pipe.transformer.register_forward_hook(
        lambda module, args, out: kinds.append(type(out[0] if isinstance(out, tuple) else out.sample).__name__))
    _latents(loaded)
    hook.remove()
    undo()
    return {"kinds": kinds, "async": AsyncCollectiveTensor.__name__}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["demo-flux", "demo-wan"])
def test_no_collective_is_in_flight_when_the_denoiser_returns(model):
    for r in run_ranks(_boundary_scenario, 2, model):
        assert len(r["kinds"]) == 2 * STEPS and r["async"] not in r["kinds"], r


def _placeholder_scenario(rank, world):
    """cfg2 with a bf16 denoiser against the same on one device: the precision cast around the
    denoiser (``quant.precision``) casts the cond output back to float32 before the uncond call."""
    from mindiesd_tune.accel import AccelConfig, QuantConfig, apply
    from mindiesd_tune.accel.parallel import install_parallel
    from mindiesd_tune.models import load

    loaded = load("demo-flux", device="cpu")
    handle = apply(loaded.pipe, AccelConfig(quant=QuantConfig(precision={"denoiser": "bfloat16"})))
    ref = _latents(loaded)
    undo = install_parallel(loaded.pipe, ParallelConfig(cfg=2))
    got = _latents(loaded)
    undo()
    handle.remove()
    return {"rank": rank, "bf16": (got - ref).abs().max().item(), "comm": undo.comm.bytes}


@pytest.mark.slow
def test_cfg_parallel_fills_the_placeholder_the_pipeline_holds():
    # the placeholder was a 1-D empty tensor in the denoiser's bf16, resized at the exchange: the
    # cast back to float32 handed the pipeline a copy made before it was filled
    for r in run_ranks(_placeholder_scenario, 2):
        assert r["bf16"] == 0.0 and r["comm"] > 0, r
