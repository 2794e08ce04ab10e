"""The quantisation schemes on Ascend NPUs, through torch_npu's quantised matmuls.

    w8a16  int8 weight (K, N), per-channel scale (N,)            npu_weight_quant_batchmatmul
    w4a16  int4 weight packed 8 per int32 (K, N/8),
           per-group scale (K / group, N)                        npu_weight_quant_batchmatmul(antiquant_group_size=group)
    w8a8   int8 weight (K, N), per-channel float32 scale (N,),
           activations int8 with a float32 scale per token       npu_dynamic_quant + npu_quant_matmul

Weights are quantised symmetrically (no offset: ``w = q * scale``) and stored as (N, K), the
``nn.Linear`` layout, and handed to the kernels transposed, which torch_npu recommends for
per-channel weights. The layout functions below are plain torch, so they are tested on the CPU;
the kernels themselves were not run here (no NPU): see docs/quantisation.md.
"""

from __future__ import annotations

import torch

from ...errors import MissingDependency

INT8_MAX = 127
INT4_MIN, INT4_MAX = -8, 7


def _npu():
    try:
        import torch_npu
    except ImportError:
        raise MissingDependency("quantisation on an Ascend NPU needs torch_npu, which is not installed "
                                "(install the torch_npu build matching your CANN version)") from None
    return torch_npu


def quantize_int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` (N, K) -> int8 ``q`` (N, K) and float32 ``scale`` (N,) with ``weight ~ q * scale[:, None]``."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / INT8_MAX
    q = torch.round(w / scale[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def quantize_int4_per_group(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` (N, K) -> int4 values ``q`` (N, K) held in int8, and float32 ``scale`` (K / group, N)."""
    n, k = weight.shape
    if k % group_size:
        raise ValueError(f"group size {group_size} does not divide the {k} input features")
    w = weight.detach().float().reshape(n, k // group_size, group_size)
    scale = w.abs().amax(dim=2).clamp(min=1e-12) / INT4_MAX  # (N, K/g)
    q = torch.round(w / scale[..., None]).clamp(INT4_MIN, INT4_MAX).to(torch.int8).reshape(n, k)
    return q, scale.t().contiguous()


def pack_int4(q_kn: torch.Tensor) -> torch.Tensor:
    """(K, N) int4 values -> (K, N/8) int32, eight to a word, through ``npu_convert_weight_to_int4pack``."""
    return _npu().npu_convert_weight_to_int4pack(q_kn.to(torch.int32).contiguous())


class NpuQuantLinear(torch.nn.Module):
    """A quantised replacement of one ``nn.Linear`` (``scheme`` is ``w8a16``, ``w8a8`` or ``w4a16``).

    Buffers: ``qweight`` (N, K) int8 (``w4a16``: packed by ``pack_int4`` on the NPU), ``scale``
    ((N,) per channel, or (K / group, N) per group), ``bias`` (N,) or None.
    """

    def __init__(self, layer: torch.nn.Linear, scheme: str, group_size: int = 0, pack: bool = True):
        super().__init__()
        self.scheme, self.group_size = scheme, group_size if scheme == "w4a16" else 0
        self.in_features, self.out_features = layer.in_features, layer.out_features
        dtype = layer.weight.dtype
        if scheme == "w4a16":
            q, scale = quantize_int4_per_group(layer.weight, group_size)
            qweight = pack_int4(q.t()) if pack else q
        elif scheme in ("w8a16", "w8a8"):
            q, scale = quantize_int8_per_channel(layer.weight)
            qweight = q
        else:
            raise ValueError(f"quant.scheme {scheme} has no torch_npu mapping")
        # weight-only kernels take the scale in the activations' dtype; npu_quant_matmul takes float32
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale if scheme == "w8a8" else scale.to(dtype))
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().clone())

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.group_size else ""
        return f"{self.in_features}, {self.out_features}, scheme={self.scheme}{group}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        npu = _npu()
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if self.scheme == "w8a8":
            xq, xscale = npu.npu_dynamic_quant(x2)
            out = npu.npu_quant_matmul(xq, self.qweight.t(), self.scale, pertoken_scale=xscale, output_dtype=x.dtype)
        elif self.scheme == "w4a16":
            out = npu.npu_weight_quant_batchmatmul(x2, self.qweight, self.scale, antiquant_group_size=self.group_size)
        else:
            out = npu.npu_weight_quant_batchmatmul(x2, self.qweight.t(), self.scale)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*shape[:-1], self.out_features)
