"""PixArtTransformer2DModel (PixArt-Alpha and PixArt-Sigma)."""

from __future__ import annotations

from . import BlockSpec, DenoiserSpec, PipelineSpec, register_denoiser

_PIXART = PipelineSpec("batched")

SPEC = register_denoiser(DenoiserSpec(
    name="PixArtTransformer2DModel",
    family="dit-image",
    block_lists=("transformer_blocks",),
    block_types={"BasicTransformerBlock": BlockSpec(("hidden_states",), ("attn1",))},
    pipelines={"PixArtAlphaPipeline": _PIXART, "PixArtSigmaPipeline": _PIXART},
    default_pipeline=_PIXART,
))
