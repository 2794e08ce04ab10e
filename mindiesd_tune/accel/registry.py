"""The method registry: every acceleration method is one ``Method`` entry in one ``Section``.

A section is one key of an ``AccelConfig`` (``cache``, ``steps``, ``sparse``, ``quant``,
``parallel``, ``compile``). A section either chooses among methods by a selector key
(``cache: {method: first_block, ...}``) or holds exactly one entry (``steps``, ``compile``).
An entry is everything the library knows about one method: its config dataclass, its
installer, its search-space entry, its presets, how ``show`` prints it, its install order
and the entries it conflicts with. Entries are registered where they are defined
(``register_method``), so adding a method is adding one module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterator


@dataclass(frozen=True)
class Knob:
    """The one trial parameter of a method that trades quality for speed (its aggressiveness).

    A study's front refinement (``tuner.refine``) moves a good point along it: bolder after a
    feasible best, safer after a floor miss, in notches of the parameter's own distribution.

    Attributes:
        param: the trial parameter (``cache.threshold``); the method's ``suggest`` asks for it.
        bolder: +1 when a larger value is faster and less faithful, -1 when a smaller one is.
        off: a value that switches the method off rather than lying on the line (the steps
            section's 0: the workload's own step count); a line never moves to or from it.
    """

    param: str
    bolder: int
    off: Any = None

    def __post_init__(self) -> None:
        if self.bolder not in (1, -1):
            raise ValueError(f"Knob({self.param!r}): bolder must be +1 or -1, not {self.bolder!r}")


@dataclass(frozen=True)
class Section:
    """One key of an AccelConfig.

    Attributes:
        name: the key (``cache``).
        key: the selector field (``method``, ``scheme``); None when the section has one entry.
        default: the entry a config without this section gets (its neutral value is the
            section's neutral value).
        order: sections are written in this order, and their entries installed in it unless
            an entry declares its own.
        doc: one line for the docs and error messages.
    """

    name: str
    key: str | None
    default: str
    order: int
    doc: str = ""


@dataclass(frozen=True)
class Method:
    """One acceleration method.

    Attributes:
        section: the section it belongs to.
        name: its selector value (``first_block``); for a one-entry section, the entry's name.
        config: its config dataclass (documented fields, ``validate()``; defaults neutral
            where the method has a neutral setting).
        install: ``install(model, cfg, handle) -> undo``: puts the method on ``model`` (the
            denoiser; ``handle.pipe`` is the pipeline or None) and returns the function that
            takes it off. None: nothing to install (a neutral entry).
        suggest: ``suggest(trial, ctx) -> {"section.field": value}``, the parameters a study
            samples for this method beside its selector (``ctx`` is a ``SpaceContext``).
            None: the method is not searched.
        applies: ``applies(ctx) -> bool``: whether a study on this model and workload offers
            the method (it can install and can skip work there).
        presets: known-good parameter sets (``{"section.field": value}``, selector included)
            a study tries right after the baseline, given the context.
        neutral: the config that changes nothing (the baseline output, bit for bit).
        example: a non-neutral config, for the combination tests and the docs.
        show: ``show(cfg) -> str``, the one-line summary ``mindiesd-tune show`` prints.
        order: install order within a config (lower first; removal runs in reverse); None:
            its section's order.
        conflicts: entries (``section.name`` or a whole ``section``) it cannot be combined with.
        call_overrides: ``call_overrides(cfg) -> dict`` of generation settings a profile with
            this method must be called with (the steps section's step count).
        knob: the ``Knob`` naming the parameter (one ``suggest`` asks for) that makes the
            method faster and less faithful, and which way; a study refines its best points
            along it. None: no single parameter does (quantisation, a mesh).
        hook: what the section's shared hooks call for this entry, so that they dispatch
            through the registry rather than on config classes: a sparse method's grid
            attention ``hook(attend, q, k, v, dense_kv, layout) -> out`` (None: dense), a
            quantisation scheme's ``hook(cfg) -> torchao config`` (None: nothing quantised).
            Imported by the entry, called only once the method is installed.
    """

    section: str
    name: str
    config: type
    install: Callable[[Any, Any, Any], Callable[[], None]] | None = None
    suggest: Callable[[Any, Any], dict[str, Any]] | None = None
    applies: Callable[[Any], bool] = lambda ctx: True
    presets: Callable[[Any], list[dict[str, Any]]] = lambda ctx: []
    neutral: Any = None
    example: Any = None
    show: Callable[[Any], str] | None = None
    order: int | None = None
    conflicts: tuple[str, ...] = ()
    call_overrides: Callable[[Any], dict[str, Any]] = lambda cfg: {}
    knob: Knob | None = None
    hook: Callable[..., Any] | None = None

    @property
    def install_order(self) -> int:
        return section(self.section).order if self.order is None else self.order

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    def describe(self, cfg) -> str:
        """The one-line ``show`` text of ``cfg`` (a config of this method)."""
        if self.show is not None:
            return self.show(cfg)
        key = section(self.section).key
        return field_text(cfg, head=self.name if key else None, skip=key)

    def conflicts_with(self, other: "Method") -> bool:
        return bool({other.key, other.section} & set(self.conflicts)) or bool({self.key, self.section} & set(other.conflicts))


_SECTIONS: dict[str, Section] = {}
_METHODS: dict[str, dict[str, Method]] = {}
_BY_CONFIG: dict[type, Method] = {}


def register_section(sec: Section) -> Section:
    _SECTIONS[sec.name] = sec
    _METHODS.setdefault(sec.name, {})
    return sec


def register_method(method: Method) -> Method:
    """Add ``method`` to its section; a method registered again under its name replaces the old one."""
    if method.section not in _SECTIONS:
        raise ValueError(f"{method.key}: no section {method.section!r} (known: {', '.join(_SECTIONS)})")
    if section(method.section).key is not None and getattr(method.config, section(method.section).key, None) != method.name:
        raise ValueError(f"{method.key}: {method.config.__name__}.{section(method.section).key} must be {method.name!r}")
    old = _METHODS[method.section].get(method.name)
    if old is not None:
        _BY_CONFIG.pop(old.config, None)
    if method.neutral is None:
        method = dataclasses.replace(method, neutral=method.config())
    _METHODS[method.section][method.name] = method
    _BY_CONFIG[method.config] = method
    return method


def unregister_method(section_name: str, name: str) -> None:
    """Take an entry out (a plugin unloaded, a test cleaning up); a section left empty goes too."""
    method = _METHODS[section_name].pop(name)
    _BY_CONFIG.pop(method.config, None)
    if not _METHODS[section_name]:
        del _METHODS[section_name], _SECTIONS[section_name]


def section(name: str) -> Section:
    return _SECTIONS[name]


def sections() -> list[Section]:
    """Every section, in the order configs are written."""
    return sorted(_SECTIONS.values(), key=lambda s: s.order)


def get_method(section_name: str, name: str) -> Method:
    """The entry ``name`` of ``section_name``; KeyError when there is none."""
    return _METHODS[section_name][name]


def methods(section_name: str | None = None) -> Iterator[Method]:
    """Every registered entry (of one section), sections in order, entries by name."""
    for sec in sections():
        if section_name is None or sec.name == section_name:
            yield from (_METHODS[sec.name][n] for n in sorted(_METHODS[sec.name]))


def method_names(section_name: str) -> list[str]:
    return sorted(_METHODS[section_name])


def method_of(cfg) -> Method:
    """The entry whose config class ``cfg`` is."""
    try:
        return _BY_CONFIG[type(cfg)]
    except KeyError:
        raise TypeError(f"{type(cfg).__name__} is not a registered method config") from None


def field_text(cfg, head: str | None = None, skip: str | None = None) -> str:
    """``head: field=value, ...`` of a config (field ``skip`` left out; floats to 4 digits)."""
    rest = ", ".join(f"{f.name}={_fmt(getattr(cfg, f.name))}" for f in dataclasses.fields(cfg) if f.name != skip)
    return f"{head}: {rest}" if head and rest else (head or rest)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


__all__ = [
    "Knob",
    "Method",
    "Section",
    "field_text",
    "get_method",
    "method_names",
    "method_of",
    "methods",
    "register_method",
    "register_section",
    "section",
    "sections",
    "unregister_method",
]
