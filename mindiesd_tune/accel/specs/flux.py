"""FluxTransformer2DModel (FLUX.1 and its pipelines)."""

from __future__ import annotations

from . import BlockSpec, DenoiserSpec, PipelineSpec, SparseSpec, register_denoiser

_PROCESSORS = "mindiesd_tune.accel.sparse.processors"


def _layout(model, args):
    """Joint attention over ``[text, image]``; the image grid comes from the RoPE ids."""
    from ..sparse.masks import TokenLayout

    img_ids, txt_ids = args.get("img_ids"), args.get("txt_ids")
    if img_ids is None or txt_ids is None:
        return None
    img_ids = img_ids.reshape(-1, img_ids.shape[-1])
    h, w = int(img_ids[:, 1].max()) + 1, int(img_ids[:, 2].max()) + 1
    if h * w != img_ids.shape[0]:
        return None
    return TokenLayout((h, w), text_len=txt_ids.reshape(-1, txt_ids.shape[-1]).shape[0], text_first=True)


def _token_grid(pipe, generation):
    """Latents are ``size / vae_scale_factor``, packed 2x2 into one token each."""
    factor = pipe.vae_scale_factor * 2
    height = generation.get("height") or pipe.default_sample_size * pipe.vae_scale_factor
    width = generation.get("width") or pipe.default_sample_size * pipe.vae_scale_factor
    return (int(height) // factor, int(width) // factor)


# true_cfg_scale > 1 with a negative prompt: one denoiser call per branch, and encode_prompt
# called once more for the negative prompt before the loop
_TRUE_CFG = PipelineSpec("separate", ("sigmas", "mu"), branch_probe="encode_prompt")
_DISTILLED = PipelineSpec("none", ("sigmas", "mu"))  # guidance embedded, no negative branch

SPEC = register_denoiser(DenoiserSpec(
    name="FluxTransformer2DModel",
    family="dit-image",
    block_lists=("transformer_blocks", "single_transformer_blocks"),
    block_types={
        "FluxTransformerBlock": BlockSpec(("encoder_hidden_states", "hidden_states"), ("attn",)),
        "FluxSingleTransformerBlock": BlockSpec(("encoder_hidden_states", "hidden_states"), ("attn",)),
    },
    sparse=SparseSpec(
        layers=(("transformer_blocks", ("attn",)), ("single_transformer_blocks", ("attn",))),
        processors={"FluxAttnProcessor": f"{_PROCESSORS}:FluxSparseAttnProcessor"},
        layout=_layout,
        token_grid=_token_grid,
    ),
    pipelines={
        "FluxPipeline": _TRUE_CFG,
        "FluxImg2ImgPipeline": _TRUE_CFG,
        "FluxInpaintPipeline": _TRUE_CFG,
        "FluxKontextPipeline": _TRUE_CFG,
        "FluxKontextInpaintPipeline": _TRUE_CFG,
        "FluxControlNetPipeline": _TRUE_CFG,
        "FluxControlPipeline": _DISTILLED,
        "FluxFillPipeline": _DISTILLED,
    },
    default_pipeline=_TRUE_CFG,
))
