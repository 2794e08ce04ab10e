"""UNet2DConditionModel (Stable Diffusion 1.x / 2.x, SDXL and the many pipelines built on it)."""

from __future__ import annotations

from . import DenoiserSpec, PipelineSpec, UNetSpec, register_denoiser

# every diffusers pipeline on this UNet batches CFG and passes the scheduler no extra arguments
_UNET = PipelineSpec("batched")

SPEC = register_denoiser(DenoiserSpec(
    name="UNet2DConditionModel",
    family="unet-image",
    # no block_lists: skip connections join the down and up paths, so it is not a chain of
    # blocks; the cache methods that understand that (DeepCache) use the UNet structure
    unet=UNetSpec(down="down_blocks", mid="mid_block", up="up_blocks"),
    pipelines={"StableDiffusionPipeline": _UNET, "StableDiffusionXLPipeline": _UNET},
    default_pipeline=_UNET,
))
