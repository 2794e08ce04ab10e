"""The one protocol every evaluator worker serves: in this process (``worker.InProcessWorker``),
in a child process (``worker.ProcessWorker``) and across a group of rank processes
(``rankgroup.RankGroupWorker``). The search, the confirmation and the held-out check talk to a
worker only through these methods, each answering a ``TrialOutcome`` (never raising for a
trial's own failure)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .outcome import TrialOutcome


@runtime_checkable
class Worker(Protocol):
    """What a study asks of a worker. ``screens``: whether ``evaluate(stage="screen")`` is the
    cheap first look (``Evaluator.screen``); a worker without one times every trial in full."""

    @property
    def screens(self) -> bool: ...

    def start(self) -> dict:
        """Build the evaluator (load the model, compute the baseline) -> what it found (``info``)."""
        ...

    def evaluate(self, config_dict: dict, constraints_spec: dict | None = None, margin: float | None = None,
                 stage: str = "full", rounds: int | None = None) -> TrialOutcome:
        """One trial: a screen or a full evaluation (``rounds``: the plan's, for the unaccelerated point)."""
        ...

    def confirm(self, config_dict: dict, repeats: int, precision: float | None = None,
                max_s: float | None = None, prior_ratios: list[float] | None = None) -> TrialOutcome:
        """A point re-measured against the baseline on every prompt."""
        ...

    def versus(self, reference_dict: dict, config_dict: dict, repeats: int, precision: float | None = None,
               max_s: float | None = None) -> TrialOutcome:
        """A point timed head to head against another."""
        ...

    def heldout(self, config_dict: dict) -> TrialOutcome:
        """A point's quality on the held-out prompts."""
        ...

    def abort(self) -> None:
        """Stop the running call at once (safe from a signal handler)."""
        ...

    def close(self) -> None:
        """Release the evaluator and its processes."""
        ...
