"""Attention processors that route a model's attention through ``SparseAttention``.

Each mirrors the diffusers processor it replaces (FluxAttnProcessor, WanAttnProcessor,
JointAttnProcessor2_0 of diffusers 0.42) up to the attention call, so dense calls give the
original output bit for bit; calls they do not handle (an attention mask, Wan's image
context) go to the original processor unchanged.
"""

from __future__ import annotations

import torch

from ...compat.diffusers import qkv_projections  # diffusers' private projections, reached in one place
from .engine import SparseAttention


class SparseProcessor:
    """Base of the sparse processors; denoiser specs name subclasses in ``SparseSpec.processors``."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Inside a compiled block (compile.regional) the processor runs eagerly: traced, its
        # per-layer index, counters and workspace lookups would make Dynamo recompile the block
        # for every layer and step. The block's other operations stay compiled around it.
        if "__call__" in cls.__dict__:
            cls.__call__ = torch.compiler.disable(cls.__call__)

    def __init__(self, original, attend: SparseAttention, layer: int):
        self.original, self.attend, self.layer = original, attend, layer

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layer={self.layer}, {self.attend.cfg.method})"


class FluxSparseAttnProcessor(SparseProcessor):
    """Flux joint attention: ``[text, image]`` in one sequence (double and single blocks)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        if attention_mask is not None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        from diffusers.models.transformers import transformer_flux as flux

        query, key, value, encoder_query, encoder_key, encoder_value = qkv_projections("transformer_flux")(
            attn, hidden_states, encoder_hidden_states
        )
        query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
        key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        value = value.unflatten(-1, (-1, attn.head_dim))
        if attn.added_kv_proj_dim is not None:
            encoder_query = attn.norm_added_q(encoder_query.unflatten(-1, (-1, attn.head_dim)))
            encoder_key = attn.norm_added_k(encoder_key.unflatten(-1, (-1, attn.head_dim)))
            encoder_value = encoder_value.unflatten(-1, (-1, attn.head_dim))
            query = torch.cat([encoder_query, query], dim=1)
            key = torch.cat([encoder_key, key], dim=1)
            value = torch.cat([encoder_value, value], dim=1)
        if image_rotary_emb is not None:
            query = flux.apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = flux.apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        out = self.attend(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), self.layer)
        hidden_states = out.transpose(1, 2).flatten(2, 3).to(query.dtype)

        if encoder_hidden_states is not None:
            encoder_hidden_states, hidden_states = hidden_states.split_with_sizes(
                [encoder_hidden_states.shape[1], hidden_states.shape[1] - encoder_hidden_states.shape[1]], dim=1
            )
            hidden_states = attn.to_out[1](attn.to_out[0](hidden_states.contiguous()))
            encoder_hidden_states = attn.to_add_out(encoder_hidden_states.contiguous())
            return hidden_states, encoder_hidden_states
        return hidden_states


class WanSparseAttnProcessor(SparseProcessor):
    """Wan self-attention over the 3D video grid (installed on ``attn1`` only)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if attention_mask is not None or encoder_hidden_states is not None or attn.add_k_proj is not None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        query, key, value = qkv_projections("transformer_wan")(attn, hidden_states, None)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = _wan_rotary(query, *rotary_emb)
            key = _wan_rotary(key, *rotary_emb)

        out = self.attend(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), self.layer)
        hidden_states = out.transpose(1, 2).flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](hidden_states))


def _wan_rotary(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    # as in WanAttnProcessor
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


class JointSparseAttnProcessor(SparseProcessor):
    """SD3 joint attention: ``[image, text]`` in one sequence."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        if attention_mask is not None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        residual = hidden_states
        batch_size = hidden_states.shape[0]
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (x.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if encoder_hidden_states is not None:
            eq, ek, ev = (
                p(encoder_hidden_states).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
                for p in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)
            )
            if attn.norm_added_q is not None:
                eq = attn.norm_added_q(eq)
            if attn.norm_added_k is not None:
                ek = attn.norm_added_k(ek)
            query = torch.cat([query, eq], dim=2)
            key = torch.cat([key, ek], dim=2)
            value = torch.cat([value, ev], dim=2)

        hidden_states = self.attend(query, key, value, self.layer)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)

        if encoder_hidden_states is not None:
            hidden_states, encoder_hidden_states = hidden_states[:, : residual.shape[1]], hidden_states[:, residual.shape[1] :]
            if not attn.context_pre_only:
                encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if encoder_hidden_states is not None:
            return hidden_states, encoder_hidden_states
        return hidden_states
