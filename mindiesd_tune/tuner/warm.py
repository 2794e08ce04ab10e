"""Warm starts: a new study begins with the stored fronts of the same family, as enqueued trials.

Profiles of the same weights come first (another workload of the same model), then those of the
same family on the same device kind (another checkpoint of the architecture). Of each stored
profile its own pick comes first (the point its study confirmed and chose), then the pick with the
new study's precision, compile and batched-call presets laid over it (``over_pick``), then its
front's other points, fastest first (a published front leaves out what its study set aside on
held-out prompts). Each stored point (the front's trial parameters where the study published
them, else the profile's config) is fitted into the new study's space: a method the space does not
offer is left out, a number is clamped into its range, a step count or step position is scaled by
the workloads' step ratio (a profile running 14 of 20 steps becomes 20 of 28, a warm-up of 2 of 20
steps 3 of 28), and a threshold on the first block's per-step change is scaled by how far that
change moved (the ratio of the two studies' calibrated threshold ranges where the store recorded
the source's, else the inverse step ratio: with more steps each step changes less). Steps a
calibrated ``schedule`` computes are not carried over: its budget (a share of the steps) is, and
the new study derives the mask from its own calibration. The new study evaluates the points right
after the baseline; ``held`` counts how many met the floors and beat the baseline beyond noise there.
"""

from __future__ import annotations

import math
from typing import Any, Callable

WARM = "warm_start"  # trial user attribute: the store ID the point came from
# the published profile's ``study`` key holding its space's threshold range (what a warm start
# measures the new model's per-step change against)
CALIBRATION = "threshold_range"
MAX_POINTS = 8  # enqueued at most: the sampler should still get its share of a short budget
# step counts and step positions: scaled so they keep their share of the new workload's steps
STEP_PARAMS = frozenset({"steps.num_inference_steps", "cache.warmup_steps", "cache.step_start",
                         "cache.max_cached_steps", "cache.disable_cache_before_step"})
# cache methods whose ``cache.threshold`` is compared with the first block's per-step change, the
# quantity a study's threshold range is centred on (``StepStatistics.threshold_range``)
CHANGE_THRESHOLDS = frozenset({"first_block", "block_cache", "diffusers_first_block"})


