"""Build small Flux and Wan pipelines in-process from configs, with seeded weights.

These are the architectures of FluxPipeline and WanPipeline at toy size. With no weights
file they are random (seeded, so every process builds the same model); with one, they load
trained weights over the same configs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .tokenizer import BOS_ID, EOS_ID, PAD_ID, make_tokenizer, vocabulary


@dataclass(frozen=True)
class FluxSize:
    text_len: int = 24
    text_dim: int = 64
    clip_dim: int = 64
    vae_channels: tuple[int, ...] = (32, 64, 64)
    latent_channels: int = 4
    num_layers: int = 2
    num_single_layers: int = 4
    heads: int = 4
    head_dim: int = 32
    axes_dims_rope: tuple[int, int, int] = (8, 12, 12)


@dataclass(frozen=True)
class WanSize:
    text_len: int = 24
    text_dim: int = 64
    vae_base_dim: int = 16
    vae_dim_mult: tuple[int, ...] = (1, 2, 2)
    vae_temporal_downsample: tuple[bool, ...] = (False, True)
    z_dim: int = 8
    num_layers: int = 4
    heads: int = 4
    head_dim: int = 32
    ffn_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)


# The demo models' architecture; the shipped weights (training/) fit exactly these configs.
DEMO_FLUX_SIZE = FluxSize(heads=4, head_dim=48, num_layers=2, num_single_layers=6, axes_dims_rope=(8, 20, 20))
DEMO_WAN_SIZE = WanSize(heads=4, head_dim=48, num_layers=6, ffn_dim=512)
# Unit-test sized: a 10-step call takes well under a second; random weights only.
TINY_FLUX_SIZE = FluxSize(
    text_len=16, vae_channels=(16, 16), heads=2, head_dim=16, num_layers=1, num_single_layers=2, axes_dims_rope=(4, 6, 6)
)
# Hidden size 1024 (8 heads of 128), as in real DiTs' matmuls, but three blocks: precision,
# quantisation and meshes are timed on realistic matrix sizes at an affordable cost. Four VAE
# levels give 256x256 images from 32x32 latents, 256 image tokens.
MID_FLUX_SIZE = FluxSize(
    text_len=16, vae_channels=(16, 16, 16, 16), heads=8, head_dim=128, num_layers=1, num_single_layers=2,
    axes_dims_rope=(16, 56, 56),
)
TINY_WAN_SIZE = WanSize(text_len=16, vae_base_dim=8, z_dim=4, heads=2, head_dim=16, num_layers=2, ffn_dim=64)


def _seeded(seed: int):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    return g


def _t5_config(size_dim: int, vocab: int, layers: int = 2):
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab,
        d_model=size_dim,
        d_kv=size_dim // 4,
        d_ff=size_dim * 2,
        num_layers=layers,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        decoder_start_token_id=PAD_ID,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
    )


def build_flux(size: FluxSize = FluxSize(), seed: int = 0, state_dicts: dict[str, dict] | None = None):
    """A FluxPipeline with toy-sized FluxTransformer2DModel, AutoencoderKL, CLIP and T5 encoders."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5EncoderModel

    vocab = len(vocabulary())
    _seeded(seed)
    clip = _flux_clip(size, vocab)
    _seeded(seed + 1)
    t5 = T5EncoderModel(_t5_config(size.text_dim, vocab))
    _seeded(seed + 2)
    vae = _flux_vae(size)
    _seeded(seed + 3)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=size.latent_channels * 4,
        num_layers=size.num_layers,
        num_single_layers=size.num_single_layers,
        attention_head_dim=size.head_dim,
        num_attention_heads=size.heads,
        joint_attention_dim=size.text_dim,
        pooled_projection_dim=size.clip_dim,
        guidance_embeds=False,
        axes_dims_rope=size.axes_dims_rope,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=clip,
        tokenizer=make_tokenizer(size.text_len),
        text_encoder_2=t5,
        tokenizer_2=make_tokenizer(size.text_len, add_bos_eos=False),
        transformer=transformer,
    )
    _load_state_dicts(pipe, state_dicts)
    _eval(pipe)
    return pipe


def _flux_clip(size: FluxSize, vocab: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab,
            hidden_size=size.clip_dim,
            intermediate_size=size.clip_dim * 2,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=size.text_len,
            projection_dim=size.clip_dim,
            bos_token_id=BOS_ID,
            eos_token_id=EOS_ID,
            pad_token_id=PAD_ID,
        )
    )


def _flux_vae(size: FluxSize):
    from diffusers import AutoencoderKL

    n = len(size.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=size.vae_channels,
        layers_per_block=1,
        latent_channels=size.latent_channels,
        norm_num_groups=16,
        sample_size=64,
        scaling_factor=1.0,
        shift_factor=0.0,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def build_wan(size: WanSize = WanSize(), seed: int = 0, state_dicts: dict[str, dict] | None = None):
    """A WanPipeline with toy-sized WanTransformer3DModel, AutoencoderKLWan and UMT5 encoder."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    vocab = len(vocabulary())
    _seeded(seed)
    text_encoder = UMT5EncoderModel(_t5_config(size.text_dim, vocab))
    _seeded(seed + 1)
    temporal = 2 ** sum(size.vae_temporal_downsample)
    spatial = 2 ** (len(size.vae_dim_mult) - 1)
    vae = AutoencoderKLWan(
        base_dim=size.vae_base_dim,
        z_dim=size.z_dim,
        dim_mult=list(size.vae_dim_mult),
        num_res_blocks=1,
        temperal_downsample=list(size.vae_temporal_downsample),
        latents_mean=[0.0] * size.z_dim,
        latents_std=[1.0] * size.z_dim,
        scale_factor_temporal=temporal,
        scale_factor_spatial=spatial,
    )
    _seeded(seed + 2)
    transformer = WanTransformer3DModel(
        patch_size=size.patch_size,
        num_attention_heads=size.heads,
        attention_head_dim=size.head_dim,
        in_channels=size.z_dim,
        out_channels=size.z_dim,
        text_dim=size.text_dim,
        freq_dim=64,
        ffn_dim=size.ffn_dim,
        num_layers=size.num_layers,
        cross_attn_norm=True,
        rope_max_seq_len=64,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = WanPipeline(
        tokenizer=make_tokenizer(size.text_len, add_bos_eos=False),
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        transformer=transformer,
    )
    _load_state_dicts(pipe, state_dicts)
    _eval(pipe)
    return pipe


def _load_state_dicts(pipe, state_dicts: dict[str, dict] | None) -> None:
    if not state_dicts:
        return
    for name, sd in state_dicts.items():
        getattr(pipe, name).load_state_dict(sd, strict=True)


def _eval(pipe) -> None:
    for comp in pipe.components.values():
        if isinstance(comp, torch.nn.Module):
            comp.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
