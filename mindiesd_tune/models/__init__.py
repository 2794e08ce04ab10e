"""Model registry: ``load(name_or_path, device=..., dtype=...)`` -> LoadedModel (pipeline + family)."""

from . import demo as _demo  # noqa: F401  (registers the built-in models)
from .registry import (
    VIDEO_FAMILIES,
    Builtin,
    BuiltinScorer,
    LoadedModel,
    builtin_names,
    builtin_scorers,
    builtins,
    check,
    family_of,
    load,
    register_builtin,
    register_scorer,
)

__all__ = [
    "VIDEO_FAMILIES",
    "Builtin",
    "BuiltinScorer",
    "LoadedModel",
    "builtin_names",
    "builtin_scorers",
    "builtins",
    "check",
    "family_of",
    "load",
    "register_builtin",
    "register_scorer",
]
