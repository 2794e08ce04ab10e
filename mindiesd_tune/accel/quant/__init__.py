"""Precision and quantisation: per-component dtypes and weight/activation quantisation schemes.

``install_quant(pipe, cfg) -> undo`` puts a quant config on a pipeline; ``supported(device)``
says which schemes and precisions a device runs; ``weight_bytes(pipe)`` measures the linear
weights (with their scales) per component. Schemes run on torchao (CPU, CUDA; the ``quant``
extra) and on torch_npu (Ascend). See docs/quantisation.md.
"""

from .config import (
    COMPONENTS,
    INT4_GROUP_SIZES,
    PRECISIONS,
    SCHEME_CONFIGS,
    SCHEMES,
    FP8W8A8Config,
    FP8W8A16Config,
    NoQuantConfig,
    W4A16Config,
    W8A8Config,
    W8A16Config,
    WeightQuantConfig,
    describe,
    from_dict,
)

# The configs are plain dataclasses; everything else needs torch, so it is imported on first
# use: the method registry reads the configs, and ``validate``/``show`` must not load torch.
_LAZY = {
    "install_quant": "install", "method_install": "install", "torchao_config": "install",
    "weight_bytes": "install", "cast_components": "precision", "components": "precision",
    "QuantUnsupportedError": "support", "Support": "support", "check_supported": "support", "supported": "support",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "COMPONENTS",
    "FP8W8A16Config",
    "FP8W8A8Config",
    "INT4_GROUP_SIZES",
    "NoQuantConfig",
    "PRECISIONS",
    "QuantUnsupportedError",
    "SCHEMES",
    "SCHEME_CONFIGS",
    "Support",
    "W4A16Config",
    "W8A16Config",
    "W8A8Config",
    "WeightQuantConfig",
    "cast_components",
    "check_supported",
    "components",
    "describe",
    "from_dict",
    "install_quant",
    "method_install",
    "supported",
    "torchao_config",
    "weight_bytes",
]
