"""Third-party extensions: modules named in ``MINDIESD_TUNE_PLUGINS`` and installed entry points.

A plugin is a module that registers what it adds (a denoiser spec, a method) when it is
imported. Two ways to have it imported, both lazily, by the registries' first lookup:

* ``MINDIESD_TUNE_PLUGINS=my_pkg.specs,my_pkg.methods``: comma-separated module paths. An
  environment variable, so worker processes the tuner spawns find the same plugins.
* an entry point of an installed distribution, in the group the registry asks for
  (``mindiesd_tune.specs`` for denoiser specs, ``mindiesd_tune.methods`` for methods), e.g. in the plugin's ``pyproject.toml``::

      [project.entry-points."mindiesd_tune.specs"]
      my_model = "my_pkg.specs"

  The entry point names a module (importing it registers) or a function called once
  with no arguments.

Loading is idempotent: each module is imported once and each group's entry points are
loaded once per process, however often ``load_plugins`` is called.
"""

from __future__ import annotations

import importlib
import logging
import os
from importlib.metadata import entry_points
from types import ModuleType

from .errors import UserError

logger = logging.getLogger(__name__)

ENV_VAR = "MINDIESD_TUNE_PLUGINS"
ENTRY_POINT_GROUPS = ("mindiesd_tune.specs", "mindiesd_tune.methods")

_loaded: set[str] = set()
_groups: set[str] = set()


class PluginError(UserError):
    """A module named in ``MINDIESD_TUNE_PLUGINS`` could not be imported."""


def plugin_modules() -> list[str]:
    """The module paths ``MINDIESD_TUNE_PLUGINS`` names now, in order."""
    return [m.strip() for m in os.environ.get(ENV_VAR, "").split(",") if m.strip()]


def load_plugins(group: str | None = None) -> None:
    """Import the modules of ``MINDIESD_TUNE_PLUGINS`` and load the entry points of ``group``
    (of every group in ``ENTRY_POINT_GROUPS`` when None).

    The variable is read at every call, so a module added to it later is imported then.
    A module that fails to import raises ``PluginError`` (the user named it); a broken
    entry point of some installed package is logged and skipped, so it cannot stop the tool.
    """
    for name in plugin_modules():
        if name in _loaded:
            continue
        try:
            importlib.import_module(name)
        except Exception as e:
            raise PluginError(f"{ENV_VAR}: cannot import {name!r} ({type(e).__name__}: {e})") from e
        _loaded.add(name)
    for g in ENTRY_POINT_GROUPS if group is None else (group,):
        if g not in _groups:
            _groups.add(g)
            _load_entry_points(g)


def _load_entry_points(group: str) -> None:
    for ep in entry_points(group=group):
        try:
            loaded = ep.load()
            if callable(loaded) and not isinstance(loaded, ModuleType):
                loaded()
        except Exception as e:
            logger.warning("plugin entry point %s = %s (group %s) failed to load: %s: %s",
                           ep.name, ep.value, group, type(e).__name__, e)


__all__ = ["ENTRY_POINT_GROUPS", "ENV_VAR", "PluginError", "load_plugins", "plugin_modules"]
