"""AccelConfig: the declarative description of every acceleration knob, with YAML round-trip.

The sections and the methods in them come from the method registry (``accel.registry``,
filled by the method modules in ``accel.methods``):
each method's module holds its config dataclass, documented in terms of speed and quality.
This module holds what every section shares: the error type, field checks and coercion,
and the whole config with its dict/YAML form. Sections that choose among methods
(``cache``, ``sparse``, ``quant``) are tagged unions whose selector (``method``, ``scheme``)
picks the dataclass. A section left out means "off"; unknown keys are an error.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from ..plugins import load_plugins
from . import registry


class ConfigError(ValueError):
    """A config field has a bad name or value. The message names the field."""


class ConflictError(ConfigError):
    """Two methods that cannot be combined were configured together. The message names both."""


def check(ok: bool, name: str, value: Any, why: str) -> None:
    """Raise ConfigError naming ``name`` and ``value`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{name}: {value!r} {why}")


def check_steps(prefix: str, step_start: int, step_end: int, step_interval: int) -> None:
    check(step_start >= 0, f"{prefix}.step_start", step_start, "must be >= 0")
    check(step_end == -1 or step_end > step_start, f"{prefix}.step_end", step_end, "must be -1 (the last step) or > step_start")
    check(step_interval >= 1, f"{prefix}.step_interval", step_interval, "must be >= 1")


def check_blocks(prefix: str, block_start: int, block_end: int, lowest_start: int = 0) -> None:
    check(block_start >= lowest_start, f"{prefix}.block_start", block_start, f"must be >= {lowest_start}")
    check(block_end == -1 or block_end > block_start, f"{prefix}.block_end", block_end, "must be -1 (the last block) or > block_start")


def _registry():
    # The built-in entries are registered when the accel package imports accel.methods, which
    # sits above this module (the method modules import the checks here). Plugins load first,
    # so a section of a third-party method reads like a built-in one.
    load_plugins()
    return registry


class AccelConfig:
    """Every acceleration knob for one pipeline: one config per registered section.

    ``AccelConfig(cache=FirstBlockCacheConfig(threshold=0.1))``; a section not given is its
    neutral value, so the default is no acceleration at all. Sections read as attributes
    (``cfg.cache``, ``cfg.steps``).
    """

    def __init__(self, **sections: Any):
        reg = _registry()
        known = [s.name for s in reg.sections()]
        for name in sections:
            if name not in known:
                raise TypeError(f"AccelConfig: unknown section {name!r} (known: {', '.join(known)})")
        values = {}
        for sec in reg.sections():
            value = sections.get(sec.name)
            # a copy of the neutral value: sections are mutable dataclasses, the registry's is shared
            values[sec.name] = dataclasses.replace(reg.get_method(sec.name, sec.default).neutral) if value is None else value
        object.__setattr__(self, "_sections", values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_sections"][name]
        except KeyError:
            raise AttributeError(f"AccelConfig has no section {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._sections:
            raise AttributeError(f"AccelConfig has no section {name!r}")
        self._sections[name] = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AccelConfig) and self._sections == other._sections

    __hash__ = None

    def __repr__(self) -> str:
        return "AccelConfig(" + ", ".join(f"{k}={v!r}" for k, v in self._sections.items()) + ")"

    def items(self) -> list[tuple[str, Any]]:
        """(section name, section config) in the registry's section order."""
        return list(self._sections.items())

    def entries(self) -> list[tuple[Any, Any]]:
        """(Method entry, config) of every section, in install order."""
        reg = _registry()
        pairs = [(reg.method_of(cfg), cfg) for _, cfg in self.items()]
        order = {s.name: s.order for s in reg.sections()}
        return sorted(pairs, key=lambda p: (p[0].install_order, order[p[0].section]))

    def validate(self) -> "AccelConfig":
        reg = _registry()
        for name, cfg in self.items():
            try:
                entry = reg.method_of(cfg)
            except TypeError as e:
                raise ConfigError(f"{name}: {e}") from None
            if entry.section != name:
                raise ConfigError(f"{name}: {type(cfg).__name__} belongs in section {entry.section!r}")
            cfg.validate()
        active = [(m, c) for m, c in self.entries() if c != reg.get_method(m.section, reg.section(m.section).default).neutral]
        for i, (a, _) in enumerate(active):
            for b, _ in active[i + 1:]:
                if a.conflicts_with(b):
                    raise ConflictError(f"{a.key} cannot be combined with {b.key}")
        return self

    @property
    def is_neutral(self) -> bool:
        return self == AccelConfig()

    def call_overrides(self) -> dict[str, Any]:
        """Generation settings this config was chosen with (``steps``' step count)."""
        out: dict[str, Any] = {}
        for entry, cfg in self.entries():
            out.update(entry.call_overrides(cfg))
        return out

    def summary(self) -> list[tuple[str, str]]:
        """(section, one-line text) for every section; a neutral section reads "off"."""
        reg = _registry()
        out = []
        for name, cfg in self.items():
            neutral = reg.get_method(name, reg.section(name).default).neutral
            out.append((name, "off" if cfg == neutral else reg.method_of(cfg).describe(cfg)))
        return out

    def identity(self) -> str:
        """What the config does, as a canonical string: ``to_dict`` without the fields a
        method's config only records (its ``records`` class attribute, such as the budget a
        schedule's stored mask was chosen for). Two configs with one identity install the
        same acceleration, so the tuner measures it once."""
        import json

        full = self.to_dict()
        out = {}
        for name, cfg in self.items():
            drop = set(getattr(type(cfg), "records", ()))
            out[name] = {k: v for k, v in full[name].items() if k not in drop}
        return json.dumps(out, sort_keys=True, default=str)

    # ---- dict / YAML
    def to_dict(self) -> dict[str, Any]:
        reg = _registry()
        out = {}
        for name, cfg in self.items():
            key = reg.section(name).key
            out[name] = ({key: getattr(cfg, key)} if key else {}) | _plain(dataclasses.asdict(cfg))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "accel") -> "AccelConfig":
        reg = _registry()
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping, got {data!r}")
        known = [s.name for s in reg.sections()]
        for key in data:
            if key not in known:
                raise ConfigError(f"{where}.{key}: unknown section (known: {', '.join(sorted(known))})")
        return cls(**{name: section_from_dict(name, data.get(name), f"{where}.{name}") for name in known}).validate()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "AccelConfig":
        return cls.from_dict(yaml.safe_load(text))


def _plain(value: Any) -> Any:
    # YAML's safe dumper writes lists, not tuples (``quant.components``)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def section_from_dict(name: str, data: Any, where: str | None = None):
    """One section's mapping -> the config of the entry its selector names (its default without one)."""
    reg = _registry()
    where = where or name
    sec = reg.section(name)
    if data is None:
        return dataclasses.replace(reg.get_method(name, sec.default).neutral)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    entry_name = data.get(sec.key, sec.default) if sec.key else sec.default
    try:
        entry = reg.get_method(name, entry_name)
    except (KeyError, TypeError):
        choices = ", ".join(reg.method_names(name))
        raise ConfigError(f"{where}.{sec.key}: {entry_name!r} is not a {name} {sec.key} (known: {choices})") from None
    return _fields(entry.config, {k: v for k, v in data.items() if k != sec.key}, where)


def _fields(kind: type, data: dict, where: str):
    names = {f.name for f in dataclasses.fields(kind)}
    for key in data:
        if key not in names:
            raise ConfigError(f"{where}.{key}: unknown field (known: {', '.join(sorted(names)) or 'none'})")
    kwargs = dict(data)
    for f in dataclasses.fields(kind):
        if f.name in kwargs:
            kwargs[f.name] = coerce(kwargs[f.name], f, f"{where}.{f.name}")
    return kind(**kwargs)


def coerce(value: Any, f: dataclasses.Field, where: str) -> Any:
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


__all__ = ["AccelConfig", "ConfigError", "ConflictError", "check", "check_blocks", "check_steps", "coerce", "section_from_dict"]
