"""``install_quant(pipe, cfg) -> undo``: precision and quantisation on a pipeline, and the way back.

Both swap tensors rather than copy them: a precision cast replaces ``param.data``, a scheme
replaces the linear layer's ``weight`` parameter (torchao) or the layer itself (torch_npu).
With ``keep_original=True`` (the tuner) the install keeps a reference to every original tensor
it replaces, and ``undo()`` puts those very tensors back, so the model is bit for bit the
baseline again; nothing is copied, so a worker holds one set of original weights however many
trials it runs. With ``keep_original=False`` (deployment) the originals are dropped, so their
memory is freed, and ``undo()`` refuses.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

from ...errors import UserError, require
from ..registry import method_of
from .config import NoQuantConfig, describe  # noqa: F401  (describe: re-exported)
from .filters import select_linears
from .precision import cast_components, components
from .support import check_supported

logger = logging.getLogger(__name__)


def _device_of(pipe) -> torch.device:
    for _, mods in components(pipe).items():
        for _, m in mods:
            p = next(m.parameters(), None)
            if p is not None:
                return p.device
    return torch.device("cpu")


def torchao_config(cfg):
    """The torchao config of a scheme, from its registry entry's ``hook``; one line naming the
    ``quant`` extra when torchao is missing."""
    require("torchao.quantization", "quant", f"quant.scheme {cfg.scheme}", package="torchao")
    build = method_of(cfg).hook
    if build is None:
        raise ValueError(f"quant.scheme {cfg.scheme} has no torchao mapping")
    return build(cfg)


def _parent(root: torch.nn.Module, name: str) -> tuple[torch.nn.Module, str]:
    parent, _, leaf = name.rpartition(".")
    return (root.get_submodule(parent) if parent else root), leaf


class _Quantised:
    """The layers one install quantised, with what puts them back."""

    def __init__(self, keep_original: bool):
        self.keep_original = keep_original
        self.weights: list[tuple[torch.nn.Linear, torch.nn.Parameter, set[str]]] = []
        self.modules: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []

    def torchao(self, module: torch.nn.Module, layers: list[tuple[str, torch.nn.Linear]], cfg) -> None:
        from torchao.quantization import quantize_

        config = torchao_config(cfg)
        chosen = {id(layer) for _, layer in layers}
        for _, layer in layers:
            self.weights.append((layer, layer.weight if self.keep_original else None, set(layer.__dict__)))
        quantize_(module, config, filter_fn=lambda m, fqn: id(m) in chosen)

    def npu(self, module: torch.nn.Module, layers: list[tuple[str, torch.nn.Linear]], cfg) -> None:
        from .npu import NpuQuantLinear

        for name, layer in layers:
            parent, leaf = _parent(module, name)
            setattr(parent, leaf, NpuQuantLinear(layer, cfg.scheme, getattr(cfg, "group_size", 0)))
            self.modules.append((parent, leaf, layer if self.keep_original else None))

    @property
    def gone(self) -> str | None:
        """Why ``undo()`` refuses (None: it restores every layer bit for bit)."""
        if not self.keep_original and (self.weights or self.modules):
            return "quantised without keep_original, so the original weights are gone"
        return None

    def undo(self) -> None:
        if self.gone:
            raise RuntimeError(self.gone)
        for layer, weight, keys in reversed(self.weights):
            layer.weight = weight
            for key in set(layer.__dict__) - keys:  # torchao sets an instance extra_repr
                del layer.__dict__[key]
        for parent, leaf, layer in reversed(self.modules):
            setattr(parent, leaf, layer)
        self.weights.clear()
        self.modules.clear()


def install_quant(pipe, cfg: NoQuantConfig, keep_original: bool = True) -> Callable[[], None]:
    """Put ``cfg`` (precision, then the scheme) on ``pipe`` (a pipeline or a bare denoiser); return the undo.

    Refuses, with one line naming the scheme and the device, a scheme the device cannot run,
    and with one line naming the ``quant`` extra when torchao is missing. Time it at the
    caller: quantising is set-up time, not latency.
    """
    cfg.validate()
    device = _device_of(pipe)
    check_supported(cfg, device)
    found = components(pipe)
    plan = []
    if cfg.quantises:
        for comp in cfg.components:
            for _attr, module in found.get(comp, []):
                plan.append((module, select_linears(module, cfg, comp)))
        if device.type != "npu":
            torchao_config(cfg)  # refuse before anything is changed
    casts = cast_components(pipe, cfg.precision, keep_original)
    quantised = _Quantised(keep_original)
    try:
        # the kernels take half-precision activations only: torchao's int4 on CUDA, every torch_npu one
        half = (torch.bfloat16,) if device.type == "cuda" and cfg.scheme == "w4a16" else \
            (torch.bfloat16, torch.float16) if device.type == "npu" else None
        if half and any(layer.weight.dtype not in half for _, layers in plan for _, layer in layers):
            raise UserError(f"quant.scheme {cfg.scheme} on {device.type} needs {' or '.join(str(h).replace('torch.', '') for h in half)} "
                            "weights: set quant.precision of the quantised components to it")
        for module, layers in plan:
            if layers:
                (quantised.npu if device.type == "npu" else quantised.torchao)(module, layers, cfg)
        n = sum(len(layers) for _, layers in plan)
        if cfg.quantises:
            logger.info("quant %s: %d linear layers quantised", cfg.scheme, n)
    except BaseException:
        if keep_original:
            quantised.undo()
            for c in reversed(casts):
                c.undo()
        raise

    def undo() -> None:
        for c in casts:  # all or nothing: a half-undone pipeline would run in mixed precision
            if not c.restorable:
                c.undo()  # raises, naming the component
        quantised.undo()
        for c in reversed(casts):
            c.undo()

    # what undo() cannot restore, for Handle.removable to read before anything is taken off
    undo.gone = [g for g in [*(c.gone for c in casts), quantised.gone] if g]
    return undo


def _tensor_bytes(t: torch.Tensor | None) -> int:
    """Bytes of a tensor; a torchao tensor subclass counts its inner tensors (data, scales, zero points)."""
    if t is None:
        return 0
    flatten = getattr(type(t), "__tensor_flatten__", None)
    if flatten is not None and type(t) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = t.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(t, n, None)) for n in names)
    return t.numel() * t.element_size()


def weight_bytes(pipe) -> dict[str, int]:
    """Bytes of the linear layers' weights (with their scales and zero points) per component: denoiser, text_encoder, vae."""
    from .npu import NpuQuantLinear

    out = {}
    for comp, mods in components(pipe).items():
        total = 0
        for _, module in mods:
            for layer in module.modules():
                if isinstance(layer, torch.nn.Linear):
                    total += _tensor_bytes(layer.weight)
                elif isinstance(layer, NpuQuantLinear):
                    total += _tensor_bytes(layer.qweight) + _tensor_bytes(layer.scale)
        out[comp] = total
    return out


def method_install(model, cfg: NoQuantConfig, handle) -> Callable[[], None]:
    """``install(model, cfg, handle) -> undo`` as a method-registry entry calls it.

    The whole pipeline (``handle.pipe``) when there is one, since precision and schemes reach
    the text encoders and the VAE; ``handle.keep_original`` (default True) says whether the
    originals are kept for the undo.
    """
    pipe = getattr(handle, "pipe", None)
    return install_quant(model if pipe is None else pipe, cfg, keep_original=getattr(handle, "keep_original", True))
