import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import generate
from mindiesd_tune.accel import (
    AccelConfig,
    ConfigError,
    HeadAdaptiveSparseConfig,
    LocalWindowConfig,
    NoSparse,
    TopKSparseConfig,
    apply,
)
from mindiesd_tune.accel.blocks import attention_layers
from mindiesd_tune.accel.sparse import (
    CallContext,
    SparseAttention,
    SparseCounters,
    TokenLayout,
    dense_step_count,
    grid_blocks,
    pattern_mask,
    tile_shape,
    topk_mask,
)
from mindiesd_tune.accel.sparse.processors import SparseProcessor
from mindiesd_tune.kernels import AttentionBackendError, BlockSparseMask, attention

METHODS = [LocalWindowConfig, TopKSparseConfig, HeadAdaptiveSparseConfig]


def sparse(cls=LocalWindowConfig, **kw):
    kw.setdefault("block_size", 8)
    return AccelConfig(sparse=cls(**kw))


def our_processors(model):
    return [m.processor for _, m in attention_layers(model) if isinstance(m.processor, SparseProcessor)]


def rel_error(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# --------------------------------------------------------------------------- the contract on pipelines


@pytest.mark.parametrize("cls", METHODS)
@pytest.mark.parametrize("model", ["tiny_flux", "tiny_wan"])
@pytest.mark.slow
def test_ratio_zero_gives_baseline_output(model, cls, request):
    loaded = request.getfixturevalue(model)
    base = generate(loaded)
    with apply(loaded.pipe, sparse(cls, ratio=0.0)) as handle:
        assert len(our_processors(loaded.pipe.transformer)) == len(attention_layers(loaded.pipe.transformer))
        out = generate(loaded)
        stats = handle.stats()
    assert np.array_equal(out, base)
    assert stats["attention_sparse_calls"] == 0 and stats["attention_dense_calls"] > 0


@pytest.mark.parametrize("model", ["tiny_flux", "tiny_wan"])
@pytest.mark.slow
def test_remove_restores_processors_and_bit_identical_output(model, request):
    loaded = request.getfixturevalue(model)
    transformer = loaded.pipe.transformer
    before = {name: m.processor for name, m in attention_layers(transformer)}
    base = generate(loaded)
    handle = apply(loaded.pipe, sparse(ratio=0.75))
    out = generate(loaded)
    assert handle.stats()["attention_sparse_calls"] > 0
    assert not np.array_equal(out, base)
    handle.remove()
    assert {name: m.processor for name, m in attention_layers(transformer)} == before
    assert np.array_equal(generate(loaded), base)


def test_wan_cross_attention_is_untouched(tiny_wan):
    blocks = tiny_wan.pipe.transformer.blocks
    cross = [b.attn2.processor for b in blocks]
    with apply(tiny_wan.pipe, sparse(ratio=0.5)):
        assert [b.attn2.processor for b in blocks] == cross
        assert all(type(b.attn1.processor).__name__ == "WanSparseAttnProcessor" for b in blocks)


@pytest.mark.parametrize("ratio", [0.6, 0.8])
@pytest.mark.parametrize("cls", [LocalWindowConfig, TopKSparseConfig])
@pytest.mark.parametrize("model", ["tiny_flux", "tiny_wan"])
@pytest.mark.slow
def test_realised_density_on_a_pipeline_is_within_two_points(model, cls, ratio, request):
    # 64x64 gives Flux a 16x16 image grid and Wan a 5x8x8 video grid: 64 and 80 blocks of 4
    loaded = request.getfixturevalue(model)
    with apply(loaded.pipe, sparse(cls, ratio=ratio, block_size=4)) as handle:
        generate(loaded, height=64, width=64, num_inference_steps=2)
        stats = handle.stats()
    assert stats["attention_sparse_calls"] > 0 and stats["attention_dense_calls"] == 0
    assert abs(stats["sparse_density"] - (1 - ratio)) <= 0.02


@pytest.mark.parametrize("model", ["tiny_flux", "tiny_wan"])
@pytest.mark.slow
def test_error_against_dense_grows_with_ratio(model, request):
    loaded = request.getfixturevalue(model)
    gen = dict(height=64, width=64, num_inference_steps=4)
    base = generate(loaded, **gen)
    errors = []
    for ratio in (0.25, 0.5, 0.75, 0.9):
        with apply(loaded.pipe, sparse(ratio=ratio, block_size=4)):
            errors.append(rel_error(generate(loaded, **gen), base))
    assert 0 < errors[0] < errors[1] < errors[2] < errors[3]


# --------------------------------------------------------------------------- schedule


@pytest.mark.slow
def test_dense_steps_one_and_all_dense_layers_give_baseline_output(tiny_flux):
    base = generate(tiny_flux)
    for cfg in (sparse(ratio=0.75, dense_steps=1.0), sparse(ratio=0.75, dense_layers=[0, 1, 2])):
        with apply(tiny_flux.pipe, cfg) as handle:
            assert np.array_equal(generate(tiny_flux), base)
            assert handle.stats()["attention_sparse_calls"] == 0


def test_dense_steps_fraction_counts_steps(tiny_flux):
    steps = tiny_flux.generation["num_inference_steps"]
    layers = len(attention_layers(tiny_flux.pipe.transformer))
    with apply(tiny_flux.pipe, sparse(ratio=0.5, dense_steps=0.3)) as handle:
        generate(tiny_flux)
        s = handle.stats()
    dense = dense_step_count(0.3, steps)
    assert dense == 3
    assert s["attention_dense_calls"] == dense * layers
    assert s["attention_sparse_calls"] == (steps - dense) * layers


def test_dense_layers_stay_dense(tiny_flux):
    steps = tiny_flux.generation["num_inference_steps"]
    with apply(tiny_flux.pipe, sparse(ratio=0.5, dense_layers="0,-1")) as handle:
        generate(tiny_flux)
        s = handle.stats()
    assert s["attention_dense_calls"] == 2 * steps and s["attention_sparse_calls"] == steps


def test_dense_layers_out_of_range_is_an_error(tiny_flux):
    with pytest.raises(ValueError, match="dense_layers"):
        apply(tiny_flux.pipe, sparse(ratio=0.5, dense_layers=[7]))
    assert not our_processors(tiny_flux.pipe.transformer)


# --------------------------------------------------------------------------- SD3 (module built in-process)


@pytest.fixture(scope="module")
def tiny_sd3():
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    model = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        caption_projection_dim=32,
        pooled_projection_dim=16,
        out_channels=4,
        pos_embed_max_size=16,
        dual_attention_layers=(0,),  # block 0 also has the image-only attn2
    ).eval()
    g = torch.Generator().manual_seed(1)
    inputs = dict(
        hidden_states=torch.randn(1, 4, 32, 32, generator=g),  # a 16x16 token grid
        encoder_hidden_states=torch.randn(1, 7, 32, generator=g),
        pooled_projections=torch.randn(1, 16, generator=g),
        timestep=torch.tensor([500.0]),
    )
    return model, inputs


