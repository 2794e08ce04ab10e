"""Parse a study budget: a time (``90s``, ``30m``, ``2h``), a trial count (``40t``) or both."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UserError

_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smht])\s*$")


@dataclass(frozen=True)
class Budget:
    """Whichever limit is reached first ends the study; ``None`` means no limit of that kind."""

    seconds: float | None = None
    trials: int | None = None

    def __str__(self) -> str:
        parts = []
        if self.seconds is not None:
            parts.append(f"{self.seconds:g}s")
        if self.trials is not None:
            parts.append(f"{self.trials}t")
        return "+".join(parts) or "unlimited"


def parse_budget(text: str) -> Budget:
    """``"90s"``, ``"30m"``, ``"2h"``, ``"40t"`` or a combination such as ``"30m+40t"``."""
    if not isinstance(text, str) or not text.strip():
        raise UserError("budget is empty: give a time (90s, 30m, 2h) or a trial count (40t)")
    seconds: float | None = None
    trials: int | None = None
    for part in re.split(r"[+,]", text):
        m = _PART.match(part)
        if not m:
            raise UserError(
                f"bad budget {text!r}: use a time (90s, 30m, 2h), a trial count (40t) or both (30m+40t)"
            )
        value, unit = float(m.group(1)), m.group(2)
        if value <= 0:
            raise UserError(f"bad budget {text!r}: it must be positive")
        if unit == "t":
            if value != int(value) or trials is not None:
                raise UserError(f"bad budget {text!r}: give one whole trial count")
            trials = int(value)
        else:
            if seconds is not None:
                raise UserError(f"bad budget {text!r}: give one time limit")
            seconds = value * _UNIT_SECONDS[unit]
    return Budget(seconds=seconds, trials=trials)
