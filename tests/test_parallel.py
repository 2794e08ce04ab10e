"""accel.parallel: every mesh matches the single-device output, with 2 (and 4) CPU ranks on gloo."""

from __future__ import annotations

import math

import pytest
import torch

from mindiesd_tune.accel.parallel import ParallelConfig, ParallelError, check, supported, valid_meshes
from parallel_ranks import run_ranks

STEPS = 4
PROMPT = "a red circle on a blue background"


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two decodes in [-1, 1], as images in [0, 1]."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def _latents(loaded):
    gen = {**loaded.generation, "num_inference_steps": STEPS}
    out = loaded.pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(0), output_type="latent", **gen)
    return (out.frames if loaded.is_video else out.images).clone()


def _decode(vae, shape):
    z = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    return vae.decode(z, return_dict=False)[0]


def _meshes_scenario(rank, world, model, meshes, cache_threshold):
    """Single-device reference, then each mesh installed, run, removed; rank-local results."""
    from mindiesd_tune.accel import AccelConfig, FirstBlockCacheConfig, apply
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
    return out


def _assert_meshes(results, meshes, tol=1e-4):
    for r in results:
        for degrees in meshes:
            name = ParallelConfig(**degrees).describe()
            assert r[name] <= tol, (r["rank"], name, r[name])
            assert r[name + ".undo_exact"], (r["rank"], name)
            if degrees.get("vae", 1) > 1:
                assert r[name + ".psnr"] >= 40, (r["rank"], name, r[name + ".psnr"])


_TWO_RANK_MESHES = [{}, {"cfg": 2}, {"ulysses": 2}, {"cfg": 2, "vae": 2}]


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


def test_two_ranks_demo_wan():
    results = run_ranks(_meshes_scenario, 2, "demo-wan", _TWO_RANK_MESHES, None)
    _assert_meshes(results, _TWO_RANK_MESHES)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["demo-flux", "demo-wan"])
def test_four_ranks_cfg_by_ulysses(model):
    meshes = [{"cfg": 2, "ulysses": 2}, {"cfg": 2, "ulysses": 2, "vae": 4}]
    _assert_meshes(run_ranks(_meshes_scenario, 4, model, meshes, None, timeout=900), meshes)
