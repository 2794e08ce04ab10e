"""CogVideoXTransformer3DModel (CogVideoX 1.0 / 1.5)."""

from __future__ import annotations

from . import BlockSpec, DenoiserSpec, PipelineSpec, register_denoiser

# cond and uncond batched in one call, inside one "cond_uncond" cache context
_COGVIDEOX = PipelineSpec("batched")

SPEC = register_denoiser(DenoiserSpec(
    name="CogVideoXTransformer3DModel",
    family="dit-video",
    block_lists=("transformer_blocks",),
    block_types={"CogVideoXBlock": BlockSpec(("hidden_states", "encoder_hidden_states"), ("attn1",))},
    pipelines={
        "CogVideoXPipeline": _COGVIDEOX,
        "CogVideoXImageToVideoPipeline": _COGVIDEOX,
        "CogVideoXVideoToVideoPipeline": _COGVIDEOX,
    },
    default_pipeline=_COGVIDEOX,
))
