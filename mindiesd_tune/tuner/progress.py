"""Study progress: a rich bar on a terminal, plain log lines elsewhere, nothing but errors with --quiet."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Callable

import optuna

from ..quality import worst
from .budget import Budget
from .pick import baseline_trial, confirmations, is_feasible, speed_of

TrialState = optuna.trial.TrialState


def trial_line(study: optuna.Study, t: optuna.trial.FrozenTrial) -> str:
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items()) or "baseline"
    if t.state == TrialState.COMPLETE:
        s = speed_of(t, confirmations(study), baseline_trial(study))
        spread = f" ±{s.latency_iqr_s / 2:.3f}" if s.latency_iqr_s is not None else ""
        m = t.user_attrs.get("metrics", {})
        # each metric's mean, and its worst prompt where there were several (the other
        # aggregates are in the table and the report)
        quality = "  ".join(f"{k} {v:.3g}" + (f" (worst {w:.3g})" if (w := worst(m, k)) is not None and w != v else "")
                            for k, v in m.items() if "." not in k)
        mark = "" if is_feasible(t) else f"  ({infeasible_text(t)})"
        return f"trial {t.number:3d}  {s.latency_s:.3f}s{spread}  {s.text():>6}  {quality}  [{params}]{mark}"
    reason = t.user_attrs.get("fail_reason") or t.user_attrs.get("prune_reason") or ""
    return f"trial {t.number:3d}  {t.state.name.lower()}: {reason}  [{params}]"


_CAPS = {"memory": "over the memory cap", "weight_bytes": "over the weight cap"}


def infeasible_text(t: optuna.trial.FrozenTrial) -> str:
    """Which constraints the trial breaks, in words: ``misses psnr>=30, over the weight cap``."""
    broken = [name for name, v in t.constraints.items() if v > 0]
    return ", ".join(_CAPS.get(name, f"misses {name}") for name in broken) or "infeasible"


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
        # a trial pruned on its first prompt's quality during its screen has no screen figures
        "screened": sum(("screen" in t.user_attrs or t.user_attrs.get("fidelity") == "screen")
                        and "promoted_from" not in t.user_attrs for t in trials),  # its parked screen counted
        "screened_out": sum(t.state == TrialState.PRUNED and "screen" in t.user_attrs for t in trials),
        "parked": sum(bool(t.user_attrs.get("parked")) for t in trials),  # successive halving's waiting screens
        "promoted": sum("promoted_from" in t.user_attrs and t.state == TrialState.COMPLETE for t in trials),
        "full": sum(t.user_attrs.get("fidelity") == "full" and t.state == TrialState.COMPLETE
                    and "repeat_of" not in t.user_attrs for t in trials),
        "confirmed": len(conf),
    }


def fidelity_line(study: optuna.Study) -> str:
    """How far each trial got: screened, pruned (at the screen or on the first prompt's quality),
    timed in full, confirmed."""
    s = summary(study)
    parked = f", {s['parked']} parked" if s["parked"] else ""
    later = f" ({s['promoted']} after being parked)" if s["promoted"] else ""
    return (f"{s['screened']} screened, {s['pruned']} pruned ({s['screened_out']} by their screen{parked}), "
            f"{s['full']} timed in full{later}, {s['confirmed']} confirmed")


def phases_line(timing: dict) -> str | None:
    """The share of the budget each phase used, from the study's ``timing`` attribute."""
    wall = timing.get("wall_seconds")
    if not wall:
        return None
    parts = [("baseline", timing.get("startup_seconds")), ("screening", timing.get("screen_seconds")),
             ("full timing", timing.get("full_seconds")), ("confirmation", timing.get("confirm_seconds")),
             ("outputs", timing.get("output_seconds"))]
    budget = timing.get("budget_seconds")
    of = f" of the {_duration(budget)} budget" if budget else ""
    shares = ", ".join(f"{name} {100 * v / wall:.0f}%" for name, v in parts if v is not None)
    return f"{_duration(wall)} from loaded to outputs on disk{of}: {shares}"


def header_lines(model: str, info: dict, budget: Budget, floors: list[str], max_memory_bytes: int | None,
                 sampler: str, storage: str, objective: str) -> list[str]:
    """What a study is about to do: the model, its workload, the machine and the search settings."""
    from ..workload import describe

    m, w, hw = info["model"], info["workload"], info.get("hardware") or {}
    device = " ".join(str(hw[k]) for k in ("device", "name") if hw.get(k)) or "?"
    ranks = (info.get("rank_group") or {}).get("world_size") or 1
    if hw.get("count") and (ranks == 1 or hw["count"] > 1):  # a CPU group's ranks share the one CPU
        device += f" x{hw['count']}"
    if ranks > 1:
        meshes = [m for m in (info.get("space") or {}).get("meshes") or () if m != "single"]
        device += f", {ranks} ranks per trial (" + (", ".join(meshes) + " possible" if meshes else "no mesh fits") + ")"
    limits = ", ".join(floors) or "none"
    if max_memory_bytes:
        limits += f", peak memory <= {max_memory_bytes / 2**30:.3g} GiB"
    return [
        f"model:     {model} (" + ", ".join(filter(None, (m.get("pipeline"), f"family {m.get('family')}", m.get("dtype")))) + ")",
        f"workload:  {describe(w['generation'], w['prompts'], w['seeds'])}",
        f"device:    {device}",
        f"budget:    {_budget_text(budget)}; floors: {limits}; objective: latency and {objective}",
        f"sampler:   {sampler}; storage: {storage}",
    ]


def _budget_text(budget: Budget) -> str:
    parts = []
    if budget.seconds is not None:
        parts.append(_duration(budget.seconds))
    if budget.trials is not None:
        parts.append(f"{budget.trials} trials")
    return " or ".join(parts) + (", whichever ends first" if len(parts) > 1 else "") if parts else "unlimited"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def closing_lines(study: optuna.Study, reason: str, loop_seconds: float, stop_reason: str,
                  against_preset: str | None = None) -> list[str]:
    """The study's end: how the trials went, the Pareto front, the pick and why (beside the best
    preset alone, when both were confirmed), time per trial."""
    s = summary(study)
    run = s["done"] - s["repeats"] + s["failed"] + s["pruned"]
    try:
        front = len(study.best_trials)
    except (RuntimeError, ValueError):
        front = 0
    per = f"{loop_seconds / run:.2f} s per trial" if run else "no trial ran"
    lines = [
        f"trials:    {s['done']} complete, {s['pruned']} pruned, {s['failed']} failed"
        + (f" ({s['repeats']} answered from earlier trials)" if s["repeats"] else "")
        + f"; ended: {stop_reason or 'stopped'}",
        f"front:     {front} trial(s) on the latency/quality Pareto front",
        f"fidelity:  {fidelity_line(study)}",
        f"pick:      {reason}",
        *([f"preset:    {against_preset}"] if against_preset else []),
        f"time:      {_duration(loop_seconds)} searching, {per}",
    ]
    phases = phases_line(study.user_attrs.get("timing") or {})
    if phases:
        lines.append(f"budget:    {phases}")
    return lines


class ProgressUI:
    def __init__(self, budget: Budget, study: optuna.Study, enabled: bool | None = None, quiet: bool = False,
                 log: Callable[[str], None] = print, console=None):
        """``console``: the rich Console the bar draws on (default: standard output)."""
        self.budget = budget
        self.quiet = quiet
        self.console = console
        terminal = console.is_terminal if console is not None else sys.stdout.isatty()
        self.bar = (terminal if enabled is None else enabled) and not quiet
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
                TextColumn("ETA {task.fields[eta]}"), TextColumn("{task.fields[stats]}"), transient=False,
                console=self.console,
            )
            total = self.budget.seconds if self.budget.seconds is not None else self.budget.trials
            what = f"0/{self.budget.trials} trials" if self.budget.trials is not None else "0 trials"
            self._task = self._progress.add_task("tune", total=total, what=what, eta="-", stats="")
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

    @contextlib.contextmanager
    def phase(self, name: str, cap_s: float | None = None):
        """A phase after the search (confirmation, outputs): a spinner with its elapsed time and
        cap on a terminal, a line at its start and end elsewhere."""
        cap = f" (at most {_duration(cap_s)})" if cap_s is not None else ""
        t0 = time.monotonic()
        if not self.bar:
            if not self.quiet:
                self.log(f"{name}: started{cap}")
            try:
                yield
            finally:
                if not self.quiet:
                    self.log(f"{name}: ended after {_duration(time.monotonic() - t0)}")
            return
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        progress = Progress(SpinnerColumn(), TextColumn(f"[bold]{name}[/bold]{cap}"), TimeElapsedColumn(),
                            console=self.console, transient=True)
        outer, self._progress = self._progress, progress
        progress.add_task(name, total=None)
        with progress:
            try:
                yield
            finally:
                self._progress = outer

    def refresh(self, study: optuna.Study, started: float, search_end: float | None = None) -> None:
        """Redraw the bar; ``search_end`` (the plan's) is when the search hands over to the
        confirmation, the ETA shown."""
        if self._progress is None:
            return
        s = summary(study)
        elapsed = time.monotonic() - started
        best = f"best {s['best']:.2f}x above the floor" if s["best"] else "no feasible speed-up yet"
        stats = f"{s['done']} done · {s['failed']} failed · {s['pruned']} pruned · {best}"
        n = s["done"] - s["repeats"] + s["failed"] + s["pruned"]
        what = f"{n}/{self.budget.trials} trials" if self.budget.trials is not None else f"{n} trials"
        eta = self.eta(n, elapsed)
        by_time = self.budget.seconds is not None and (self.budget.trials is None or eta == self.budget.seconds - elapsed)
        if search_end is not None:
            eta = max(0.0, min(eta if eta is not None else float("inf"), search_end - time.monotonic()))
        eta_text = _duration(eta) if eta is not None else "-"
        if by_time:
            self._progress.update(self._task, completed=min(elapsed, self.budget.seconds), what=what, eta=eta_text,
                                  stats=stats)
        else:
            self._progress.update(self._task, completed=n, what=what, eta=eta_text, stats=stats)

    def eta(self, trials_run: int, elapsed: float) -> float | None:
        """Seconds until the budget ends: the time left, or the trials left at the pace so far,
        whichever comes first; None before a trial has shown the pace of a trial budget."""
        left = []
        if self.budget.seconds is not None:
            left.append(max(0.0, self.budget.seconds - elapsed))
        if self.budget.trials is not None and trials_run:
            left.append(max(0, self.budget.trials - trials_run) * elapsed / trials_run)
        return min(left) if left else None
