"""Choosing the profile among finished trials: fastest feasible, the knee of the front, or a trial.

The one definition of speed-up is ``speed_of``: the central ratio (``metrics.speed_interval``) of
baseline and candidate calls timed interleaved in the same window, with its interval; the
confirmed re-measurement where the study stored one. The study's first objective, the front, the pick, the console line, the table,
the report and the profile all read it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import optuna

from ..errors import UserError
from .trials import baseline_trial, completed, is_feasible, is_neutral_point

COMPLETE = optuna.trial.TrialState.COMPLETE
NO_GAIN = "no setting was faster than the baseline beyond timing noise"


PRESET = "preset"  # user attribute of the trials queued from the presets, before the sampler


def is_preset(trial: optuna.trial.FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(PRESET))


def best_preset(study: optuna.Study, confirmed: dict | None = None) -> optuna.trial.FrozenTrial | None:
    """The fastest preset that meets every constraint, not the baseline: what a user who ran the
    presets alone would deploy. Its confirmed speed where ``confirmed`` holds it."""
    base = baseline_trial(study)
    speeds = {t.number: speed_of(t, confirmed, base).speedup or 0.0 for t in completed(study)
              if is_preset(t) and is_feasible(t) and not is_neutral_point(t) and "repeat_of" not in t.user_attrs}
    faster = [t for t in completed(study) if speeds.get(t.number, 0.0) > 1.0]
    return max(faster, key=lambda t: speeds[t.number], default=None)


# study attribute: the pick timed head to head against the best preset alone (study.confirm_front)
VERSUS_PRESET = "versus_preset"
# study attribute: quality on the held-out prompts by trial number (confirm.check_heldout)
HELDOUT = "heldout"
PICK_RULES = ("fastest", "knee", "robust")


def failed_heldout(study: optuna.Study) -> set[int]:
    """Trials whose quality on the held-out prompts missed a floor: never the pick of a rule."""
    return {int(k) for k, v in (study.user_attrs.get(HELDOUT) or {}).items() if not v.get("meets", True)}


def against_best_preset(study: optuna.Study, chosen: optuna.trial.FrozenTrial | None) -> str | None:
    """One line setting the pick beside the best preset alone, both as confirmed, and as timed
    head to head where the study did (``VERSUS_PRESET``); None when there is no such preset, the
    pick is one, or either was not confirmed."""
    conf = confirmations(study)
    preset = best_preset(study, conf)
    if chosen is None or preset is None or is_preset(chosen) or is_neutral_point(chosen):
        return None
    mine, theirs = speed_of(chosen, conf), speed_of(preset, conf)
    if not (mine.confirmed and theirs.confirmed and mine.speedup and theirs.speedup):
        return None
    line = f"best preset alone: trial {preset.number} at {theirs.text()} (confirmed); "
    vs = study.user_attrs.get(VERSUS_PRESET) or {}
    if vs.get("pick") == chosen.number and vs.get("preset") == preset.number and vs.get("speedup"):
        # one ratio per round, both settings under the same load: the direct answer
        r, low, high = vs["speedup"], vs["speedup_low"], vs["speedup_high"]
        verdict = ("faster beyond timing noise" if low > 1.0 else "slower beyond timing noise" if high < 1.0
                   else "not told apart from it beyond timing noise")
        return line + f"timed head to head, the pick runs {r:.2f}x [{low:.2f}-{high:.2f}] as fast ({vs['rounds']} rounds), {verdict}"
    ratio = mine.speedup / theirs.speedup
    if ratio <= 1.0:
        verdict = "not faster"
    elif (mine.low or 0.0) > (theirs.high or math.inf):
        verdict = "faster beyond both intervals"
    else:
        verdict = "faster, but the intervals overlap"
    return line + f"the pick reads {ratio:.2f}x of it, {verdict}"


def quality_key(study: optuna.Study):
    """trial -> the quality objective signed so that larger is better (LPIPS is minimised)."""
    sign = -1.0 if study.directions[1] == optuna.study.StudyDirection.MINIMIZE else 1.0

    def key(trial: optuna.trial.FrozenTrial) -> float:
        return sign * trial.values[1] if trial.values and len(trial.values) > 1 else -math.inf

    return key


@dataclass(frozen=True)
class Speed:
    """A trial's speed against the baseline: the speed-up, its interval, and both latencies."""

    speedup: float | None
    low: float | None
    high: float | None
    latency_s: float | None
    baseline_s: float | None
    confirmed: bool = False
    latency_iqr_s: float | None = None
    baseline_iqr_s: float | None = None
    cpu_s: float | None = None
    baseline_cpu_s: float | None = None

    @property
    def beyond_noise(self) -> bool:
        """Faster than the baseline with the whole interval above 1.0 (a trial stored without an
        interval: faster at all)."""
        if self.low is None:
            return bool(self.speedup and self.speedup > 1.0)
        return self.low > 1.0

    @property
    def relative_latency(self) -> float | None:
        """Latency as a share of the baseline's, 1 / speed-up: the study's first objective."""
        return 1.0 / self.speedup if self.speedup else None

    def text(self) -> str:
        if not self.speedup:
            return "-"
        if self.low is None or self.high is None:
            return f"{self.speedup:.2f}x"
        return f"{self.speedup:.2f}x [{self.low:.2f}-{self.high:.2f}]"


