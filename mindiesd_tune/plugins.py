"""Third-party methods and model specs: modules that register themselves when imported.

A plugin is a module that calls ``register_method`` (``accel.methods``) or registers a model
spec at import. It is found through an entry point of the groups ``mindiesd_tune.methods``
or ``mindiesd_tune.specs`` (``[project.entry-points."mindiesd_tune.methods"]`` in its
``pyproject.toml``) or named in ``MINDIESD_TUNE_PLUGINS`` (comma-separated module paths).
The environment variable reaches spawned trial workers too, so a study finds the plugin in
every process.
"""

from __future__ import annotations

import importlib
import logging
import os
from importlib.metadata import entry_points

from .errors import UserError

log = logging.getLogger(__name__)

ENV_VAR = "MINDIESD_TUNE_PLUGINS"
ENTRY_POINT_GROUPS = ("mindiesd_tune.specs", "mindiesd_tune.methods")

_loaded: set[str] = set()
_entry_points_done = False


class PluginError(UserError):
    """A plugin module could not be imported; the message names it and where it was named."""


def load_plugins() -> list[str]:
    """Import every plugin not imported yet -> the module paths imported by this call.

    Cheap to call again: entry points are read once, the environment variable each time (a
    module named there later is imported then).
    """
    global _entry_points_done
    found: list[tuple[str, str, object]] = []
    if not _entry_points_done:
        _entry_points_done = True
        for group in ENTRY_POINT_GROUPS:
            for ep in entry_points(group=group):
                found.append((ep.value, f"entry point {ep.name!r} of {group}", ep))
    for name in os.environ.get(ENV_VAR, "").split(","):
        if name.strip():
            found.append((name.strip(), ENV_VAR, None))
    done = []
    for name, where, ep in found:
        if name in _loaded:
            continue
        _loaded.add(name)
        try:
            ep.load() if ep is not None else importlib.import_module(name)
        except Exception as e:  # noqa: BLE001  (any failure of a third-party module is reported as its own)
            _loaded.discard(name)
            raise PluginError(f"plugin {name} ({where}) failed to import: {type(e).__name__}: {e}") from e
        log.debug("loaded plugin %s (%s)", name, where)
        done.append(name)
    return done


__all__ = ["ENTRY_POINT_GROUPS", "ENV_VAR", "PluginError", "load_plugins"]
