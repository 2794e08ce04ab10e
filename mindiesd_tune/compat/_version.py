"""What the compatibility modules share: the version comparison and the one-line refusal."""

from __future__ import annotations

import importlib
import re
from typing import Any


class CompatError(RuntimeError):
    """A private name of an outside library is gone; the message names it and the installed version."""


def _parts(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])


def at_least(version: str, wanted: str) -> bool:
    """Whether ``version`` (``0.42.1``, ``0.18.0+cu130``) is ``wanted`` (``0.42``) or later."""
    return _parts(version) >= _parts(wanted)


def lookup(library: str, version: str, tested: str, module: str, path: str, use: str) -> Any:
    """``module``'s attribute ``path`` (dotted: ``Class.attr``), or CompatError naming it."""
    try:
        value: Any = importlib.import_module(module)
    except ImportError:
        value = None
    for name in path.split("."):
        value = getattr(value, name, None) if value is not None else None
    if value is None and not _declared(module, path):
        why = f", which mindiesd-tune uses for {use}" if use else ""
        raise CompatError(f"{library} {version}: {module}.{path} is gone{why} (written against {library} {tested})")
    return value


def _declared(module: str, path: str) -> bool:
    # a class attribute whose default is None (ModelMixin._tp_plan) is there all the same
    try:
        owner: Any = importlib.import_module(module)
    except ImportError:
        return False
    *head, last = path.split(".")
    for name in head:
        owner = getattr(owner, name, None)
        if owner is None:
            return False
    return hasattr(owner, last)
