"""Real diffusers pipelines at toy size, built offline: seeded random weights, word-level tokenizers.

Each builder returns a ``TinyPipeline``: the diffusers pipeline object itself (its own
``__call__``, prompt encoding, CFG and scheduler loop) plus the call settings that keep a
run small: a few steps, classifier-free guidance on, latents out. The tokenizers are the
demo models' word-level ``PreTrainedTokenizerFast`` (``mindiesd_tune.models.tokenizer``),
standing in for CLIPTokenizer, T5TokenizerFast, LlamaTokenizerFast and Qwen2Tokenizer:
the pipelines call them only through the common tokenizer interface (padding, truncation,
``model_max_length``, attention masks), so no vocabulary file is needed.

CFG comes in two layouts, which decide how the cache keeps its state:
  * batched: cond and uncond in one forward, no cache context (SD3, PixArt-Sigma, SD 1.5,
    SDXL) or one "cond_uncond" context (CogVideoX): one state per call;
  * separate: one forward per branch inside ``cache_context("cond")`` / ``("uncond")``
    (HunyuanVideo's and Qwen-Image's true CFG): one state per branch.

Stand-ins where the real parts need files from the hub: the tokenizers (above); HunyuanVideo's
prompt template, whose ``crop_start`` counts tokens of the Llava tokenizer, is passed as a plain
``"{}"`` with ``crop_start=0``, as diffusers' own tests do; Qwen-Image's ``prompt_template_encode_start_idx``
(34 Qwen tokens) is recounted with the word-level tokenizer. Outputs are latents (``output_type="latent"``):
the VAEs are built, as the pipelines need their configs, but not run.

All seven pipelines build and run offline at diffusers 0.42.1; none had to be left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from mindiesd_tune.models.tokenizer import BOS_ID, EOS_ID, PAD_ID, make_tokenizer, vocabulary

STEPS = 6
TEXT_LEN = 8  # tokens per prompt (word-level: BOS + up to 6 words + EOS)
PROMPTS = ("a red circle", "a blue square")  # same token count: single and batched runs see the same text shapes
NEGATIVE = "a gray background"


@dataclass
class TinyPipeline:
    name: str
    pipe: object
    call: dict  # generation settings of every call
    cfg_branches: int  # denoiser calls per step: 1 (batched CFG) or 2 (separate cond/uncond)
    is_unet: bool = False
    blocks: int = 0  # repeated blocks (transformers) or down + mid + up blocks (UNets)

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.unet if self.is_unet else self.pipe.transformer

    @torch.inference_mode()
    def __call__(self, prompts=PROMPTS, seeds=None, **overrides) -> torch.Tensor:
        """The pipeline's latents for ``prompts`` (one seeded generator per prompt)."""
        prompts = list(prompts)
        seeds = range(len(prompts)) if seeds is None else seeds
        generator = [torch.Generator().manual_seed(s) for s in seeds]
        call = {**self.call, **overrides}
        if isinstance(call.get("negative_prompt"), str):  # SD 1.5 wants a list beside a list of prompts
            call["negative_prompt"] = [call["negative_prompt"]] * len(prompts)
        return self.pipe(prompt=prompts, generator=generator, **call, return_dict=False)[0]


def _seed(seed: int) -> None:
    torch.manual_seed(seed)


def _finish(pipe):
    for comp in pipe.components.values():
        if isinstance(comp, torch.nn.Module):
            comp.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _clip(dim: int, with_projection: bool, seed: int, positions: int = TEXT_LEN):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    _seed(seed)
    config = CLIPTextConfig(vocab_size=len(vocabulary()), hidden_size=dim, intermediate_size=2 * dim, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=positions, projection_dim=dim,
                            bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _t5(dim: int, seed: int):
    from transformers import T5Config, T5EncoderModel

    _seed(seed)
    return T5EncoderModel(T5Config(vocab_size=len(vocabulary()), d_model=dim, d_kv=dim // 2, d_ff=2 * dim, num_layers=2,
                                   num_heads=2, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                                   decoder_start_token_id=PAD_ID, pad_token_id=PAD_ID, eos_token_id=EOS_ID,
                                   feed_forward_proj="gated-gelu", dropout_rate=0.0))


def _vae_kl(seed: int, latent_channels: int = 4, levels: int = 2):
    from diffusers import AutoencoderKL

    _seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                         up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=(8,) * levels,
                         layers_per_block=1, latent_channels=latent_channels, norm_num_groups=4, sample_size=16)


def _tiny_unet(seed: int, cross_dim: int, **extra):
    from diffusers import UNet2DConditionModel

    _seed(seed)
    return UNet2DConditionModel(block_out_channels=(8, 16, 16), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, norm_num_groups=4, cross_attention_dim=cross_dim, attention_head_dim=4,
                                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), **extra)


def _unet_blocks(unet) -> int:
    return len(unet.down_blocks) + (unet.mid_block is not None) + len(unet.up_blocks)