class _Fit:
    """An Optuna-trial stand-in answering every ``suggest_*`` from a stored config, fitted into
    the distribution asked for."""

    def __init__(self, cfg, step_ratio: float, change_ratio: float):
        self.cfg, self.step_ratio, self.change_ratio, self.params = cfg, step_ratio, change_ratio, {}

    def _stored(self, name: str) -> Any:
        section, _, rest = name.partition(".")
        field, _, key = rest.partition(".")
        sec = getattr(self.cfg, section, None)
        if section == "parallel" and field == "mesh":
            return sec.describe() if sec is not None else None
        value = getattr(sec, field, None)
        if key:
            value = value.get(key) if isinstance(value, dict) else None
        if name in STEP_PARAMS and isinstance(value, int) and not isinstance(value, bool) and value > 0:
            value = max(1, round(value * self.step_ratio))
        elif name == "cache.threshold" and getattr(sec, "method", None) in CHANGE_THRESHOLDS and isinstance(value, (int, float)):
            value = value * self.change_ratio
        return value

    def suggest_categorical(self, name, choices):
        v, choices = self._stored(name), list(choices)
        if v not in choices:
            numbers = [c for c in choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
            if isinstance(v, (int, float)) and not isinstance(v, bool) and numbers and v:
                v = min(numbers, key=lambda c: (abs(c - v), c))  # a count of steps or blocks: the nearest
            else:
                v = choices[0]
        self.params[name] = v
        return v

    def suggest_int(self, name, low, high, step=1, log=False):
        v = self._stored(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            v = low
        v = int(min(max(round(v), low), high))
        v = low + ((v - low) // (step or 1)) * (step or 1)
        self.params[name] = v
        return v

    def suggest_float(self, name, low, high, step=None, log=False):
        v = self._stored(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            v = math.sqrt(low * high) if log and low > 0 else (low + high) / 2
        v = float(min(max(v, low), high))
        if step:
            v = min(high, low + round((v - low) / step) * step)
        self.params[name] = v
        return v


def fit_point(config, family: str, space, step_ratio: float = 1.0, change_ratio: float | None = None) -> dict[str, Any] | None:
    """The new study's trial params nearest ``config`` (an AccelConfig); None when none fits.

    ``step_ratio``: the new workload's steps over the stored one's; ``change_ratio``: the new
    model's per-step change over the stored one's (None: the inverse step ratio)."""
    from ..accel.config import ConfigError
    from ..search_spaces import suggest

    fit = _Fit(config, step_ratio, change_ratio if change_ratio else 1.0 / step_ratio)
    try:
        cfg = suggest(fit, family, space)
    except (ConfigError, ValueError, TypeError):
        return None
    return None if cfg.is_neutral else fit.params


def over_pick(family: str, space) -> list[tuple[str, dict[str, Any]]]:
    """(section, its parameters) of the new study's first single-section preset of each section
    whose preset moves no quality knob (``Method.knob``): precision, compile, batched CFG calls,
    not a cache or sparse attention.

    A warm start lays these over the stored pick before the sampler starts. The pick is the point
    most likely to hold on the new model (its study confirmed it and checked it on held-out
    prompts), and what precision and compile add on top of it depends on the machine and the
    shapes, which are what a warm start changes. The new study's refinement lays them over its
    fastest point only, which on a new checkpoint is often a bolder setting that then misses the
    held-out check (a 5-minute demo-flux warm start: compile went over a 3.41x schedule that
    failed there, while the cold study's best was the stored pick's schedule with compile and
    bf16, found at its 28th trial)."""
    from ..accel import methods as reg
    from ..search_spaces import config_from_params, presets

    out: dict[str, dict[str, Any]] = {}
    for point in presets(family, space)[1:]:
        try:
            active = [name for name, text in config_from_params(point).summary() if text != "off"]
        except Exception:  # noqa: BLE001  (a plugin's preset that does not read back: not laid)
            continue
        if len(active) != 1 or active[0] in out:
            continue
        (section,) = active
        own = {k: v for k, v in point.items() if k.partition(".")[0] == section}
        try:
            sec = reg.section(section)
            method = reg.get_method(section, own.get(f"{section}.{sec.key}", sec.default) if sec.key else sec.default)
        except KeyError:  # a plugin's section or method no longer registered
            continue
        knob = method.knob
        if knob is not None and knob.param in own and own[knob.param] != knob.off:
            continue  # it trades quality for speed: laid over the pick it could miss the floor
        out[section] = own
    return list(out.items())


def lay_over(params: dict[str, Any] | None, laid: list[tuple[str, dict[str, Any]]]) -> dict[str, Any] | None:
    """``params`` with each of ``laid``'s sections that it leaves off set to that section's
    parameters (one that would conflict with its methods left out); None when none was laid."""
    from ..search_spaces import config_from_params

    if params is None:
        return None
    try:
        mine = {name for name, text in config_from_params(params).summary() if text != "off"}
    except Exception:  # noqa: BLE001
        return None
    point, added = dict(params), False
    for section, own in laid:
        if section in mine:
            continue
        trial = {k: v for k, v in point.items() if k.partition(".")[0] != section}
        trial.update(own)
        try:
            config_from_params(trial)
        except Exception:  # noqa: BLE001  (compile beside a method hooking the attention: left out)
            continue
        point, added = trial, True
    return point if added else None


def change_ratio(stored: Any, here: Any) -> float | None:
    """How far the first block's per-step change moved from the stored study to this one: the
    ratio of the geometric centres of their calibrated threshold ranges; None where either is
    unknown."""
    try:
        (lo0, hi0), (lo1, hi1) = stored, here
        r = math.sqrt((lo1 * hi1) / (lo0 * hi0))
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return r if math.isfinite(r) and r > 0 else None


def warm_points(url: str, info: dict, space, log: Callable[[str], None] = print) -> list[tuple[dict, dict]]:
    """(params, user_attrs) of the stored points to enqueue, exact model first; logs one line."""
    from sqlalchemy.exc import SQLAlchemyError

    from ..errors import UserError
    from ..search_spaces import config_from_params
    from ..store.core import ProfileStore

    model, hw = info["model"], info.get("hardware") or {}
    family = model["family"]
    try:
        st = ProfileStore(url)
        exact = st.candidates(fingerprint=model.get("fingerprint"))
        ids = {r.id for r in exact}
        kin = [r for r in st.candidates(family=family, device=hw.get("device"), device_name=hw.get("name")) if r.id not in ids]
    except (UserError, SQLAlchemyError) as e:
        # the model is loaded and the budget running: a store out of reach costs the warm start, not the study
        log(f"warm start: none, the store could not be read ({str(e).splitlines()[0][:200]}); starting cold")
        return []
    steps_here = (info.get("workload") or {}).get("generation", {}).get("num_inference_steps")
    laid = over_pick(family, space)
    out: list[tuple[dict, dict]] = []
    seen: list[dict] = []
    for stored in [r for r in exact if r.row["family"] == family] + kin:
        steps_there = stored.row["num_inference_steps"]
        ratio = steps_here / steps_there if steps_here and steps_there else 1.0
        prof = stored.profile()
        change = change_ratio(prof.study.get(CALIBRATION), getattr(space, "thresholds", None))
        # the pick first: confirmed and chosen there, it is the point most likely to hold here
        configs = [prof.accel]
        for p in stored.front:
            try:
                configs.append(config_from_params(p))
            except Exception:  # noqa: BLE001  (a point of a method not registered here)
                continue
        fitted = [fit_point(cfg, family, space, ratio, change) for cfg in configs]
        # right after the pick, the pick with the new study's presets of the sections it leaves
        # off laid over it (``over_pick``); a combination that misses is not walked back
        points = [(fitted[0], {}), (lay_over(fitted[0], laid), {"combined": True}), *((p, {}) for p in fitted[1:])]
        for point, extra in points:
            if point is not None and point not in seen:
                seen.append(point)
                out.append((point, {WARM: stored.id, **extra}))
        if len(out) >= MAX_POINTS:
            break
    out = out[:MAX_POINTS]
    n_exact = len({a[WARM] for _, a in out} & ids)
    log(f"warm start: {len(out)} point(s) from {len({a[WARM] for _, a in out})} stored profile(s) "
        f"({n_exact} of this model's weights, the others of family {family} on {hw.get('device')} {hw.get('name') or ''})".rstrip())
    return out


def warm_trials(study) -> list:
    """The trials that evaluated a warm-start point, each point once: a later trial of the same
    point (a preset equal to it, ``repeat_of``) copies its attributes and is not counted again."""
    return [t for t in study.get_trials(deepcopy=False) if WARM in t.user_attrs and "repeat_of" not in t.user_attrs]


def held(study) -> tuple[int, int]:
    """(warm-start points that met the floors, on the held-out prompts too where checked, and beat
    the baseline beyond noise, warm-start points run)."""
    from .pick import baseline_trial, completed, confirmations, failed_heldout, is_feasible, speed_of

    warm = warm_trials(study)
    conf, base, aside = confirmations(study), baseline_trial(study), failed_heldout(study)
    done = {t.number for t in completed(study)}
    good = [t for t in warm if t.number in done and is_feasible(t) and t.number not in aside
            and speed_of(t, conf, base).beyond_noise]
    return len(good), len(warm)


def summary(study) -> str | None:
    good, total = held(study)
    if not total:
        return None
    return (f"warm start: {good} of {total} point(s) held on this model (met the floors, faster than the baseline "
            "beyond noise; the stored points and the pick with presets laid over it)")


def front_params(study) -> list[dict[str, Any]]:
    """The trial params of the study's feasible front (not the baseline), fastest first."""
    from .pick import baseline_trial, confirmations, failed_heldout, is_feasible, is_neutral_point, speed_of

    conf, base = confirmations(study), baseline_trial(study)
    # a point that missed a floor on the held-out prompts is not handed on, nor any trial of its
    # parameters: a warm study would find it faster than the pick on its tuning prompts, lay its
    # presets over it and lose it at the same check (a 3.30x schedule set aside at the source was
    # the 5-minute warm study's fastest point on a second checkpoint, and missed there too)
    missed = failed_heldout(study)
    aside = [t.params for t in study.get_trials(deepcopy=False) if t.number in missed]
    front = [t for t in study.best_trials if is_feasible(t) and not is_neutral_point(t) and t.params not in aside]
    front.sort(key=lambda t: -(speed_of(t, conf, base).speedup or 0.0))
    out: list[dict[str, Any]] = []
    for t in front:
        if t.params not in out:
            out.append(dict(t.params))
    return out


def publish_study(url: str, study, profile, log: Callable[[str], None] = print, space=None) -> int | None:
    """``tune --publish``: the study's profile with its front, into the store at ``url`` -> the ID
    (None when the store could not take it: logged, the study's outputs stand). ``space``: the
    study's SpaceContext; its threshold range goes into the stored profile's ``study`` section."""
    import dataclasses

    from sqlalchemy.exc import SQLAlchemyError

    from ..errors import UserError
    from ..store.core import ProfileStore
    from ..store.db import redact

    thresholds = getattr(space, "thresholds", None)
    if thresholds:
        profile = dataclasses.replace(profile, study={**profile.study, CALIBRATION: [float(x) for x in thresholds]})
    try:
        pid, new = ProfileStore(url).publish(profile, front=front_params(study))
    except (UserError, SQLAlchemyError) as e:
        # the outputs are on disk already: say how to publish them later rather than fail the study
        log(f"publish: not published ({str(e).splitlines()[0][:200]}); the profile is in the run folder: "
            f"`mindiesd-tune publish RUN_DIR/profile.yaml --store URL` publishes it (without its front)")
        return None
    log(f"published: profile {pid} in {redact(url)}" + ("" if new else " (already there)"))
    return pid
