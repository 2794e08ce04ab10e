"""QwenImageTransformer2DModel (Qwen-Image and its edit variants)."""

from __future__ import annotations

from . import BlockSpec, DenoiserSpec, PipelineSpec, register_denoiser

# true CFG: one call per branch, inside cache_context("cond") / ("uncond")
_QWEN = PipelineSpec("separate", ("sigmas", "mu"))

SPEC = register_denoiser(DenoiserSpec(
    name="QwenImageTransformer2DModel",
    family="dit-image",
    block_lists=("transformer_blocks",),
    block_types={"QwenImageTransformerBlock": BlockSpec(("encoder_hidden_states", "hidden_states"), ("attn",))},
    pipelines={
        "QwenImagePipeline": _QWEN,
        "QwenImageImg2ImgPipeline": _QWEN,
        "QwenImageInpaintPipeline": _QWEN,
        "QwenImageEditPipeline": _QWEN,
        "QwenImageEditPlusPipeline": _QWEN,
    },
    default_pipeline=_QWEN,
))
