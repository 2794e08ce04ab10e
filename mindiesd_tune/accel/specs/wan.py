"""WanTransformer3DModel (Wan 2.1 / 2.2 video)."""

from __future__ import annotations

from . import BlockSpec, DenoiserSpec, PipelineSpec, SparseSpec, register_denoiser

_PROCESSORS = "mindiesd_tune.accel.sparse.processors"


def _layout(model, args):
    """Self-attention over the video grid: latent (frames, height, width) over the patch size."""
    from ..sparse.masks import TokenLayout

    x = args["hidden_states"]
    pt, ph, pw = model.config.patch_size
    return TokenLayout((x.shape[2] // pt, x.shape[3] // ph, x.shape[4] // pw))


def _token_grid(pipe, generation):
    """As WanPipeline sizes its latents: frames rounded to 4k+1, then the VAE and patch factors."""
    t, s = pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial
    frames = int(generation.get("num_frames") or 81)
    if frames % t != 1:
        frames = frames // t * t + 1
    height, width = int(generation.get("height") or 480), int(generation.get("width") or 832)
    pt, ph, pw = pipe.transformer.config.patch_size
    return (((frames - 1) // t + 1) // pt, height // s // ph, width // s // pw)


# both branches as separate calls, each in its own cache context; the default scheduler gets no sigmas
# the uncond call of every step is gated on this property, fixed for the call (guidance_scale > 1)
_WAN = PipelineSpec("separate", branch_flag="do_classifier_free_guidance")

SPEC = register_denoiser(DenoiserSpec(
    name="WanTransformer3DModel",
    family="dit-video",
    block_lists=("blocks",),
    block_types={"WanTransformerBlock": BlockSpec(("hidden_states",), ("attn1",))},
    sparse=SparseSpec(
        layers=(("blocks", ("attn1",)),),  # attn2 is cross-attention to the text
        processors={"WanAttnProcessor": f"{_PROCESSORS}:WanSparseAttnProcessor"},
        layout=_layout,
        token_grid=_token_grid,
    ),
    pipelines={
        "WanPipeline": _WAN,
        "WanImageToVideoPipeline": _WAN,
        "WanVideoToVideoPipeline": _WAN,
    },
    default_pipeline=_WAN,
))
