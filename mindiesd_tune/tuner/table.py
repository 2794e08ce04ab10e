"""The table of trials: one row per trial, one column per parameter and per metric."""

from __future__ import annotations

import optuna
import pandas as pd

from .select import QualityFloor, baseline_trial, is_feasible


def pareto_numbers(study: optuna.Study) -> set[int]:
    """Trials on the latency / quality front (Optuna's own non-dominated sort)."""
    return {t.number for t in study.best_trials}


def trials_table(study: optuna.Study, floors: list[QualityFloor]) -> pd.DataFrame:
    base = baseline_trial(study)
    base_s = base.user_attrs.get("latency_s") if base is not None else None
    front = pareto_numbers(study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        complete = t.state == optuna.trial.TrialState.COMPLETE
        latency = t.user_attrs.get("latency_s")
        row = {
            "trial": t.number,
            "state": t.state.name.lower(),
            "latency_s": latency,
            "speedup": (base_s / latency) if (latency and base_s) else None,
            **{k: v for k, v in (t.user_attrs.get("metrics") or {}).items()},
            "skipped_fraction": (t.user_attrs.get("counters") or {}).get("skipped_fraction"),
            "peak_memory_mb": _mb((t.user_attrs.get("latency") or {}).get("peak_memory_bytes")),
            "feasible": is_feasible(t, floors, base) if complete else None,
            "pareto": t.number in front,
            **{f"param.{k}": v for k, v in t.params.items()},
            "fail_reason": t.user_attrs.get("fail_reason"),
            "duration_s": t.duration.total_seconds() if t.duration else None,
        }
        rows.append(row)
    return pd.DataFrame(rows)


def _mb(v):
    return None if v is None else round(v / 2**20, 1)