# ----------------------------------------------------------------------------- pipelines


def sd3() -> TinyPipeline:
    """StableDiffusion3Pipeline: two CLIP-with-projection encoders, T5, an SD3.5-style transformer
    (block 0 has the dual attention ``attn2``; the last block drops the text stream)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    clip_dim = 16
    _seed(3)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=4, attention_head_dim=8,
                                        num_attention_heads=2, joint_attention_dim=2 * clip_dim, caption_projection_dim=16,
                                        pooled_projection_dim=2 * clip_dim, out_channels=4, pos_embed_max_size=8,
                                        dual_attention_layers=(0,))
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=_vae_kl(4),
        text_encoder=_clip(clip_dim, True, 0), tokenizer=make_tokenizer(TEXT_LEN),
        text_encoder_2=_clip(clip_dim, True, 1), tokenizer_2=make_tokenizer(TEXT_LEN),
        text_encoder_3=_t5(2 * clip_dim, 2), tokenizer_3=make_tokenizer(TEXT_LEN, add_bos_eos=False),
    )
    call = dict(num_inference_steps=STEPS, guidance_scale=5.0, height=16, width=16, max_sequence_length=TEXT_LEN,
                negative_prompt=NEGATIVE, output_type="latent")
    return TinyPipeline("sd3", _finish(pipe), call, cfg_branches=1, blocks=4)


def pixart_sigma() -> TinyPipeline:
    """PixArtSigmaPipeline: T5 encoder, PixArt transformer with learned sigma (8 output channels)."""
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    _seed(3)
    transformer = PixArtTransformer2DModel(sample_size=8, num_layers=3, patch_size=2, attention_head_dim=8,
                                           num_attention_heads=2, caption_channels=16, in_channels=4, cross_attention_dim=16,
                                           out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
                                           num_embeds_ada_norm=1000, norm_type="ada_norm_single",
                                           norm_elementwise_affine=False, norm_eps=1e-6)
    pipe = PixArtSigmaPipeline(tokenizer=make_tokenizer(TEXT_LEN, add_bos_eos=False), text_encoder=_t5(16, 0),
                               vae=_vae_kl(1), transformer=transformer, scheduler=DPMSolverMultistepScheduler())
    call = dict(num_inference_steps=STEPS, guidance_scale=4.5, height=16, width=16, max_sequence_length=TEXT_LEN,
                negative_prompt=NEGATIVE, use_resolution_binning=False, clean_caption=False, output_type="latent")
    return TinyPipeline("pixart_sigma", _finish(pipe), call, cfg_branches=1, blocks=3)


def sd15() -> TinyPipeline:
    """StableDiffusionPipeline (SD 1.5 layout): CLIP text encoder, UNet2DConditionModel, DDIM."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    unet = _tiny_unet(3, cross_dim=16)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=_vae_kl(1), text_encoder=_clip(16, False, 0), tokenizer=make_tokenizer(TEXT_LEN),
                                   unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)
    call = dict(num_inference_steps=STEPS, guidance_scale=7.5, height=16, width=16, negative_prompt=NEGATIVE,
                output_type="latent")
    return TinyPipeline("sd15", _finish(pipe), call, cfg_branches=1, is_unet=True, blocks=_unet_blocks(unet))


def sdxl() -> TinyPipeline:
    """StableDiffusionXLPipeline: CLIP + CLIP-with-projection, a text_time-conditioned UNet, Euler."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    clip_dim, time_dim = 16, 4
    unet = _tiny_unet(3, cross_dim=2 * clip_dim, addition_embed_type="text_time", addition_time_embed_dim=time_dim,
                      projection_class_embeddings_input_dim=6 * time_dim + clip_dim, use_linear_projection=True)
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       timestep_spacing="leading", steps_offset=1)
    pipe = StableDiffusionXLPipeline(vae=_vae_kl(1), text_encoder=_clip(clip_dim, False, 0),
                                     text_encoder_2=_clip(clip_dim, True, 2), tokenizer=make_tokenizer(TEXT_LEN),
                                     tokenizer_2=make_tokenizer(TEXT_LEN), unet=unet, scheduler=scheduler,
                                     add_watermarker=False)
    call = dict(num_inference_steps=STEPS, guidance_scale=5.0, height=16, width=16, negative_prompt=NEGATIVE,
                output_type="latent")
    return TinyPipeline("sdxl", _finish(pipe), call, cfg_branches=1, is_unet=True, blocks=_unet_blocks(unet))


def cogvideox() -> TinyPipeline:
    """CogVideoXPipeline: T5 encoder, CogVideoX transformer (batched CFG in a "cond_uncond" context)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel

    _seed(1)
    vae = AutoencoderKLCogVideoX(in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 2,
                                 up_block_types=("CogVideoXUpBlock3D",) * 2, block_out_channels=(8, 8), latent_channels=4,
                                 layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4)
    _seed(3)
    transformer = CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                                              time_embed_dim=8, text_embed_dim=16, num_layers=3, sample_width=8,
                                              sample_height=8, sample_frames=5, patch_size=2, temporal_compression_ratio=4,
                                              max_text_seq_length=TEXT_LEN)
    pipe = CogVideoXPipeline(tokenizer=make_tokenizer(TEXT_LEN, add_bos_eos=False), text_encoder=_t5(16, 0), vae=vae,
                             transformer=transformer, scheduler=CogVideoXDDIMScheduler(timestep_spacing="trailing"))
    call = dict(num_inference_steps=STEPS, guidance_scale=6.0, height=16, width=16, num_frames=5,
                max_sequence_length=TEXT_LEN, negative_prompt=NEGATIVE, output_type="latent")
    return TinyPipeline("cogvideox", _finish(pipe), call, cfg_branches=1, blocks=3)


