"""cache: none, every block computed at every step (the cache section's neutral value)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..registry import Method, register_method


@dataclass
class NoCache:
    """No caching: every block is computed at every step."""

    method: ClassVar[str] = "none"

    def validate(self) -> None:
        pass


register_method(Method(section="cache", name="none", config=NoCache, applies=lambda ctx: True))