def _sd3(model, inputs):
    with torch.no_grad():
        return model(**inputs).sample


def test_sd3_ratio_zero_is_exact_and_sparse_attention_covers_joint_and_dual_layers(tiny_sd3):
    model, inputs = tiny_sd3
    base = _sd3(model, inputs)
    assert len(attention_layers(model)) == 3  # attn of both blocks + attn2 of block 0
    with apply(model, sparse(ratio=0.0, block_size=8)):
        assert torch.equal(_sd3(model, inputs), base)
    errors = []
    for ratio in (0.5, 0.875):
        with apply(model, sparse(ratio=ratio, block_size=8)) as handle:
            errors.append((_sd3(model, inputs) - base).norm().item() / base.norm().item())
            s = handle.stats()
        assert s["attention_sparse_calls"] == 3
        assert abs(s["sparse_density"] - (1 - ratio)) <= 0.02
    assert 0 < errors[0] < errors[1]
    assert torch.equal(_sd3(model, inputs), base)


# --------------------------------------------------------------------------- the attention of one layer


def _engine(cfg, layout):
    counters = SparseCounters()
    return SparseAttention(cfg, CallContext(layout=layout), counters, set()), counters


def _reference(q, k, v, layout: TokenLayout, idx: torch.Tensor, block_size: int):
    """Dense SDPA with the block mask written out per token in the model's token order."""
    T, N = layout.text_len, layout.grid_len
    blocks = grid_blocks(layout.grid, block_size)
    block_of = torch.empty(N, dtype=torch.long)  # grid token -> its block
    order = blocks.perm if blocks.perm is not None else torch.arange(N)
    block_of[order] = torch.arange(N) // block_size
    keep = torch.zeros(*idx.shape[:-1], blocks.num_blocks, dtype=torch.bool).scatter_(-1, idx, True)
    grid_mask = keep[..., block_of[:, None], block_of[None, :]]  # (B|1, H|1, N, N)
    S = T + N
    mask = torch.ones(*grid_mask.shape[:2], S, S, dtype=torch.bool)
    g = slice(T, S) if layout.text_first else slice(0, N)
    mask[..., g, g] = grid_mask
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("text_first", [True, False])
@pytest.mark.parametrize("grid", [(12, 16), (3, 8, 12), (10, 10)])  # (10, 10): no tile of 16 fits
def test_sparse_attention_equals_dense_attention_under_the_written_out_mask(grid, text_first):
    torch.manual_seed(0)
    layout = TokenLayout(grid, text_len=5, text_first=text_first)
    B, H, D, bs = 2, 3, 16, 16
    q, k, v = (torch.randn(B, H, layout.text_len + layout.grid_len, D) for _ in range(3))
    for cls in (LocalWindowConfig, TopKSparseConfig):
        cfg = cls(ratio=0.6, block_size=bs)
        engine, counters = _engine(cfg, layout)
        out = engine(q, k, v, layer=0)
        blocks = grid_blocks(grid, bs)
        g = slice(5, None) if text_first else slice(0, layout.grid_len)
        qg, kg = q[:, :, g], k[:, :, g]
        if blocks.perm is not None:
            qg, kg = qg[:, :, blocks.perm], kg[:, :, blocks.perm]
        if cls is TopKSparseConfig:
            idx = topk_mask(qg, kg, bs, 0.6, True, True)
        else:
            idx = pattern_mask(grid, bs, 0.6, "local", True, True)
        torch.testing.assert_close(out, _reference(q, k, v, layout, idx, bs), atol=2e-5, rtol=1e-4)
        assert counters.attention_sparse_calls == 1


