"""What a worker hands back for one trial or one re-measurement: plain data that crosses a pipe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OK, PRUNED, FAILED, INTERRUPTED = "ok", "pruned", "failed", "interrupted"
KINDS = (OK, PRUNED, FAILED, INTERRUPTED)


@dataclass
class TrialOutcome:
    """One evaluation's outcome.

    Attributes:
        kind: ``ok`` (measured), ``pruned`` (stopped after an untimed look: ``result`` holds its
            metrics and sample, no latency), ``failed`` (an error, NaN output, a dead process) or
            ``interrupted`` (a second Ctrl-C: the point runs again).
        reason: why it was pruned, failed or interrupted; empty when ``ok``.
        result: the evaluator's message (``TrialResult.to_message()``) for ``ok`` and ``pruned``,
            the comparison (``Comparison.as_dict()``) for a re-measurement; empty otherwise.
    """

    kind: str
    reason: str = ""
    result: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown outcome kind {self.kind!r} (known: {', '.join(KINDS)})")

    @property
    def ok(self) -> bool:
        return self.kind == OK

    @classmethod
    def failed(cls, reason: str) -> "TrialOutcome":
        return cls(FAILED, reason)

    @classmethod
    def interrupted(cls, reason: str) -> "TrialOutcome":
        return cls(INTERRUPTED, reason)