def confirmations(study: optuna.Study) -> dict:
    """trial number (str) -> the confirmed re-measurement stored at the end of the study."""
    return dict(study.user_attrs.get("confirmed") or {})


def speed_of(trial: optuna.trial.FrozenTrial, confirmed: dict | None = None,
             base: optuna.trial.FrozenTrial | None = None) -> Speed:
    """The trial's speed: its confirmed figures where ``confirmed`` (``confirmations(study)``) holds
    them, else those of the baseline timed interleaved with it; against the baseline trial ``base``
    (no interval) only for a trial stored without an interleaved baseline."""
    attrs = trial.user_attrs
    for key in (trial.number, attrs.get("repeat_of")):
        c = (confirmed or {}).get(str(key)) if key is not None else None
        if c:
            return Speed(c.get("speedup"), c.get("speedup_low"), c.get("speedup_high"), c.get("latency_s"),
                         c.get("baseline_s"), True, c.get("latency_iqr_s"), c.get("baseline_iqr_s"),
                         c.get("cpu_s"), c.get("baseline_cpu_s"))
    latency = attrs.get("latency_s")
    lat = attrs.get("latency") or {}
    if attrs.get("speedup") is not None:
        b = attrs.get("baseline_latency") or {}
        return Speed(attrs["speedup"], attrs.get("speedup_low"), attrs.get("speedup_high"), latency, b.get("median_s"),
                     False, lat.get("iqr_s"), b.get("iqr_s"), lat.get("cpu_s"), b.get("cpu_s"))
    base_s = base.user_attrs.get("latency_s") if base is not None else None
    return Speed(base_s / latency if latency and base_s else None, None, None, latency, base_s,
                 latency_iqr_s=lat.get("iqr_s"))


