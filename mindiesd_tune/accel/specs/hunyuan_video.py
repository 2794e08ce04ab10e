"""HunyuanVideoTransformer3DModel (HunyuanVideo, its image-to-video and SkyReels variants)."""

from __future__ import annotations

from . import BlockSpec, DenoiserSpec, PipelineSpec, register_denoiser

_RETURNS = ("hidden_states", "encoder_hidden_states")

# embedded guidance, plus true CFG as a second call when true_cfg_scale > 1
_HUNYUAN = PipelineSpec("separate", ("sigmas",))

SPEC = register_denoiser(DenoiserSpec(
    name="HunyuanVideoTransformer3DModel",
    family="dit-video",
    block_lists=("transformer_blocks", "single_transformer_blocks"),
    block_types={
        "HunyuanVideoTransformerBlock": BlockSpec(_RETURNS, ("attn",)),
        "HunyuanVideoSingleTransformerBlock": BlockSpec(_RETURNS, ("attn",)),
        # image_condition_type="token_replace" (image-to-video) swaps in these
        "HunyuanVideoTokenReplaceTransformerBlock": BlockSpec(_RETURNS, ("attn",)),
        "HunyuanVideoTokenReplaceSingleTransformerBlock": BlockSpec(_RETURNS, ("attn",)),
    },
    # no sparse layout: no sparse processor mirrors its attention processor yet
    pipelines={
        "HunyuanVideoPipeline": _HUNYUAN,
        "HunyuanVideoImageToVideoPipeline": _HUNYUAN,
        "HunyuanSkyreelsImageToVideoPipeline": _HUNYUAN,
    },
    default_pipeline=_HUNYUAN,
))
