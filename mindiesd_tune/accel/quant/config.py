"""The quant section's configs: per-component precision, and one config class per quantisation scheme.

The scheme names follow MindIE SD (W8A8, W8A16, W4A16) and map to torchao's configs on CPU and
CUDA and to torch_npu's quantised matmuls on Ascend:

    scheme      weights / activations          torchao                                   torch_npu
    none        (precision only)               -                                         -
    w8a16       int8 per channel / float       Int8WeightOnlyConfig                      npu_weight_quant_batchmatmul
    w8a8        int8 per channel / int8/token  Int8DynamicActivationInt8WeightConfig     npu_dynamic_quant + npu_quant_matmul
    w4a16       int4 per group / float         Int4WeightOnlyConfig                      npu_weight_quant_batchmatmul (int4 pack)
    fp8_w8a16   float8 e4m3 per channel / float Float8WeightOnlyConfig                   -
    fp8_w8a8    float8 e4m3 / float8 dynamic    Float8DynamicActivationFloat8WeightConfig -

Every config is a dataclass with a ``scheme`` class attribute (the section's selector, as in
the method registry) and ``validate()``; a scheme that quantises nothing (``components=()``)
is the baseline, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..config import ConfigError

PRECISIONS = ("float32", "bfloat16", "float16")
# what ``precision`` and ``components`` name: the denoiser (transformer or unet), every text
# encoder of the pipeline together, and the VAE
COMPONENTS = ("denoiser", "text_encoder", "vae")
INT4_GROUP_SIZES = (32, 64, 128, 256)


def _check(ok: bool, name: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {value!r} {why}")


@dataclass
class NoQuantConfig:
    """No quantisation; each component may still run at its own precision.

    Attributes:
        precision: component -> ``float32``, ``bfloat16`` or ``float16``, on top of the dtype
            the model is loaded in (``model.dtype``, the baseline's). A component left out runs
            at the load dtype. Inputs are cast at the component's boundary where the pipeline
            does not; norms and the modules the model lists in ``_keep_in_fp32_modules`` stay
            float32. Components: ``denoiser``, ``text_encoder`` (every text encoder), ``vae``.
    """

    scheme: ClassVar[str] = "none"
    precision: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        _check(isinstance(self.precision, dict), "quant.precision", self.precision, "must be a mapping of component to dtype")
        for comp, dtype in self.precision.items():
            _check(comp in COMPONENTS, "quant.precision", comp, f"is not a component (use {', '.join(COMPONENTS)})")
            _check(dtype in PRECISIONS, f"quant.precision.{comp}", dtype, f"is not one of {', '.join(PRECISIONS)}")

    @property
    def quantises(self) -> bool:
        return False


@dataclass
class WeightQuantConfig(NoQuantConfig):
    """What every quantisation scheme shares: which components and which of their linear layers.

    Only ``nn.Linear`` layers are quantised; convolutions, embeddings and norms stay as they are.

    Attributes:
        components: the components whose linear layers are quantised (``denoiser``,
            ``text_encoder``, ``vae``). Empty: nothing is quantised (the baseline, bit for bit).
        skip_first_blocks: the denoiser's first N repeated blocks (in forward order, from the
            model registry) stay in float; the first blocks shape the features every later
            block reads, so they are the most sensitive.
        skip_last_blocks: the denoiser's last N repeated blocks stay in float.
        skip_outside_blocks: the denoiser's linear layers outside its repeated blocks (patch,
            text and time embedders, the final norm's modulation and output projection) stay
            in float; they are small and feed or produce the latents directly.
        min_features: a linear layer with fewer input or output features than this stays in
            float (0: no minimum); small matmuls gain nothing from quantisation.
    """

    components: tuple[str, ...] = ("denoiser",)
    skip_first_blocks: int = 0
    skip_last_blocks: int = 0
    skip_outside_blocks: bool = False
    min_features: int = 0

    def __post_init__(self):
        if isinstance(self.components, (list, str)):
            self.components = (self.components,) if isinstance(self.components, str) else tuple(self.components)

    def validate(self) -> None:
        super().validate()
        for comp in self.components:
            _check(comp in COMPONENTS, "quant.components", comp, f"is not a component (use {', '.join(COMPONENTS)})")
        _check(len(set(self.components)) == len(self.components), "quant.components", list(self.components), "names a component twice")
        _check(self.skip_first_blocks >= 0, "quant.skip_first_blocks", self.skip_first_blocks, "must be >= 0")
        _check(self.skip_last_blocks >= 0, "quant.skip_last_blocks", self.skip_last_blocks, "must be >= 0")
        _check(self.min_features >= 0, "quant.min_features", self.min_features, "must be >= 0")

    @property
    def quantises(self) -> bool:
        return bool(self.components)


@dataclass
class W8A16Config(WeightQuantConfig):
    """int8 weights (symmetric, one scale per output channel), activations in float (weight-only)."""

    scheme: ClassVar[str] = "w8a16"


@dataclass
class W8A8Config(WeightQuantConfig):
    """int8 weights per output channel and int8 activations quantised per token at run time (dynamic)."""

    scheme: ClassVar[str] = "w8a8"


@dataclass
class W4A16Config(WeightQuantConfig):
    """int4 weights with one scale and zero point per group of input features, activations in float.

    Attributes:
        group_size: input features sharing one scale (32, 64, 128 or 256). A layer whose input
            width it does not divide stays in float.
    """

    scheme: ClassVar[str] = "w4a16"
    group_size: int = 128

    def validate(self) -> None:
        super().validate()
        _check(self.group_size in INT4_GROUP_SIZES, "quant.group_size", self.group_size,
               f"must be one of {', '.join(map(str, INT4_GROUP_SIZES))}")


@dataclass
class FP8W8A16Config(WeightQuantConfig):
    """float8 (e4m3) weights per output channel, activations in float."""

    scheme: ClassVar[str] = "fp8_w8a16"


@dataclass
class FP8W8A8Config(WeightQuantConfig):
    """float8 (e4m3) weights and activations, activations scaled per token at run time."""

    scheme: ClassVar[str] = "fp8_w8a8"


SCHEME_CONFIGS: dict[str, type] = {
    c.scheme: c for c in (NoQuantConfig, W8A16Config, W8A8Config, W4A16Config, FP8W8A16Config, FP8W8A8Config)
}
SCHEMES = tuple(SCHEME_CONFIGS)


def from_dict(data: dict | None) -> NoQuantConfig:
    """The config of a ``quant:`` mapping (``{scheme: w8a16, precision: {denoiser: bfloat16}, ...}``), validated."""
    data = dict(data or {})
    scheme = data.pop("scheme", "none")
    _check(scheme in SCHEME_CONFIGS, "quant.scheme", scheme, f"is not one of {', '.join(SCHEMES)}")
    kind = SCHEME_CONFIGS[scheme]
    try:
        cfg = kind(**data)
    except TypeError as e:
        raise ConfigError(f"quant ({scheme}): {e}") from None
    cfg.validate()
    return cfg


def describe(cfg: NoQuantConfig) -> str:
    """One line for ``show`` and the report: ``w8a16 on denoiser, skip first 1 / last 1 blocks; precision denoiser=bfloat16``."""
    parts = []
    if cfg.quantises:
        head = f"{cfg.scheme} on {', '.join(cfg.components)}"
        if getattr(cfg, "group_size", None):
            head += f" (group {cfg.group_size})"
        skips = [f"first {cfg.skip_first_blocks}" if cfg.skip_first_blocks else "",
                 f"last {cfg.skip_last_blocks}" if cfg.skip_last_blocks else ""]
        skips = [s for s in skips if s]
        if skips:
            head += f", skip {' / '.join(skips)} blocks"
        if cfg.skip_outside_blocks:
            head += ", embedders and output projection in float"
        if cfg.min_features:
            head += f", layers of >= {cfg.min_features} features"
        parts.append(head)
    else:
        parts.append("none")
    if cfg.precision:
        parts.append("precision " + ", ".join(f"{k}={v}" for k, v in cfg.precision.items()))
    return "; ".join(parts)
