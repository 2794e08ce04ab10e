"""trials.csv / trials.parquet: one row per trial, one column per parameter and per metric."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pandas as pd

# Columns every trials table has, in the order they are written; metrics follow speedup and
# parameters (``param.<section>.<field>``) follow pareto.
_HEAD = ("trial", "state", "latency_s", "speedup")
_MIDDLE = ("speedup_iqr", "skipped_fraction", "peak_memory_mb", "weight_mb", "setup_s", "feasible", "pareto")
_TAIL = ("fail_reason", "duration_s")
# lower is better for these; every other metric is better when higher (the tuner passes
# metrics.METRIC_DIRECTIONS; this is the fallback for a bare DataFrame)
LOWER_IS_BETTER = {"lpips", "fid", "fvd", "fd_clip", "fd_clip_frames", "mse", "mae"}


def as_number(v) -> float | None:
    """``v`` as a float; None for what is not a number (missing, NaN, a category)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def param_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("param.")]


def metric_columns(df: pd.DataFrame, metrics: dict[str, bool] | None = None) -> list[str]:
    """The quality metrics in ``df``: those named in ``metrics``, else every column not known to be something else."""
    known = set(_HEAD) | set(_MIDDLE) | set(_TAIL)
    if metrics is not None:
        return [m for m in metrics if m in df.columns]
    return [c for c in df.columns if c not in known and not c.startswith("param.") and pd.api.types.is_numeric_dtype(df[c])]


def higher_is_better(metric: str, metrics: dict[str, bool] | None = None) -> bool:
    if metrics is not None and metric in metrics:
        return bool(metrics[metric])
    return metric not in LOWER_IS_BETTER


def tidy_trials(df: pd.DataFrame, metrics: dict[str, bool] | None = None) -> pd.DataFrame:
    """Columns in a fixed order (trial, state, latency, speedup, metrics, ..., params, failure reason);
    integer parameters stay integers where a conditional parameter left gaps."""
    if df.empty:
        return df.copy()
    ms = metric_columns(df, metrics)
    params = param_columns(df)  # in the order the search space suggests them
    ordered = [c for c in _HEAD if c in df] + ms + [c for c in _MIDDLE if c in df] + params + [c for c in _TAIL if c in df]
    ordered += [c for c in df.columns if c not in ordered]
    out = df[ordered].copy()
    for c in params:
        col = out[c]
        if pd.api.types.is_float_dtype(col) and col.notna().any() and all(float(v).is_integer() for v in col.dropna()):
            out[c] = col.astype("Int64")
    for c in ("feasible", "pareto"):
        if c in out:
            out[c] = out[c].astype("boolean")
    return out


def write_trials_table(df: pd.DataFrame, path: str | Path, metrics: dict[str, bool] | None = None) -> Path:
    """Write trials.csv at ``path``, and trials.parquet beside it when pyarrow is installed."""
    path = Path(path)
    tidy = tidy_trials(df, metrics)
    tidy.to_csv(path, index=False)
    if importlib.util.find_spec("pyarrow") is not None:
        tidy.to_parquet(path.with_suffix(".parquet"), index=False)
    return path


def write_trials_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Kept for callers of the first version; same as ``write_trials_table``."""
    return write_trials_table(df, path)

