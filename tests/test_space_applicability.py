"""A study offers a method only where it can install and can skip work at the model's sequence length.

The search space is built from a loaded pipeline's ``describe(...)`` context, as the tuner's
worker does: no sparse attention for denoisers without a sparse layout, and no block size
that leaves fewer than two blocks of image tokens.
"""

import optuna
import pytest

import tiny_pipelines
from mindiesd_tune.models import family_of
from mindiesd_tune.search_spaces import SpaceContext, describe, suggest

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sample(family, ctx, n=60, seed=0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for _ in range(n):
        trial = study.ask()
        configs.append(suggest(trial, family, ctx))
        study.tell(trial, 0.0)
    return configs


@pytest.mark.parametrize("builder", ["pixart_sigma", "qwen_image", "hunyuan_video", "cogvideox"])
def test_no_sparse_method_is_sampled_where_the_denoiser_has_no_sparse_layout(builder):
    toy = getattr(tiny_pipelines, builder)()
    family = family_of(toy.pipe)
    assert family in ("dit-image", "dit-video")  # families that do get sparse attention elsewhere
    ctx = describe(toy.pipe, toy.call)
    assert {c.sparse.method for c in _sample(family, ctx)} == {"none"}


def test_demo_flux_is_offered_only_block_sizes_that_leave_two_blocks(demo_flux):
    ctx = describe(demo_flux.pipe, demo_flux.generation)
    sparse = [c.sparse for c in _sample("dit-image", ctx) if c.sparse.method != "none"]
    assert sparse, "sparse attention applies to demo-flux"
    assert {s.block_size for s in sparse} == {16}  # 64 image tokens: 64 and 128 are one block
    assert ctx.sparse_tokens == 64  # 64 px, VAE factor 4, 2x2 packing


def test_too_few_tokens_for_any_block_size_means_no_sparse_attention():
    from mindiesd_tune.search_spaces import offered

    assert offered("sparse", "dit-image", SpaceContext(sparse_tokens=31)) == ["none"]
    assert offered("sparse", "dit-image", SpaceContext(sparse_tokens=32)) == ["none", "adaptive", "local", "topk"]
    assert offered("sparse", "dit-image", SpaceContext(sparse_tokens=0)) == ["none"]  # no sparse layout
    assert offered("sparse", "dit-image") == ["none", "adaptive", "local", "topk"]  # unknown: as before