def test_text_queries_attend_densely():
    torch.manual_seed(0)
    layout = TokenLayout((16, 16), text_len=9, text_first=True)
    q, k, v = (torch.randn(1, 2, 9 + 256, 16) for _ in range(3))
    engine, _ = _engine(LocalWindowConfig(ratio=0.9, block_size=16), layout)
    out = engine(q, k, v, layer=0)
    dense = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out[:, :, :9], dense[:, :, :9])
    assert not torch.allclose(out[:, :, 9:], dense[:, :, 9:], atol=1e-3)


def _smooth_tokens(grid, H=2, D=16, seed=0):
    """Queries and keys that vary smoothly over the grid, as in a trained DiT: near tokens attend more."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in grid], indexing="ij"), -1)
    coords = coords.reshape(-1, len(grid))
    freqs = torch.randn(len(grid), D, generator=g) * 0.3
    base = torch.cat([torch.sin(coords @ freqs), torch.cos(coords @ freqs)], -1)[:, :D] * 3
    q = base + 0.3 * torch.randn(H, base.shape[0], D, generator=g)
    k = base + 0.3 * torch.randn(H, base.shape[0], D, generator=g)
    v = torch.randn(H, base.shape[0], D, generator=g)
    return q[None], k[None], v[None]


@pytest.mark.parametrize("cls", [LocalWindowConfig, TopKSparseConfig])
@pytest.mark.parametrize("grid", [(32, 32), (4, 16, 16)])
def test_layer_error_grows_with_ratio(cls, grid):
    q, k, v = _smooth_tokens(grid)
    dense = F.scaled_dot_product_attention(q, k, v)
    errors = []
    for ratio in (0.0, 0.25, 0.5, 0.75, 0.9):
        engine, _ = _engine(cls(ratio=ratio, block_size=16), TokenLayout(grid))
        errors.append(((engine(q, k, v, 0) - dense).norm() / dense.norm()).item())
    assert errors[0] == 0
    assert all(a < b for a, b in zip(errors, errors[1:])), errors


# --------------------------------------------------------------------------- masks


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.6, 0.75, 0.8, 0.9, 0.95])
@pytest.mark.parametrize("grid,bs", [((64, 64), 64), ((8, 32, 32), 64), ((30, 50), 32)])
def test_mask_density_is_within_two_points_and_rows_are_distinct(grid, bs, ratio):
    nb = grid_blocks(grid, bs).num_blocks
    q, k = torch.randn(1, 2, math.prod(grid), 8), torch.randn(1, 2, math.prod(grid), 8)
    masks = [pattern_mask(grid, bs, ratio, p, True, True) for p in ("local", "spatial", "temporal")]
    masks.append(topk_mask(q, k, bs, ratio, True, True))
    for idx in masks:
        m = BlockSparseMask(idx, bs, math.prod(grid))
        assert m.to_bool().sum(-1).eq(idx.shape[-1]).all()  # no block listed twice
        assert abs(m.density - (1 - ratio)) <= 0.02, (nb, m.density)
        rows = m.to_bool()
        assert rows[..., 0].all()  # keep_sink
        assert rows[..., torch.arange(nb), torch.arange(nb)].all()  # keep_recent


@pytest.mark.parametrize("cls", [LocalWindowConfig, TopKSparseConfig, HeadAdaptiveSparseConfig])
def test_query_group_shares_rows_keeps_density_and_matches_the_reference(cls):
    grid, bs, group = (4, 16, 16), 16, 4
    layout = TokenLayout(grid, text_len=3, text_first=True)
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 3 + 1024, 16) for _ in range(3))
    outs = {}
    extra = {"recall": 0.0} if cls is HeadAdaptiveSparseConfig else {}  # every head sparse
    for kernel in ("gather", "masked"):
        engine, counters = _engine(cls(ratio=0.75, block_size=bs, query_group=group, kernel=kernel, **extra), layout)
        outs[kernel] = engine(q, k, v, 0)
        assert counters.sparse_density == pytest.approx(0.25)
    torch.testing.assert_close(outs["gather"], outs["masked"], atol=2e-5, rtol=1e-4)
    local = pattern_mask(grid, bs, 0.75, "local", True, True, group)
    for idx in (local, topk_mask(q[:, :, 3:], k[:, :, 3:], bs, 0.75, True, True, group)):
        rows = idx.sort(-1).values.reshape(*idx.shape[:2], -1, group, idx.shape[-1])
        assert (rows == rows[..., :1, :]).all()  # every group shares one row
        m = BlockSparseMask(idx, bs, 1024, group).to_bool()
        assert m.sum(-1).eq(idx.shape[-1]).all()
        assert m[..., torch.arange(64), torch.arange(64)].all()  # keep_recent: each block keeps itself


def test_tiles_are_one_frame_thick_and_squarish():
    assert tile_shape((8, 32, 32), 128) == (1, 8, 16)
    assert tile_shape((64, 64), 64) == (8, 8)
    assert tile_shape((10, 10), 16) is None
    b = grid_blocks((4, 8, 8), 16)
    assert b.tile == (1, 4, 4) and b.num_blocks == 16
    assert torch.equal(b.perm[b.inverse], torch.arange(256))


def test_local_window_is_nearest_blocks_and_spatial_temporal_patterns_follow_their_axis():
    grid, bs = (4, 8, 8), 16  # 4 frames of 2x2 tiles of 4x4 tokens
    local = pattern_mask(grid, bs, 0.75, "local", False, False)[0, 0]
    spatial = pattern_mask(grid, bs, 0.75, "spatial", False, False)[0, 0]
    temporal = pattern_mask(grid, bs, 0.75, "temporal", False, False)[0, 0]
    frame, place = torch.arange(16) // 4, torch.arange(16) % 4
    for row in range(16):
        assert set(frame[spatial[row]].tolist()) == {frame[row].item()}  # the whole own frame
        assert set(place[temporal[row]].tolist()) == {place[row].item()}  # own place in every frame
        assert row in local[row].tolist()


def test_head_adaptive_probe_classifies_spatial_temporal_and_full_heads():
    grid = (4, 8, 8)
    n = 256
    t = torch.arange(n) // 64
    place = (torch.arange(n) % 64) // 4  # not needed to be exact: heads below are built from coords
    del place
    coords = torch.stack(torch.meshgrid(*[torch.arange(s) for s in grid], indexing="ij"), -1).reshape(n, 3)
    D = 32
    spatial_head = F.one_hot(t, D).float() * 6.0  # attends within its frame
    tile = (coords[:, 1] // 4) * 2 + coords[:, 2] // 4
    temporal_head = F.one_hot(tile, D).float() * 6.0  # attends to its place in every frame
    full_head = torch.zeros(n, D)  # attends everywhere alike
    q = torch.stack([spatial_head, temporal_head, full_head])[None]
    k, v = q.clone(), torch.randn(1, 3, n, D)
    cfg = HeadAdaptiveSparseConfig(ratio=0.75, block_size=16, keep_sink=False, keep_recent=False)
    engine, counters = _engine(cfg, TokenLayout(grid))
    out = engine(q, k, v, 0)
    assert (counters.heads_spatial, counters.heads_temporal, counters.heads_full) == (1, 1, 1)
    assert counters.sparse_density == pytest.approx((0.25 + 0.25 + 1.0) / 3)
    dense = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out[:, 2], dense[:, 2])  # the full head is exact
    assert ((out - dense).norm() / dense.norm()) < 0.05  # the patterns hold nearly all the mass


# --------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("kernel", ["gather", "gather-small-chunks", "flex"])
@pytest.mark.parametrize("S,text", [(256, 0), (250, 0), (256, 7), (250, 5)])
@pytest.mark.slow
def test_block_sparse_kernels_match_the_masked_reference(kernel, S, text, monkeypatch):
    if kernel == "gather-small-chunks":  # many chunks, the last one short
        monkeypatch.setattr(sys.modules["mindiesd_tune.kernels.attention"], "GATHER_CHUNK_BYTES", 3 * 3 * 32 * 16 * 4 * 2)
        kernel = "gather"
    torch.manual_seed(0)
    B, H, D, bs = 1, 2, 16, 32
    q, k, v = (torch.randn(B, H, S, D) for _ in range(3))
    nb = -(-S // bs)
    idx = torch.rand(B, H, nb, nb).argsort(-1)[..., :3]
    mask = BlockSparseMask(idx, bs, S)
    dense_kv = (torch.randn(B, H, text, D), torch.randn(B, H, text, D)) if text else None
    ref = attention(q, k, v, block_mask=mask, dense_kv=dense_kv, sparse_kernel="masked")
    out = attention(q, k, v, block_mask=mask, dense_kv=dense_kv, sparse_kernel=kernel)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_dense_entry_point_is_sdpa():
    q, k, v = (torch.randn(1, 2, 40, 8) for _ in range(3))
    assert torch.equal(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
    assert torch.equal(attention(q, k, v, backend="auto"), F.scaled_dot_product_attention(q, k, v))


@pytest.mark.parametrize("backend", ["flash_attn", "sage", "npu"])
def test_missing_backend_is_a_clear_error(backend):
    q = torch.randn(1, 1, 4, 8)
    with pytest.raises(AttentionBackendError, match=rf"{backend}.*unavailable.*usable here: sdpa"):
        attention(q, q, q, backend=backend)


def test_missing_backend_fails_at_apply_and_installs_nothing(tiny_flux):
    with pytest.raises(AttentionBackendError, match="flash_attn"):
        apply(tiny_flux.pipe, AccelConfig(sparse=NoSparse(backend="flash_attn")))
    assert not our_processors(tiny_flux.pipe.transformer)
    with pytest.raises(AttentionBackendError, match="unknown block-sparse kernel"):
        attention(torch.randn(1, 1, 4, 8), torch.randn(1, 1, 4, 8), torch.randn(1, 1, 4, 8),
                  block_mask=BlockSparseMask(torch.zeros(1, 1, 1, 1, dtype=torch.long), 4, 4), sparse_kernel="magic")


def test_sparse_calls_run_outside_inference_mode_after_one_inside(tiny_flux):
    # the gather kernel reuses its buffers from call to call; one made under inference_mode
    # (as the tuner's evaluator runs) cannot be written by a later call outside it
    with apply(tiny_flux.pipe, sparse(ratio=0.5, block_size=16)):
        with torch.inference_mode():
            generate(tiny_flux, num_inference_steps=2)
        assert np.isfinite(generate(tiny_flux, num_inference_steps=2)).all()


# --------------------------------------------------------------------------- config and search space


def test_sparse_config_round_trips_through_yaml():
    cfg = AccelConfig(sparse=HeadAdaptiveSparseConfig(ratio=0.8, block_size=64, dense_steps=0.2, dense_layers=[0, -1], recall=0.7))
    again = AccelConfig.from_yaml(cfg.to_yaml())
    assert again == cfg and again.to_dict()["sparse"]["method"] == "adaptive"
    assert AccelConfig.from_dict({"sparse": {"method": "local", "ratio": 0.5, "dense_layers": "0,-1"}}).sparse.dense_layers == [0, -1]


@pytest.mark.parametrize(
    "sparse_dict,field",
    [
        ({"method": "magic"}, "accel.sparse.method"),
        ({"method": "local", "ratio": 1.0}, "sparse.ratio"),
        ({"method": "topk", "block_size": 0}, "sparse.block_size"),
        ({"method": "local", "dense_steps": 1.5}, "sparse.dense_steps"),
        ({"method": "local", "kernel": "fast"}, "sparse.kernel"),
        ({"method": "none", "backend": "cudnn"}, "sparse.backend"),
        ({"method": "none", "ratio": 0.5}, "accel.sparse.ratio"),
        ({"method": "local", "dense_layers": "first"}, "sparse.dense_layers"),
    ],
)
def test_bad_sparse_fields_are_named(sparse_dict, field):
    with pytest.raises(ConfigError, match=field):
        AccelConfig.from_dict({"sparse": sparse_dict})


def test_search_space_samples_sparse_params_per_family_and_keeps_none():
    import optuna

    from mindiesd_tune.accel.methods._block_sparse import SPARSE_RANGES
    from mindiesd_tune.search_spaces import NEUTRAL_PARAMS, config_from_params, offered, presets, suggest

    for family in ("dit-image", "dit-video"):
        assert offered("sparse", family)[0] == "none"
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        seen = set()
        for _ in range(30):
            trial = study.ask()
            cfg = suggest(trial, family)
            seen.add(cfg.sparse.method)
            if cfg.sparse.method != "none":
                assert {"sparse.ratio", "sparse.block_size", "sparse.dense_steps", "sparse.dense_layers"} <= set(trial.params)
                lo, hi = SPARSE_RANGES[family].ratio
                assert lo <= cfg.sparse.ratio <= hi
            else:
                assert not any(p.startswith("sparse.") and p != "sparse.method" for p in trial.params)
            study.tell(trial, 0.0)
        assert seen == {"none", "local", "topk", "adaptive"}
        assert all(p["sparse.method"] == "none" for p in presets(family))
    assert config_from_params(NEUTRAL_PARAMS) == AccelConfig()
    assert suggest(optuna.create_study().ask(), "unet-image").sparse == NoSparse()


# --------------------------------------------------------------------------- SD3 through its pipeline


@pytest.fixture(scope="module")
def sd3_pipeline():
    from tiny_pipelines import sd3

    return sd3()


SD3_CALL = dict(height=32, width=32)  # a 16x16 latent: 8x8 patches, 16 blocks of 4 tokens


@pytest.mark.slow
def test_sd3_pipeline_ratio_zero_exact_sparse_counts_and_remove_restores(sd3_pipeline):
    transformer = sd3_pipeline.pipe.transformer
    before = {name: m.processor for name, m in attention_layers(transformer)}
    base = sd3_pipeline(**SD3_CALL)
    for cls in METHODS:
        with apply(sd3_pipeline.pipe, sparse(cls, ratio=0.0, block_size=4)) as handle:
            assert len(our_processors(transformer)) == len(before)
            assert torch.equal(sd3_pipeline(**SD3_CALL), base), cls
            assert handle.stats()["attention_sparse_calls"] == 0
    errors = []
    for ratio in (0.5, 0.75):
        with apply(sd3_pipeline.pipe, sparse(LocalWindowConfig, ratio=ratio, block_size=4)) as handle:
            out = sd3_pipeline(**SD3_CALL)
            stats = handle.stats()
        assert stats["attention_sparse_calls"] > 0 and abs(stats["sparse_density"] - (1 - ratio)) <= 0.02
        errors.append(rel_error(out, base))
    assert 0 < errors[0] < errors[1]
    assert {name: m.processor for name, m in attention_layers(transformer)} == before
    assert torch.equal(sd3_pipeline(**SD3_CALL), base)
