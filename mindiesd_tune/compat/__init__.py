"""One module per outside library whose private API the package reaches: ``compat.diffusers``,
``compat.torchao``. Each checks the library's version when imported and names a missing name
in one line (``CompatError``); ``missing()`` lists what the installed release lacks.

The submodules import their library, so they are imported where a method needs them, never
from here.
"""

from ._version import CompatError

__all__ = ["CompatError"]
