"""The sparse processors' one private diffusers use: ``_get_qkv_projections`` (Flux and Wan).

A diffusers release that drops or reshapes it fails here, with its version named, rather than
deep inside a tuning trial.
"""

import pytest
import torch

from mindiesd_tune.accel.sparse import processors
from mindiesd_tune.accel.sparse.processors import qkv_projections


def test_flux_projections_are_found_and_give_query_key_value_for_image_and_text():
    from diffusers.models.transformers.transformer_flux import FluxAttention

    attn = FluxAttention(query_dim=16, heads=2, dim_head=8, added_kv_proj_dim=16)
    image, text = torch.randn(1, 6, 16), torch.randn(1, 3, 16)
    q, k, v, eq, ek, ev = qkv_projections("transformer_flux")(attn, image, text)
    assert torch.equal(q, attn.to_q(image)) and torch.equal(k, attn.to_k(image)) and torch.equal(v, attn.to_v(image))
    assert torch.equal(eq, attn.add_q_proj(text)) and ek.shape == ev.shape == (1, 3, 16)


def test_wan_projections_are_found_and_give_query_key_value():
    from diffusers.models.transformers.transformer_wan import WanAttention

    attn = WanAttention(dim=16, heads=2, dim_head=8)
    x = torch.randn(1, 6, 16)
    q, k, v = qkv_projections("transformer_wan")(attn, x, None)
    assert torch.equal(q, attn.to_q(x)) and torch.equal(k, attn.to_k(x)) and torch.equal(v, attn.to_v(x))


def test_a_diffusers_without_it_is_named_in_the_error(monkeypatch):
    import diffusers
    from diffusers.models.transformers import transformer_wan

    monkeypatch.delattr(transformer_wan, "_get_qkv_projections")
    monkeypatch.setattr(diffusers, "__version__", "9.9.9")
    processors.qkv_projections.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r"diffusers 9\.9\.9: .*transformer_wan has no _get_qkv_projections"):
            qkv_projections("transformer_wan")
    finally:
        processors.qkv_projections.cache_clear()  # the real one again for the tests after this
