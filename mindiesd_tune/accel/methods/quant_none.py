"""quant: none, the only quantisation scheme so far (the section's neutral value)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .registry import Method, register_method


@dataclass
class QuantConfig:
    """Weight/activation quantisation. Only ``scheme: none`` exists so far."""

    scheme: ClassVar[str] = "none"

    def validate(self) -> None:
        pass


register_method(Method(section="quant", name="none", config=QuantConfig))
