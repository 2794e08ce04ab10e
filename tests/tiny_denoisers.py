"""Tiny configs of the eight supported denoiser classes, built in-process, and a fake denoising loop.

Building whole pipelines offline needs tokenizers and text encoders for each; the denoiser
is what the cache hooks touch, so these tests drive it directly with a Euler-like loop:
x <- x - dt * model(x, t) over decreasing t, batch 2 (as batched CFG passes cond+uncond).
"""

from __future__ import annotations

import torch

B, L = 2, 8  # batch, text length


def _g(seed: int):
    return torch.Generator().manual_seed(seed)


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=_g(seed))


def flux():
    from diffusers import FluxTransformer2DModel

    m = FluxTransformer2DModel(patch_size=1, in_channels=8, num_layers=2, num_single_layers=2, attention_head_dim=8,
                               num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=8, axes_dims_rope=(2, 2, 4))
    h = w = 4
    ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(h).float(), torch.arange(w).float(), indexing="ij"), -1).reshape(-1, 3)
    inputs = dict(hidden_states=_rand(B, h * w, 8), encoder_hidden_states=_rand(B, L, 16, seed=1),
                  pooled_projections=_rand(B, 8, seed=2), img_ids=ids, txt_ids=torch.zeros(L, 3))
    return m, inputs, "hidden_states", lambda t: t / 1000


def sd3():
    from diffusers import SD3Transformer2DModel

    m = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8,
                              num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                              pooled_projection_dim=8, out_channels=4, pos_embed_max_size=8)
    inputs = dict(hidden_states=_rand(B, 4, 8, 8), encoder_hidden_states=_rand(B, L, 16, seed=1),
                  pooled_projections=_rand(B, 8, seed=2))
    return m, inputs, "hidden_states", None


def wan():
    from diffusers import WanTransformer3DModel

    m = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                              out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=3, rope_max_seq_len=32)
    inputs = dict(hidden_states=_rand(B, 4, 2, 8, 8), encoder_hidden_states=_rand(B, L, 16, seed=1))
    return m, inputs, "hidden_states", None


def hunyuan_video():
    from diffusers import HunyuanVideoTransformer3DModel

    m = HunyuanVideoTransformer3DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
                                       num_layers=2, num_single_layers=2, num_refiner_layers=1, mlp_ratio=2.0,
                                       patch_size=1, patch_size_t=1, text_embed_dim=16, pooled_projection_dim=8,
                                       rope_axes_dim=(2, 2, 4), guidance_embeds=True)
    inputs = dict(hidden_states=_rand(B, 4, 2, 4, 4), encoder_hidden_states=_rand(B, L, 16, seed=1),
                  encoder_attention_mask=torch.ones(B, L, dtype=torch.bool), pooled_projections=_rand(B, 8, seed=2),
                  guidance=torch.full((B,), 3500.0))
    return m, inputs, "hidden_states", None


def cogvideox():
    from diffusers import CogVideoXTransformer3DModel

    m = CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                                    time_embed_dim=8, text_embed_dim=16, num_layers=3, sample_width=8, sample_height=8,
                                    sample_frames=5, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=L)
    inputs = dict(hidden_states=_rand(B, 2, 4, 8, 8), encoder_hidden_states=_rand(B, L, 16, seed=1))
    return m, inputs, "hidden_states", None


def qwen_image():
    from diffusers import QwenImageTransformer2DModel

    m = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=3, attention_head_dim=8,
                                    num_attention_heads=2, joint_attention_dim=16, axes_dims_rope=(2, 2, 4))
    inputs = dict(hidden_states=_rand(B, 16, 16), encoder_hidden_states=_rand(B, L, 16, seed=1),
                  encoder_hidden_states_mask=torch.ones(B, L, dtype=torch.long), img_shapes=[[(1, 4, 4)]] * B)
    return m, inputs, "hidden_states", lambda t: t / 1000


def pixart():
    from diffusers import PixArtTransformer2DModel

    m = PixArtTransformer2DModel(sample_size=8, num_layers=3, patch_size=2, attention_head_dim=8, num_attention_heads=2,
                                 caption_channels=16, in_channels=4, cross_attention_dim=16, out_channels=8,
                                 attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
                                 norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6)
    inputs = dict(hidden_states=_rand(B, 4, 8, 8), encoder_hidden_states=_rand(B, L, 16, seed=1),
                  added_cond_kwargs={"resolution": None, "aspect_ratio": None})
    return m, inputs, "hidden_states", None


def unet():
    from diffusers import UNet2DConditionModel

    m = UNet2DConditionModel(block_out_channels=(8, 16, 16), layers_per_block=1, sample_size=8, in_channels=4,
                             out_channels=4, norm_num_groups=4, cross_attention_dim=16, attention_head_dim=4,
                             down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                             up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    inputs = dict(sample=_rand(B, 4, 8, 8), encoder_hidden_states=_rand(B, L, 16, seed=1))
    return m, inputs, "sample", None


BUILDERS = {
    "FluxTransformer2DModel": flux,
    "SD3Transformer2DModel": sd3,
    "WanTransformer3DModel": wan,
    "HunyuanVideoTransformer3DModel": hunyuan_video,
    "CogVideoXTransformer3DModel": cogvideox,
    "QwenImageTransformer2DModel": qwen_image,
    "PixArtTransformer2DModel": pixart,
    "UNet2DConditionModel": unet,
}


def build(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model, inputs, x_name, t_scale = BUILDERS[name]()
    return model.eval(), inputs, x_name, t_scale


@torch.inference_mode()
def denoise(model, inputs: dict, x_name: str, t_scale=None, steps: int = 8) -> torch.Tensor:
    """A fake sampling loop: Euler steps on the model's (first) output, timesteps 999 -> 0."""
    x = inputs[x_name].clone()
    for k in range(steps):
        t = torch.full((B,), 999.0 * (1 - k / steps))
        out = model(**{**inputs, x_name: x}, timestep=t if t_scale is None else t_scale(t), return_dict=False)[0]
        out = out[:, : x.shape[1]] if out.shape != x.shape and out.dim() == 4 else out
        x = x - (1.0 / steps) * out.reshape(x.shape)
    return x
