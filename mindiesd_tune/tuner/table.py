"""The table of trials: one row per trial, one column per parameter and per metric."""

from __future__ import annotations

import optuna
import pandas as pd

from .pick import HELDOUT, baseline_trial, confirmations, is_feasible, speed_of


def trials_table(study: optuna.Study) -> pd.DataFrame:
    base = baseline_trial(study)
    conf = confirmations(study)
    complete = optuna.trial.TrialState.COMPLETE
    front = {t.number for t in study.best_trials} if any(t.state == complete for t in study.trials) else set()
    held = study.user_attrs.get(HELDOUT) or {}
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("over_budget") or t.state == optuna.trial.TrialState.WAITING:
            continue  # queued but never run, or asked after the global trial budget was spent
        speed = speed_of(t, conf, base)  # the confirmed figures where the study re-measured the point
        done = t.state == complete
        rows.append({
            "trial": t.number,
            "state": t.state.name.lower(),
            # how far it got: screen (dropped by its screen), full (timed in full); confirmed below
            "fidelity": t.user_attrs.get("fidelity"),
            "screen_ratio": (t.user_attrs.get("screen") or {}).get("speedup"),
            # the full timing of a parked screen (tuner.screen.rank): the screen is that trial's
            "promoted_from": t.user_attrs.get("promoted_from"),
            "latency_s": speed.latency_s,
            "speedup": speed.speedup,
            "speedup_iqr": t.user_attrs.get("speedup_iqr"),
            "baseline_s": speed.baseline_s,
            "speedup_low": speed.low,
            "speedup_high": speed.high,
            "confirmed": speed.confirmed if done else None,
            "latency_iqr_s": speed.latency_iqr_s,
            "cpu_s": speed.cpu_s,
            **dict(t.user_attrs.get("metrics") or {}),
            # quality on the prompts the search never saw, for the points the confirmation checked
            **{f"heldout.{k}": v for k, v in ((held.get(str(t.number)) or {}).get("metrics") or {}).items()},
            "skipped_fraction": (t.user_attrs.get("counters") or {}).get("skipped_fraction"),
            "peak_memory_mb": _mb((t.user_attrs.get("latency") or {}).get("peak_memory_bytes")),
            "weight_mb": _mb((t.user_attrs.get("counters") or {}).get("weight_bytes")),
            "setup_s": (t.user_attrs.get("counters") or {}).get("setup_s"),
            "feasible": is_feasible(t) if done else None,
            "pareto": t.number in front,
            **{f"param.{k}": v for k, v in t.params.items()},
            "fail_reason": t.user_attrs.get("fail_reason") or t.user_attrs.get("prune_reason"),
            "worker": t.user_attrs.get("worker"),
            "duration_s": t.duration.total_seconds() if t.duration else None,
        })
    return pd.DataFrame(rows)


def _mb(v):
    return None if v is None else round(v / 2**20, 1)
