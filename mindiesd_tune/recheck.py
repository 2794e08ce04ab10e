"""Re-measure stored profiles after a library upgrade and mark what no longer holds.

A stored profile records the versions of torch, diffusers, torchao and torch_npu it was measured
with. Where the installed ones differ, ``recheck`` loads the model, checks it is the same weights,
and measures the profile against a fresh baseline with ``bench.measure`` (the interleaved rounds
``mindiesd-tune bench`` runs: quality from the same calls' outputs, the speed-up with its 95%
interval). Each is then marked, the first that applies:

- ``no-op``: a method that skips work (a cache, sparse attention) skipped nothing, by the counters
  the accel library records on the handle: an upgrade that silently disconnects a hook;
- ``below floor``: the quality misses a floor the profile was picked under (``study.floors``);
- ``slower``: the new interval lies wholly below the recorded one (its low bound, or the recorded
  speed-up where it has none);
- ``holds``: none of these. The row's versions become the installed ones.

All but ``holds`` mark the profile ``stale``; ``apply_profile(..., verify=True)`` refuses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from .store.core import ProfileStore, StoredProfile
from .store.facts import here, installed_versions


@dataclass
class CheckResult:
    stored: StoredProfile
    verdict: str | None  # None: not measured (see note)
    note: str = ""
    speedup: float | None = None
    low: float | None = None
    high: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    skipped_fraction: float | None = None
    changed: dict[str, tuple] = field(default_factory=dict)  # library: (recorded, installed)


def outdated(stored: StoredProfile, installed: dict[str, str | None]) -> dict[str, tuple]:
    """library -> (recorded, installed) for every version that differs."""
    return {k: (v, installed.get(k)) for k, v in stored.versions.items() if v != installed.get(k)}


def skips_nothing(config, counters: dict[str, Any]) -> bool:
    """Whether ``config`` has a method that skips work and the handle's counters say it skipped none.

    Methods that do not skip (quantisation, compile, a step count, parallelism) are not judged
    here: their effect shows in the speed-up.
    """
    judged, skipped = False, False
    if config.cache.method != "none":
        judged = True
        skipped |= bool(counters.get("blocks_skipped") or counters.get("attention_skipped")
                        or counters.get("cached_steps"))
    if getattr(config.sparse, "method", "none") != "none":
        judged = True
        skipped |= bool(counters.get("attention_sparse_calls")) and (counters.get("sparse_density", 1.0) < 1.0)
    return judged and not skipped


def verdict_of(prof, m) -> tuple[str, str]:
    """(verdict, why) of one measurement ``m`` (a ``bench.BenchMeasurement``) of profile ``prof``."""
    from .tuner.objectives import parse_floor

    if skips_nothing(prof.accel, m.counters):
        return "no-op", "its methods skipped nothing"
    for text in prof.study.get("floors") or []:
        floor = parse_floor(text)
        value = m.metrics.get(floor.metric)
        if not floor.holds(value, m.base_metrics.get(floor.metric)):
            return "below floor", f"{floor.metric} {value:.4g} misses {floor}"
    recorded = prof.measured.get("speedup_low") or prof.measured.get("speedup")
    high = m.comparison.speedup_high
    if isinstance(recorded, (int, float)) and high is not None and math.isfinite(high) and high < recorded:
        return "slower", f"{m.comparison.speedup:.2f}x [{m.comparison.speedup_low:.2f}-{high:.2f}], below the recorded {recorded:.2f}x"
    return "holds", ""


def recheck(store: str | ProfileStore, model: str | None = None, *, all_profiles: bool = False,
            installed: dict[str, str | None] | None = None, loader: Callable | None = None,
            repeats: int = 2, precision: float | None = 0.1, max_s: float | None = 120.0, warmup: int = 1,
            log: Callable[[str], None] = print) -> list[CheckResult]:
    """Re-measure the stored profiles (of ``model``: a name, family or fingerprint) whose recorded
    library versions differ from ``installed`` (default: this environment's); ``all_profiles``
    re-measures every one. Profiles of another device kind or of weights the model no longer has
    are reported and left as they are. ``loader(name, device=, dtype=)`` loads a model
    (default ``models.load``); each model is loaded once."""
    from . import models
    from .bench import measure, profile_evaluator

    st = store if isinstance(store, ProfileStore) else ProfileStore(store)
    installed = installed if installed is not None else installed_versions()
    loader = loader or models.load
    results: list[CheckResult] = []
    loaded_by: dict[tuple, Any] = {}
    for stored in st.list(model=model):
        if stored.status == "retired":
            continue
        changed = outdated(stored, installed)
        if not changed and not all_profiles:
            continue
        row = stored.row
        key = (row["model_name"], row["device"], row["dtype"])
        loaded, why = _load_here(loader, loaded_by, key, row)
        if why is not None:
            results.append(CheckResult(stored, None, why, changed=changed))
            log(_line(results[-1]))
            continue
        prof = stored.profile()
        ev = profile_evaluator(loaded, prof, warmup=warmup, source=f"profile {stored.id}")
        m = measure(ev, prof.accel, repeats, precision=precision, max_s=max_s)
        verdict, why = verdict_of(prof, m)
        cmp = m.comparison
        result = CheckResult(stored, verdict, why, cmp.speedup, cmp.speedup_low, cmp.speedup_high, dict(m.metrics),
                             m.counters.get("skipped_fraction"), changed)
        st.record_check(stored.id, verdict, installed, cmp.speedup, cmp.speedup_low, cmp.speedup_high, m.metrics,
                        result.skipped_fraction, why or None)
        results.append(result)
        log(_line(result))
    return results


def _load_here(loader, loaded_by: dict, key: tuple, row: dict):
    """(the loaded model, None), or (None, why it cannot be measured here); each model once."""
    from .profile import model_fingerprint

    try:
        if key not in loaded_by:
            loaded_by[key] = loader(row["model_name"], device=row["device"], dtype=row["dtype"])
        loaded = loaded_by[key]
        me = here(loaded.pipe.device)
    except Exception as e:  # noqa: BLE001  (a model not here, a device type this machine lacks)
        first = str(e).splitlines()[0][:120] if str(e) else ""
        return None, f"not measured: cannot load {row['model_name']} on {row['device']} ({type(e).__name__}: {first})"
    if (me["device"], me["device_name"]) != (row["device"], row["device_name"]):
        return None, (f"not measured: tuned on {row['device']} ({row['device_name']}), "
                      f"this machine has {me['device']} ({me['device_name']})")
    if model_fingerprint(loaded.pipe) != row["fingerprint"]:
        return None, (f"not measured: {row['model_name']} has other weights here "
                      f"(fingerprint {model_fingerprint(loaded.pipe)}, the profile's {row['fingerprint']})")
    return loaded, None


def _line(r: CheckResult) -> str:
    row = r.stored.row
    changed = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in r.changed.items()) or "no version change"
    head = f"profile {r.stored.id} ({row['model_name']}, {r.stored.workload_text()}; {changed}): "
    if r.verdict is None:
        return head + r.note
    speed = f"{r.speedup:.2f}x [{r.low:.2f}-{r.high:.2f}]" if r.speedup is not None else "speed-up not measured"
    quality = ", ".join(f"{k} {v:.4g}" for k, v in sorted(r.metrics.items()) if k in ("psnr", "ssim"))
    skipped = f", skipped {r.skipped_fraction:.0%}" if r.skipped_fraction is not None else ""
    return head + f"{r.verdict} ({speed}, {quality}{skipped}" + (f"; {r.note})" if r.note else ")")
