"""SD3Transformer2DModel (Stable Diffusion 3 and 3.5)."""

from __future__ import annotations

from . import BlockSpec, DenoiserSpec, PipelineSpec, SparseSpec, register_denoiser

_PROCESSORS = "mindiesd_tune.accel.sparse.processors"


def _layout(model, args):
    """Joint attention over ``[image, text]``; the grid is the latent over the patch size."""
    from ..sparse.masks import TokenLayout

    x, text = args["hidden_states"], args.get("encoder_hidden_states")
    p = model.config.patch_size
    return TokenLayout((x.shape[2] // p, x.shape[3] // p), text_len=0 if text is None else text.shape[1], text_first=False)


def _token_grid(pipe, generation):
    height = generation.get("height") or pipe.default_sample_size * pipe.vae_scale_factor
    width = generation.get("width") or pipe.default_sample_size * pipe.vae_scale_factor
    factor = pipe.vae_scale_factor * pipe.transformer.config.patch_size
    return (int(height) // factor, int(width) // factor)


# CFG batched in one call; custom sigmas for every scheduler (``mu`` only with dynamic shifting)
_SD3 = PipelineSpec("batched", ("sigmas",))

SPEC = register_denoiser(DenoiserSpec(
    name="SD3Transformer2DModel",
    family="dit-image",
    block_lists=("transformer_blocks",),
    block_types={"JointTransformerBlock": BlockSpec(("encoder_hidden_states", "hidden_states"), ("attn", "attn2"))},
    sparse=SparseSpec(
        # SD3.5's attn2 is an image-only self-attention, present in some blocks
        layers=(("transformer_blocks", ("attn", "attn2")),),
        processors={"JointAttnProcessor2_0": f"{_PROCESSORS}:JointSparseAttnProcessor"},
        layout=_layout,
        token_grid=_token_grid,
    ),
    pipelines={
        "StableDiffusion3Pipeline": _SD3,
        "StableDiffusion3Img2ImgPipeline": _SD3,
        "StableDiffusion3InpaintPipeline": _SD3,
        "StableDiffusion3ControlNetPipeline": _SD3,
        "StableDiffusion3PAGPipeline": _SD3,
    },
    default_pipeline=_SD3,
))
