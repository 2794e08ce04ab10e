"""The plan phase: what the budget buys, and when each phase must end for the outputs to be on
disk within it.

The budget is wall clock from the end of model loading to the outputs on disk: the baseline,
the search, the confirmation and the outputs all come out of it. After the baseline the plan
knows what one model call costs; from that it prices a screened trial, a trial timed in full and
a confirmation round, splits the budget into the phases' shares, and says how many trials the
search's share buys. The costs are estimates until trials have run: each phase's observed
costs replace them as they come in, so the search stops when the next trial would not end in
time rather than when its deadline has already passed.

Pure arithmetic on numbers and a clock: no torch, no Optuna.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

# The confirmation's planned share of the budget (every candidate's first pass, the pick's top-up
# to the precision, the pick against the best preset); at least one first pass of the best point
# where the budget allows, at most MAX_CONFIRM_SHARE. Beside a CPU-bound process on 2 cores a
# ±10% interval of demo-flux took 24 to 42 interleaved rounds; the share ends the phase either
# way, with the rounds it got. The share is held back only once the search has found a point to
# confirm: until then there is nothing it could buy, and the search may use it.
CONFIRM_SHARE = 0.2
MAX_CONFIRM_SHARE = 0.3
# Writing profile.yaml, trials.csv and report.html (plotly figures, the samples): kept back
# from the budget, this share of it, within these bounds.
OUTPUT_SHARE = 0.02
OUTPUT_MIN_S, OUTPUT_MAX_S = 3.0, 30.0
# Fewer screened trials than this is too few for a useful study: the presets alone are about a
# dozen, and the sampler and the refinements need room after them.
USEFUL_TRIALS = 20
# Until trials have run, the share of screened trials assumed to go on to full timing.
PROMOTED_SHARE = 0.3
# The unaccelerated trial (the baseline timed against itself, the study's check on its own timing
# noise) takes at most this share of the search when it cannot have its full rounds, and never
# fewer than MIN_NEUTRAL_ROUNDS (with two, the noise falls back to screen.DEFAULT_LOG_SD).
NEUTRAL_SHARE = 0.1
MIN_NEUTRAL_ROUNDS, MAX_NEUTRAL_ROUNDS = 2, 6
# A budget with no time limit (a trial count) still runs a confirmation of this share of the
# search's own time, at least this long.
UNTIMED_CONFIRM_SHARE = 0.5
UNTIMED_CONFIRM_MIN_S = 60.0


@dataclass(frozen=True)
class Costs:
    """What the phases cost, in seconds, from the time of one baseline call on one prompt."""

    call_s: float
    prompts: int
    warmup: int = 1
    repeats: int = 4  # a full trial's interleaved rounds (already balanced)
    confirm_repeats: int = 6  # a confirmation's first-pass rounds per prompt
    screening: bool = True

    @property
    def screen_s(self) -> float:
        """One untimed call on the first prompt and one interleaved timing pair."""
        return 3 * self.call_s if self.screening else 0.0

    @property
    def full_s(self) -> float:
        """The rest of a full trial: the timed rounds on the first prompt and one call on each other
        prompt. After a screen its look warmed the point and its timing pair is the first round;
        without one, the untimed look and the warm-up pairs come first."""
        if self.screening:
            return self.call_s * (2 * (self.repeats - 1) + self.prompts - 1)
        return self.call_s * (1 + 2 * self.warmup + 2 * self.repeats + self.prompts - 1)

    @property
    def round_s(self) -> float:
        """One confirmation round: the baseline and the candidate on one prompt."""
        return 2 * self.call_s

    @property
    def confirm_pass_s(self) -> float:
        return self.prompts * (2 * self.warmup + 2 * self.confirm_repeats) * self.call_s


@dataclass
class Plan:
    """The budget split into phases, against a monotonic clock whose zero is the end of loading.

    ``start`` is the clock reading at the end of model loading; every deadline counts from it.
    """

    costs: Costs
    start: float
    budget_s: float | None
    clock: Callable[[], float] = time.monotonic
    observed: dict[str, list[float]] = field(default_factory=lambda: {"screen": [], "full": []})
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        b = self.budget_s
        if b is None:
            self.output_s = self.confirm_s = 0.0
            return
        self.output_s = min(OUTPUT_MAX_S, max(OUTPUT_MIN_S, OUTPUT_SHARE * b))
        self.confirm_s = min(MAX_CONFIRM_SHARE * b, max(CONFIRM_SHARE * b, self.costs.confirm_pass_s))

    # -- deadlines ---------------------------------------------------------------------------
    @property
    def end(self) -> float | None:
        """When the outputs must be on disk."""
        return None if self.budget_s is None else self.start + self.budget_s

    @property
    def search_end(self) -> float | None:
        """When the search must end once it has a point to confirm (the planned share)."""
        return None if self.end is None else self.end - self.output_s - self.confirm_s

    def search_left(self, hold_confirmation: bool = True) -> float | None:
        """Seconds the search has from now; without ``hold_confirmation`` (nothing to confirm yet)
        the confirmation's share is the search's too."""
        if self.end is None:
            return None
        end = self.search_end if hold_confirmation else self.end - self.output_s
        return end - self.clock()

    def confirm_left(self, search_seconds: float = 0.0) -> float | None:
        """Seconds the confirmation may take from now: what is left before the outputs' share (all
        of the search's unused time too). Without a time budget, a share of the search's time."""
        if self.end is None:
            return max(UNTIMED_CONFIRM_MIN_S, UNTIMED_CONFIRM_SHARE * search_seconds)
        return max(0.0, self.end - self.output_s - self.clock())

    # -- what the next step costs ----------------------------------------------------------------
    def record(self, phase: str, seconds: float) -> None:
        with self.lock:
            self.observed.setdefault(phase, []).append(seconds)

    def expected(self, phase: str) -> float:
        """A step's cost: the median of those observed (the last few: a compiled trial or a busy
        minute passes), or the estimate from the call time before any ran."""
        with self.lock:
            seen = self.observed.get(phase) or []
        if seen:
            return statistics.median(seen[-9:])
        return self.costs.screen_s if phase == "screen" else self.costs.full_s

    def promoted_share(self) -> float:
        with self.lock:
            screened, full = len(self.observed.get("screen", [])), len(self.observed.get("full", []))
        return PROMOTED_SHARE if screened < 5 else min(1.0, full / screened)

    def trial_s(self) -> float:
        """A trial's expected cost: its screen and, for the share promoted, its full timing."""
        if not self.costs.screening:
            return self.expected("full")
        return self.expected("screen") + self.promoted_share() * self.expected("full")

    def room_for(self, phase: str, hold_confirmation: bool = True) -> bool:
        """Whether a step of ``phase`` ('trial', 'screen' or 'full') started now ends within the
        search's share; ``hold_confirmation=False`` when the search has found nothing to confirm
        yet (a point it finds in the confirmation's share is confirmed in what is left of it)."""
        left = self.search_left(hold_confirmation)
        if left is None:
            return True
        need = self.trial_s() if phase == "trial" else self.expected(phase)
        return left > 0 and left >= need

    def last_full(self, hold_confirmation: bool = True) -> bool:
        """Whether a full timing still fits in the search's share but a screen and a full timing
        after it do not: the search's last chance to time a point in full."""
        left = self.search_left(hold_confirmation)
        if left is None:
            return False
        return self.expected("full") <= left < self.expected("screen") + self.expected("full")

    def neutral_rounds(self) -> int:
        """Interleaved rounds of the unaccelerated trial: its full MAX_NEUTRAL_ROUNDS where they
        take at most NEUTRAL_SHARE of the search, fewer (even, at least MIN_NEUTRAL_ROUNDS) where
        the budget is tight."""
        if self.search_end is None:
            return MAX_NEUTRAL_ROUNDS
        fit = int(NEUTRAL_SHARE * (self.search_end - self.start) // max(self.costs.round_s, 1e-9))
        fit -= fit % 2
        return max(MIN_NEUTRAL_ROUNDS, min(MAX_NEUTRAL_ROUNDS, fit))

    # -- the plan line ----------------------------------------------------------------------------
    def trials_bought(self, elapsed: float = 0.0) -> int:
        if self.search_end is None:
            return 0
        room = self.search_end - self.start - elapsed
        return max(0, int(room // max(self.trial_s(), 1e-9)))

    def budget_for(self, trials: int, elapsed: float = 0.0) -> float:
        """The smallest budget whose search share buys ``trials`` trials at today's costs."""
        c = self.costs
        search = trials * self.trial_s() + elapsed
        # the search share is what is left after the confirmation's and the outputs' shares
        b = (search + OUTPUT_MIN_S) / (1 - CONFIRM_SHARE - OUTPUT_SHARE)
        b = max(b, search + 2 * c.confirm_pass_s + OUTPUT_MIN_S)
        return _nice(b)

    def lines(self, elapsed: float = 0.0) -> list[str]:
        """What one call, one screened trial and one confirmation round cost, and what the budget
        buys; a warning with the budget that would do when it buys too few."""
        c = self.costs
        unit = "screened" if c.screening else "full"
        cost = (f"one call {_secs(c.call_s)}; a screened trial ~{_secs(c.screen_s)}, timed in full ~{_secs(c.full_s)} more;"
                if c.screening else f"one call {_secs(c.call_s)}; a trial timed in full ~{_secs(c.full_s)};")
        out = [f"plan:      {cost} a confirmation round ~{_secs(c.round_s)}"]
        if self.budget_s is None:
            return out
        n = self.trials_bought(elapsed)
        rounds = int(self.confirm_s // max(c.round_s, 1e-9))
        search = self.search_end - self.start - elapsed
        confirm = f"~{rounds} confirmation rounds in {_secs(self.confirm_s)}, {_secs(self.output_s)} for the outputs"
        if search <= 0:
            out.append(f"           the budget leaves no time to search after the baseline ({_secs(elapsed)}); {confirm}")
        else:
            out.append(f"           the budget buys ~{n} {unit} trials in {_secs(search)} of search, {confirm}")
        if n < USEFUL_TRIALS:
            out.append(f"           too few for a useful study: {USEFUL_TRIALS} {unit} trials need about "
                       f"--budget {_budget_text(self.budget_for(USEFUL_TRIALS, elapsed))}")
        return out


def _nice(seconds: float) -> float:
    """Rounded up to a budget a person would type: whole minutes, or 5-minute steps past 20 min."""
    minutes = math.ceil(seconds / 60)
    if minutes > 20:
        minutes = 5 * math.ceil(minutes / 5)
    return 60.0 * max(1, minutes)


def _budget_text(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes / 60:g}h" if minutes >= 120 and minutes % 60 == 0 else f"{minutes:g}m"


def _secs(s: float) -> str:
    if s < 10:
        return f"{s:.1f} s"
    if s < 120:
        return f"{s:.0f} s"
    return f"{s / 60:.1f} min"
