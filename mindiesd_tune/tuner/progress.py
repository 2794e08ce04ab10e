"""Study progress: a rich bar on a terminal, plain log lines elsewhere, nothing but errors with --quiet."""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable

import optuna

from .budget import Budget
from .pick import baseline_trial, confirmations, is_feasible, speed_of

TrialState = optuna.trial.TrialState


def trial_line(study: optuna.Study, t: optuna.trial.FrozenTrial) -> str:
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items()) or "baseline"
    if t.state == TrialState.COMPLETE:
        s = speed_of(t, confirmations(study), baseline_trial(study))
        spread = f" ±{s.latency_iqr_s / 2:.3f}" if s.latency_iqr_s is not None else ""
        m = t.user_attrs.get("metrics", {})
        quality = "  ".join(f"{k} {v:.3g}" for k, v in m.items())
        mark = "" if is_feasible(t) else "  (below the floor)"
        return f"trial {t.number:3d}  {s.latency_s:.3f}s{spread}  {s.text():>6}  {quality}  [{params}]{mark}"
    reason = t.user_attrs.get("fail_reason") or t.user_attrs.get("prune_reason") or ""
    return f"trial {t.number:3d}  {t.state.name.lower()}: {reason}  [{params}]"


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def summary(study: optuna.Study) -> dict:
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("over_budget")]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    base, conf = baseline_trial(study), confirmations(study)
    speeds = [speed_of(t, conf, base).speedup for t in done if is_feasible(t)]
    speeds = [s for s in speeds if s]
    best = max(speeds) if speeds else None
    return {
        "done": len(done),
        "failed": sum(t.state == TrialState.FAIL and not t.user_attrs.get("interrupted") for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "repeats": sum("repeat_of" in t.user_attrs for t in done),  # answered from storage, not counted
        "best": best,
    }


class ProgressUI:
    def __init__(self, budget: Budget, study: optuna.Study, enabled: bool | None = None, quiet: bool = False,
                 log: Callable[[str], None] = print):
        self.budget = budget
        self.quiet = quiet
        self.bar = (sys.stdout.isatty() if enabled is None else enabled) and not quiet
        self.log = log
        self._lock = threading.Lock()
        self._progress = None
        self._task = None
        self._study = study

    def __enter__(self):
        if self.bar:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]tuning"), BarColumn(), TextColumn("{task.fields[what]}"), TimeElapsedColumn(),
                TextColumn("{task.fields[stats]}"), transient=False,
            )
            total = self.budget.seconds if self.budget.seconds is not None else self.budget.trials
            self._task = self._progress.add_task("tune", total=total, what="", stats="")
            self._progress.start()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()

    def note(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False)
        elif not self.quiet:
            self.log(text)

    def trial_done(self, t: optuna.trial.FrozenTrial | None) -> None:
        if t is None or self.quiet or self._study is None:
            return
        with self._lock:
            self.note(trial_line(self._study, t))

    def refresh(self, study: optuna.Study, started: float) -> None:
        if self._progress is None:
            return
        s = summary(study)
        elapsed = time.monotonic() - started
        best = f"best {s['best']:.2f}x above the floor" if s["best"] else "no feasible speed-up yet"
        stats = f"{s['done']} done · {s['failed']} failed · {s['pruned']} pruned · {best}"
        if self.budget.seconds is not None:
            what = f"{elapsed:.0f}/{self.budget.seconds:.0f}s"
            self._progress.update(self._task, completed=min(elapsed, self.budget.seconds), what=what, stats=stats)
        else:
            n = s["done"] - s["repeats"] + s["failed"] + s["pruned"]
            self._progress.update(self._task, completed=n, what=f"{n}/{self.budget.trials} trials", stats=stats)
