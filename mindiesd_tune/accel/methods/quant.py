"""quant: one entry per precision/quantisation scheme (configs and installer in ``accel.quant``).

The configs are ``accel.quant``'s dataclasses; the installer, ``describe`` aside, needs torch
(and torchao), so it is imported when a config is installed, not when the registry loads.
Each scheme's entry carries, as its ``hook``, the torchao config it runs; a new scheme is one
``scheme_method(...)`` entry (tests/toy_quant_plugin.py).
"""

from __future__ import annotations

import importlib.util

from ..quant.config import (
    COMPONENTS,
    INT4_GROUP_SIZES,
    PRECISIONS,
    SCHEME_CONFIGS,
    NoQuantConfig,
    describe,
)
from ..registry import Method, get_method, register_method

# searched filter values: a few blocks at either end, small layers left in float or not
MAX_SKIPPED_BLOCKS = 2
MIN_FEATURES_CHOICES = (0, 256, 1024)


def install(model, cfg, handle):
    from ..quant import method_install

    return method_install(model, cfg, handle)


def _load_dtype(ctx) -> str:
    dtype = getattr(ctx, "dtype", None)
    return dtype if dtype in PRECISIONS else "float32"


def precision_choices(ctx) -> list[str | None]:
    """The precisions a study offers a component: None (left at the load dtype), then the others.

    None rather than the load dtype's name, so that the baseline's config is the neutral one.
    """
    load = _load_dtype(ctx)
    return [None] + [p for p in _support(ctx).precisions if p != load]


def _device(ctx) -> str:
    return getattr(ctx, "device", None) or "cpu"


def _support(ctx):
    from ..quant import supported

    return supported(_device(ctx))


def _scheme_applies(scheme: str):
    def applies(ctx) -> bool:
        if scheme not in _support(ctx).schemes:
            return False
        # the NPU mapping is torch_npu's; everywhere else the schemes are torchao's
        return _device(ctx).startswith("npu") or importlib.util.find_spec("torchao") is not None

    return applies


def _skip_range(ctx) -> tuple[int, int]:
    n = getattr(ctx, "n_blocks", None)
    return 0, MAX_SKIPPED_BLOCKS if n is None else max(0, min(MAX_SKIPPED_BLOCKS, (n - 1) // 2))


def _suggest_precision(trial, ctx) -> dict:
    choices = precision_choices(ctx)
    return {f"quant.precision.{c}": trial.suggest_categorical(f"quant.precision.{c}", choices) for c in COMPONENTS}


def _suggest_weights(scheme: str):
    def suggest(trial, ctx) -> dict:
        # the search quantises the denoiser only: text encoders and VAEs are a small share of
        # a diffusion model's time, and their precision is searched instead
        out = _suggest_precision(trial, ctx)
        out["quant.skip_first_blocks"] = trial.suggest_int("quant.skip_first_blocks", *_skip_range(ctx))
        out["quant.skip_last_blocks"] = trial.suggest_int("quant.skip_last_blocks", *_skip_range(ctx))
        out["quant.skip_outside_blocks"] = trial.suggest_categorical("quant.skip_outside_blocks", [False, True])
        out["quant.min_features"] = trial.suggest_categorical("quant.min_features", list(MIN_FEATURES_CHOICES))
        if scheme == "w4a16":
            out["quant.group_size"] = trial.suggest_categorical("quant.group_size", list(INT4_GROUP_SIZES))
        return out

    return suggest


def _loaded(ctx, **precision) -> dict:
    return {f"quant.precision.{c}": precision.get(c) for c in COMPONENTS}


def _none_presets(ctx) -> list[dict]:
    bf16 = {"quant.scheme": "none", **_loaded(ctx, denoiser="bfloat16")}
    out = [bf16] if _load_dtype(ctx) != "bfloat16" else []
    cache = get_method("cache", "first_block")
    if out and cache.applies(ctx):
        out += [{**p, **bf16} for p in cache.presets(ctx)]
    return out


def _weight_presets(scheme: str):
    def presets(ctx) -> list[dict]:
        if scheme != "w8a16":
            return []
        return [{"quant.scheme": "w8a16", **_loaded(ctx), "quant.skip_first_blocks": 0, "quant.skip_last_blocks": 0,
                 "quant.skip_outside_blocks": False, "quant.min_features": 0}]

    return presets


def _torchao(name: str):
    """The hook of a scheme that is one of torchao's configs, by its name in ``torchao.quantization``."""

    def hook(cfg):
        import torchao.quantization as q

        # set_inductor_config=False: torchao would otherwise change torch._inductor's process-wide settings
        return getattr(q, name)(set_inductor_config=False)

    return hook


def _int4(cfg):
    import torchao.quantization as q

    from ...compat.torchao import int4_tile_packed_to_4d

    return q.Int4WeightOnlyConfig(group_size=cfg.group_size, int4_packing_format=int4_tile_packed_to_4d(),
                                  set_inductor_config=False)


TORCHAO = {
    "w8a16": _torchao("Int8WeightOnlyConfig"),
    "w8a8": _torchao("Int8DynamicActivationInt8WeightConfig"),
    "w4a16": _int4,
    "fp8_w8a16": _torchao("Float8WeightOnlyConfig"),
    "fp8_w8a8": _torchao("Float8DynamicActivationFloat8WeightConfig"),
}


def scheme_method(config: type, torchao, presets=None) -> Method:
    """The entry of a weight quantisation scheme.

    ``config``: a ``WeightQuantConfig`` subclass whose ``scheme`` class attribute names it;
    ``torchao(cfg)``: the torchao config it runs on CPU and CUDA (the entry's ``hook``);
    ``presets(ctx)``: its known-good points (none by default). The search space, the filters
    of which layers to quantise and the install are the section's shared ones.
    """
    scheme = config.scheme
    return Method(
        section="quant", name=scheme, config=config, install=install, suggest=_suggest_weights(scheme),
        applies=_scheme_applies(scheme), presets=presets or (lambda ctx: []), show=describe, hook=torchao,
        # components=() quantises nothing: the baseline, bit for bit
        neutral=config(components=(), precision={}), example=config(),
    )


register_method(Method(
    section="quant", name="none", config=NoQuantConfig, install=install, suggest=_suggest_precision,
    presets=_none_presets, neutral=NoQuantConfig(precision={}), show=describe,
    example=NoQuantConfig(precision={"denoiser": "bfloat16"}),
))

for _scheme, _kind in SCHEME_CONFIGS.items():
    if _scheme != "none":
        register_method(scheme_method(_kind, TORCHAO[_scheme], _weight_presets(_scheme)))

# the quant section's neutral config under the section's own name (profiles and callers use it)
QuantConfig = NoQuantConfig

__all__ = ["TORCHAO", "QuantConfig", "install", "precision_choices", "scheme_method"]