def hunyuan_video() -> TinyPipeline:
    """HunyuanVideoPipeline: Llama + CLIP encoders, embedded guidance plus true CFG (separate cond/uncond)."""
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )
    from transformers import LlamaConfig, LlamaModel

    _seed(0)
    llama = LlamaModel(LlamaConfig(vocab_size=len(vocabulary()), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                   bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID))
    _seed(1)
    vae = AutoencoderKLHunyuanVideo(in_channels=3, out_channels=3, latent_channels=4,
                                    down_block_types=("HunyuanVideoDownBlock3D",) * 4,
                                    up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
                                    layers_per_block=1, norm_num_groups=4, spatial_compression_ratio=8,
                                    temporal_compression_ratio=4, mid_block_add_attention=True)
    _seed(3)
    transformer = HunyuanVideoTransformer3DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
                                                 num_layers=2, num_single_layers=2, num_refiner_layers=1, mlp_ratio=2.0,
                                                 patch_size=1, patch_size_t=1, text_embed_dim=16, pooled_projection_dim=8,
                                                 rope_axes_dim=(2, 2, 4), guidance_embeds=True)
    pipe = HunyuanVideoPipeline(text_encoder=llama, tokenizer=make_tokenizer(64), transformer=transformer, vae=vae,
                                scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                                # the pipeline pads CLIP prompts to 77 tokens
                                text_encoder_2=_clip(8, False, 2, positions=77), tokenizer_2=make_tokenizer(77))
    call = dict(num_inference_steps=STEPS, guidance_scale=6.0, true_cfg_scale=4.0, negative_prompt=NEGATIVE, height=32,
                width=32, num_frames=5, max_sequence_length=TEXT_LEN, output_type="latent",
                # the template of the real Llava tokenizer would crop 95 tokens the word-level one does not make
                prompt_template={"template": "{}", "crop_start": 0})
    return TinyPipeline("hunyuan_video", _finish(pipe), call, cfg_branches=2, blocks=4)


def qwen_image() -> TinyPipeline:
    """QwenImagePipeline: a Qwen2.5-VL text encoder, Qwen-Image transformer, true CFG (separate cond/uncond)."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vocab = len(vocabulary())
    _seed(0)
    config = Qwen2_5_VLConfig(
        text_config={"hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "vocab_size": vocab, "rope_theta": 1000000.0,
                     "bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID,
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}},
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        hidden_size=16, vocab_size=vocab, vision_start_token_id=vocab + 1, vision_end_token_id=vocab + 2,
        vision_token_id=vocab + 3, image_token_id=vocab + 4, video_token_id=vocab + 5,
    )
    text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    _seed(1)
    vae = AutoencoderKLQwenImage(base_dim=8, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1,
                                 temperal_downsample=[False, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    _seed(3)
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=3,
                                              attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                              axes_dims_rope=(2, 2, 4))
    tokenizer = make_tokenizer(1024, add_bos_eos=False)
    pipe = QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                             tokenizer=tokenizer, transformer=transformer)
    # the real template's system part is 34 Qwen tokens; count it with this tokenizer instead
    prefix = pipe.prompt_template_encode.split("{}")[0]
    pipe.prompt_template_encode_start_idx = len(tokenizer(prefix, add_special_tokens=False).input_ids)
    call = dict(num_inference_steps=STEPS, true_cfg_scale=4.0, negative_prompt=NEGATIVE, height=32, width=32,
                max_sequence_length=TEXT_LEN, output_type="latent")
    return TinyPipeline("qwen_image", _finish(pipe), call, cfg_branches=2, blocks=3)


BUILDERS: dict[str, Callable[[], TinyPipeline]] = {
    "sd3": sd3,
    "pixart_sigma": pixart_sigma,
    "sd15": sd15,
    "sdxl": sdxl,
    "cogvideox": cogvideox,
    "hunyuan_video": hunyuan_video,
    "qwen_image": qwen_image,
}
