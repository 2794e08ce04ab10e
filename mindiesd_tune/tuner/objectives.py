"""Objectives and constraints: quality floors (absolute or baseline-relative) and a memory cap.

Floors become Optuna constraints (``trial.set_constraint``; feasible when <= 0), so every
Optuna sampler steers away from infeasible points and infeasible trials never become the
profile.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..quality import AGGREGATES, JUDGES, key

_FLOOR = re.compile(r"^\s*([a-z_0-9]+)(?:\.([a-z0-9]+))?\s*(>=|<=)\s*([0-9]*\.?[0-9]+(?:e-?\d+)?)\s*(x?)\s*$")
# per-prompt metrics (a value per prompt, so an aggregate over them) and set-level distances
# between a trial's outputs and the baseline's (one value for the whole set)
PER_PROMPT_METRICS = frozenset({"psnr", "ssim", "ms_ssim", "lpips", "clip"})
SET_METRICS = frozenset({"kid_clip", "kvd_clip", "fvd", "kvd_i3d"})
_MEMORY = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)\s*$", re.I)
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
          "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}


@dataclass(frozen=True)
class QualityFloor:
    """``metric >= value`` (or ``<=``); with ``relative`` the value multiplies the baseline's.
    ``aggregate``: over the prompts, ``mean`` (the bare metric), ``min``, ``max``, ``p10``, ``p90``."""

    metric: str
    op: str
    value: float
    relative: bool = False
    aggregate: str = "mean"

    @property
    def key(self) -> str:
        """The trial metrics' key this floor reads (``mindiesd_tune.quality``)."""
        return key(self.metric, self.aggregate)

    def judged_value(self, metrics: dict[str, Any], judge: str = "bound") -> Any:
        """The value the floor is judged on: a floor on the mean reads the mean's confidence bound
        when ``judge`` is ``bound`` and the trial has one; any other reads its aggregate."""
        if self.aggregate == "mean" and judge == "bound" and f"{self.metric}.bound" in metrics:
            return metrics[f"{self.metric}.bound"]
        return metrics.get(self.key)

    def bound(self, baseline_value: float | None) -> float:
        if not self.relative:
            return self.value
        if baseline_value is None or not math.isfinite(baseline_value):
            raise UserError(f"floor {self}: the baseline has no finite {self.metric} to scale")
        return self.value * baseline_value

    def violation(self, value: float | None, baseline_value: float | None = None) -> float:
        """Optuna constraint value: <= 0 when the floor holds, else how far it is missed."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return math.inf
        b = self.bound(baseline_value)
        if math.isinf(value):
            return -1.0 if (value > 0) == (self.op == ">=") else math.inf
        return (b - value) if self.op == ">=" else (value - b)

    def holds(self, value: float | None, baseline_value: float | None = None) -> bool:
        return self.violation(value, baseline_value) <= 0

    def breaks_by(self, value: float | None, margin: float, baseline_value: float | None = None) -> bool:
        """True when ``value`` misses the floor by more than ``margin`` (a fraction of the bound)."""
        v = self.violation(value, baseline_value)
        return v > margin * abs(self.bound(baseline_value))

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value:g}{'x' if self.relative else ''}"


def parse_floor(text: str, known: set[str] | None = None) -> QualityFloor:
    m = _FLOOR.match(text)
    if not m:
        raise UserError(f"bad quality floor {text!r}: write it as METRIC[.AGGREGATE]>=VALUE, e.g. psnr>=30, "
                        "psnr.min>=28, lpips.max<=0.1 or ssim>=0.99x")
    metric, agg, op, value, rel = m.groups()
    known = known if known is not None else PER_PROMPT_METRICS | SET_METRICS
    if metric not in known:
        raise UserError(f"bad quality floor {text!r}: unknown metric {metric!r} (known: {', '.join(sorted(known))})")
    if agg is not None and metric in SET_METRICS:
        raise UserError(f"bad quality floor {text!r}: {metric} is one distance for the whole set of outputs; "
                        "it takes no aggregate")
    if agg is not None and agg not in AGGREGATES:
        raise UserError(f"bad quality floor {text!r}: unknown aggregate {agg!r} (known: {', '.join(AGGREGATES)})")
    return QualityFloor(metric, op, float(value), bool(rel), agg or "mean")


def parse_memory(text: str, option: str = "") -> int:
    """``"8GB"``, ``"512MiB"``, ``"2e9"`` -> bytes; ``option`` names the flag in the error."""
    what = f"{option} {text!r}" if option else f"bad memory size {text!r}"
    m = _MEMORY.match(str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise UserError(f"{what}: not a size; use e.g. 8GB, 512MiB or 24GiB")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value <= 0:
        raise UserError(f"{what}: a size must be positive")
    return int(value)


@dataclass(frozen=True)
class Constraints:
    """Quality floors, a cap on peak memory and a cap on the model's weight bytes (linear
    weights with their quantisation scales, every component, as ``accel.quant.weight_bytes``)."""

    floors: tuple[QualityFloor, ...] = ()
    max_memory_bytes: int | None = None
    max_weight_bytes: int | None = None
    judge: str = "bound"  # a floor on the mean: judged on its confidence bound, or on the mean itself

    def __post_init__(self):
        if self.judge not in JUDGES:
            raise UserError(f"bad floor judge {self.judge!r}: one of {', '.join(JUDGES)}")

    def values(self, metrics: dict[str, Any], peak_memory: int | None, baseline: dict[str, Any],
               weight_bytes: int | None = None) -> dict[str, float]:
        """Constraint name -> value (<= 0 feasible), for ``trial.set_constraint``. A relative floor
        scales the baseline's own aggregate (its mean, its worst prompt)."""
        out = {str(f): f.violation(f.judged_value(metrics, self.judge), baseline.get(f.key, baseline.get(f.metric)))
               for f in self.floors}
        if self.max_memory_bytes is not None:
            out["memory"] = (peak_memory - self.max_memory_bytes) / 2**20 if peak_memory is not None else 0.0
        if self.max_weight_bytes is not None:
            # unmeasured weights cannot be shown to fit: a violation, not a pass
            out["weight_bytes"] = (weight_bytes - self.max_weight_bytes) / 2**20 if weight_bytes is not None else math.inf
        # Optuna wants finite floats; a missing metric is a large violation
        return {k: (1e9 if math.isinf(v) and v > 0 else v) for k, v in out.items()}

    def meets(self, metrics: dict[str, Any], baseline: dict[str, Any]) -> bool:
        """Whether ``metrics`` meet every quality floor (memory and weight caps aside)."""
        return all(v <= 0 for v in self.values(metrics, None, baseline).values()) if self.floors else True

    def spec(self) -> dict[str, Any]:
        return {"floors": [str(f) for f in self.floors], "max_memory_bytes": self.max_memory_bytes,
                "max_weight_bytes": self.max_weight_bytes, "judge": self.judge}

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None) -> "Constraints":
        spec = spec or {}
        return cls(tuple(parse_floor(f) for f in spec.get("floors", [])), spec.get("max_memory_bytes"),
                   spec.get("max_weight_bytes"), spec.get("judge", "bound"))
