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
    from_dict,
)
from .install import describe, install_quant, method_install, torchao_config, weight_bytes
from .precision import cast_components, components
from .support import QuantUnsupportedError, Support, check_supported, supported

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
