"""Every use of torchao's private API, in one place: the int4 packing format, which torchao
0.18 publishes only under its private ``quantize_`` package.

A release that moves it fails here with one line naming the name and the installed version;
``missing()`` lists what is gone (tests/test_compat.py). An older torchao is refused on import.
"""

from __future__ import annotations

import torchao

from ._version import CompatError, at_least, lookup

TESTED = "0.18"  # pyproject's lower bound for the ``quant`` extra

if not at_least(torchao.__version__, TESTED):
    raise ImportError(f"torchao {torchao.__version__} is older than {TESTED}, which mindiesd-tune's quant schemes need")

_INT4 = "torchao.quantization.quantize_.workflows.int4.int4_packing_format"
NAMES: tuple[tuple[str, str], ...] = ((_INT4, "Int4PackingFormat.TILE_PACKED_TO_4D"),)


def missing() -> list[str]:
    """The private names of ``NAMES`` the installed torchao lacks."""
    out = []
    for module, path in NAMES:
        try:
            lookup("torchao", torchao.__version__, TESTED, module, path, "")
        except CompatError:
            out.append(f"{module}.{path}")
    return out


def int4_tile_packed_to_4d():
    """The int4 packing of CUDA's tinygemm kernel (``Int4PackingFormat.TILE_PACKED_TO_4D``)."""
    return lookup("torchao", torchao.__version__, TESTED, _INT4, "Int4PackingFormat.TILE_PACKED_TO_4D", "quant.scheme w4a16")


__all__ = ["NAMES", "TESTED", "CompatError", "int4_tile_packed_to_4d", "missing"]
