"""AccelConfig: the declarative description of every acceleration knob, with YAML round-trip.

Each section is a dataclass whose fields are documented in terms of speed and quality.
Sections that choose among methods (``cache``, ``sparse``) are tagged unions: the ``method``
key selects the dataclass through a registry, so adding a method adds one dataclass and
one handler, nothing else. A section left out means "off"; unknown keys are an error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml


class ConfigError(ValueError):
    """A config field has a bad name or value. The message names the field."""


# --------------------------------------------------------------------------- cache


_CACHE_METHODS: dict[str, type] = {}


def register_cache_method(cls):
    """Register a cache config dataclass under its ``method`` name."""
    _CACHE_METHODS[cls.method] = cls
    return cls


def cache_methods() -> list[str]:
    return sorted(_CACHE_METHODS)


@register_cache_method
@dataclass
class NoCache:
    """No caching: every block is computed at every step."""

    method: ClassVar[str] = "none"

    def validate(self) -> None:
        pass


@register_cache_method
@dataclass
class FirstBlockCacheConfig:
    """First-block residual cache (a.k.a. step cache; cf. diffusers FirstBlockCache, cache-dit DBCache F1B0).

    At every denoising step the first transformer block is computed. Its residual (output
    minus input) is compared with the residual at the last fully computed step; when the
    relative L1 change is below ``threshold``, the remaining blocks are skipped and their
    cached residual is added instead. Larger thresholds skip more steps: faster, less
    faithful. State is kept separately for each CFG branch and reset at every pipeline call.

    Attributes:
        threshold: relative L1 change of the first block's residual under which the rest of
            the network is skipped. 0 never skips (the baseline output, bit for bit).
        warmup_steps: the first steps of every call are always computed; early steps shape
            the image layout, so caching them costs the most quality.
        max_cached_steps: at most this many steps per call reuse the cache (-1: no limit).
        max_consecutive_cached_steps: at most this many cached steps in a row before a full
            computation refreshes the cache (-1: no limit). Bounds error accumulation.
        accumulate: compare the *sum* of relative changes since the last computed step with
            the threshold (TeaCache / cache-dit style) rather than the change alone, so a
            slow drift still triggers a refresh.
    """

    method: ClassVar[str] = "first_block"
    threshold: float = 0.0
    warmup_steps: int = 0
    max_cached_steps: int = -1
    max_consecutive_cached_steps: int = -1
    accumulate: bool = False

    def validate(self) -> None:
        _check(self.threshold >= 0, "cache.threshold", self.threshold, "must be >= 0")
        _check(self.warmup_steps >= 0, "cache.warmup_steps", self.warmup_steps, "must be >= 0")
        _check(self.max_cached_steps >= -1, "cache.max_cached_steps", self.max_cached_steps, "must be >= -1")
        _check(
            self.max_consecutive_cached_steps >= -1 and self.max_consecutive_cached_steps != 0,
            "cache.max_consecutive_cached_steps",
            self.max_consecutive_cached_steps,
            "must be -1 (no limit) or >= 1",
        )


# --------------------------------------------------------------------------- other sections


@dataclass
class SparseConfig:
    """Sparse attention. Only ``method: none`` (dense attention) exists so far."""

    method: str = "none"

    def validate(self) -> None:
        _check(self.method == "none", "sparse.method", self.method, "only 'none' is available")


@dataclass
class QuantConfig:
    """Weight/activation quantisation. Only ``scheme: none`` exists so far."""

    scheme: str = "none"

    def validate(self) -> None:
        _check(self.scheme == "none", "quant.scheme", self.scheme, "only 'none' is available")


@dataclass
class ParallelConfig:
    """Multi-device mesh degrees; their product is the number of devices one call uses.

    Attributes:
        cfg: split the conditional and unconditional CFG passes over 2 devices (1 or 2).
        ulysses: Ulysses sequence parallelism (all-to-all over attention heads).
        ring: Ring attention sequence parallelism (P2P over key/value blocks).
    """

    cfg: int = 1
    ulysses: int = 1
    ring: int = 1

    @property
    def world_size(self) -> int:
        return self.cfg * self.ulysses * self.ring

    def validate(self) -> None:
        for name in ("cfg", "ulysses", "ring"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v >= 1, f"parallel.{name}", v, "must be an integer >= 1")
        _check(self.cfg in (1, 2), "parallel.cfg", self.cfg, "must be 1 or 2")
        _check(self.world_size == 1, "parallel", dataclasses.asdict(self), "multi-device meshes are not available yet; use degree 1")


_COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class CompileConfig:
    """torch.compile of the transformer's repeated blocks (regional compilation).

    Attributes:
        mode: ``none`` (eager) or a torch.compile mode. Compiling once per block class
            keeps compile time low and composes with block caching.
        dynamic: let the compiled blocks accept new sequence lengths without recompiling.
    """

    mode: str = "none"
    dynamic: bool = False

    def validate(self) -> None:
        _check(self.mode in _COMPILE_MODES, "compile.mode", self.mode, f"must be one of {', '.join(_COMPILE_MODES)}")


# --------------------------------------------------------------------------- the whole config


@dataclass
class AccelConfig:
    """Every acceleration knob for one pipeline. The default is no acceleration at all."""

    cache: Any = field(default_factory=NoCache)
    sparse: SparseConfig = field(default_factory=SparseConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    compile: CompileConfig = field(default_factory=CompileConfig)

    def validate(self) -> "AccelConfig":
        for section in (self.cache, self.sparse, self.quant, self.parallel, self.compile):
            section.validate()
        return self

    @property
    def is_neutral(self) -> bool:
        return self == AccelConfig()

    # ---- dict / YAML
    def to_dict(self) -> dict[str, Any]:
        cache = {"method": self.cache.method, **dataclasses.asdict(self.cache)}
        return {
            "cache": cache,
            "sparse": dataclasses.asdict(self.sparse),
            "quant": dataclasses.asdict(self.quant),
            "parallel": dataclasses.asdict(self.parallel),
            "compile": dataclasses.asdict(self.compile),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "accel") -> "AccelConfig":
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping, got {data!r}")
        known = {"cache", "sparse", "quant", "parallel", "compile"}
        for key in data:
            if key not in known:
                raise ConfigError(f"{where}.{key}: unknown section (known: {', '.join(sorted(known))})")
        cfg = cls(
            cache=_cache_from_dict(data.get("cache"), f"{where}.cache"),
            sparse=_section(SparseConfig, data.get("sparse"), f"{where}.sparse"),
            quant=_section(QuantConfig, data.get("quant"), f"{where}.quant"),
            parallel=_section(ParallelConfig, data.get("parallel"), f"{where}.parallel"),
            compile=_section(CompileConfig, data.get("compile"), f"{where}.compile"),
        )
        return cfg.validate()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "AccelConfig":
        return cls.from_dict(yaml.safe_load(text))


def _check(ok: bool, name: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {value!r} {why}")


def _section(kind: type, data: Any, where: str):
    if data is None:
        return kind()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    names = {f.name for f in dataclasses.fields(kind)}
    for key in data:
        if key not in names and key != "method":
            raise ConfigError(f"{where}.{key}: unknown field (known: {', '.join(sorted(names)) or 'none'})")
    kwargs = {k: v for k, v in data.items() if k in names}
    for f in dataclasses.fields(kind):
        if f.name in kwargs:
            kwargs[f.name] = _coerce(kwargs[f.name], f, f"{where}.{f.name}")
    return kind(**kwargs)


def _coerce(value: Any, f: dataclasses.Field, where: str) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} must be true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {value!r} must be an integer")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {value!r} must be a number")
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {value!r} must be a string")
    return value


def _cache_from_dict(data: Any, where: str):
    if data is None:
        return NoCache()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    method = data.get("method", "none")
    if method not in _CACHE_METHODS:
        raise ConfigError(f"{where}.method: {method!r} is not a cache method (known: {', '.join(cache_methods())})")
    return _section(_CACHE_METHODS[method], data, where)