def pick(study: optuna.Study, how: str = "fastest") -> tuple[optuna.trial.FrozenTrial | None, str]:
    """``fastest`` (default), ``knee``, ``robust`` or ``trial:N`` -> (trial, why). The baseline when
    nothing is feasible, or when no feasible setting is faster than the baseline beyond timing
    noise. A trial that missed a floor on the held-out prompts is passed over by every rule.
    ``robust``: the fastest point whose bolder neighbour along each of its knobs, where one was
    tried, still meets the floors (``tuner.cliffs``); the fastest when no point has one."""
    done = completed(study)
    failed = failed_heldout(study)
    feasible = [t for t in done if is_feasible(t) and t.number not in failed]
    floors = ", ".join(study.user_attrs.get("floors", [])) or "no floor"
    aside = (f"; trial(s) {', '.join(str(n) for n in sorted(failed))} missed the floors on the held-out prompts"
             if failed else "")
    m = re.fullmatch(r"trial:(\d+)", how)
    if m:
        n = int(m.group(1))
        match = [t for t in done if t.number == n]
        if not match:
            raise UserError(f"--pick {how}: trial {n} did not complete (completed: {', '.join(str(t.number) for t in done) or 'none'})")
        note = "" if is_feasible(match[0]) else f" (it does not meet {floors})"
        note += " (it missed the floors on the held-out prompts)" if n in failed else ""
        return match[0], f"trial {n} as asked{note}"
    if how not in PICK_RULES:
        raise UserError(f"--pick {how!r}: use {', '.join(PICK_RULES)} or trial:N")
    if not feasible:
        base = baseline_trial(study)
        if base is not None:
            return base, f"no trial met {floors}{aside}; the profile is the baseline"
        return None, "no trial finished"
    quality = quality_key(study)
    conf = confirmations(study)
    base = baseline_trial(study)
    speed = {t.number: speed_of(t, conf, base) for t in done}
    if how == "knee":
        return knee(feasible, quality, speed), f"knee of the latency/quality front among trials meeting {floors}{aside}"
    # a confirmed study picks among its confirmed points: the figures the profile records
    pool = [t for t in feasible if speed[t.number].confirmed] if conf else feasible
    gains = [t for t in pool if not is_neutral_point(t) and speed[t.number].beyond_noise]
    if not gains:
        if base is not None and is_feasible(base):
            return base, f"{NO_GAIN}{aside}; the profile is the baseline"
        # the baseline itself breaks a constraint (a weight or memory cap): the fastest trial
        # that meets them all is the profile, with the same word on its speed
        best = max(pool or feasible, key=lambda t: (speed[t.number].speedup or 0.0, quality(t)))
        return best, f"{NO_GAIN}; the baseline does not meet the constraints, so the profile is the fastest trial meeting {floors}"
    ranked = sorted(gains, key=lambda t: (speed[t.number].speedup, quality(t)), reverse=True)
    best, rule = ranked[0], "fastest trial"
    if how == "robust":
        from .cliffs import is_robust

        robust = next((t for t in ranked if is_robust(study, t)), None)
        if robust is not None:
            best, rule = robust, "fastest trial whose bolder neighbours still meet the floors,"
        else:
            rule = "fastest trial (no point had a bolder neighbour meeting the floors),"
    s = speed[best.number]
    measured = "confirmed" if s.confirmed else "unconfirmed: not re-measured"
    return best, f"{rule} meeting {floors} ({measured}, {s.text()}){aside}"


def _relative(speed: dict | None):
    """trial -> latency relative to the baseline (1 / speed-up); absolute latency without one."""
    def rel(t: optuna.trial.FrozenTrial) -> float:
        r = speed[t.number].relative_latency if speed and t.number in speed else None
        return r if r is not None else t.user_attrs["latency_s"]

    return rel


def knee(trials: list[optuna.trial.FrozenTrial], quality, speed: dict | None = None) -> optuna.trial.FrozenTrial:
    """The front point farthest from the line joining its two ends (normalised axes)."""
    rel = _relative(speed)
    front = _front(trials, quality, rel)
    if len(front) <= 2:
        return min(front, key=rel)
    lat = [rel(t) for t in front]
    q = [quality(t) for t in front]
    lo_l, hi_l, lo_q, hi_q = min(lat), max(lat), min(q), max(q)
    span_l, span_q = (hi_l - lo_l) or 1.0, (hi_q - lo_q) or 1.0
    pts = [((a - lo_l) / span_l, (b - lo_q) / span_q) for a, b in zip(lat, q)]
    (x1, y1), (x2, y2) = pts[0], pts[-1]
    norm = math.hypot(x2 - x1, y2 - y1) or 1.0
    dist = [abs((y2 - y1) * x - (x2 - x1) * y + x2 * y1 - y2 * x1) / norm for x, y in pts]
    return front[max(range(len(front)), key=dist.__getitem__)]


def _front(trials, quality, rel=None):
    """Non-dominated trials (min relative latency, max quality), sorted by relative latency."""
    rel = rel or _relative(None)
    pts = sorted(trials, key=lambda t: (rel(t), -quality(t)))
    front, best_q = [], -math.inf
    for t in pts:
        if quality(t) > best_q:
            front.append(t)
            best_q = quality(t)
    return front
