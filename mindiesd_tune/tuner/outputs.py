"""The outputs phase: the pick frozen into profile.yaml, with trials.csv and report.html, all
from the stored study (so a killed study's outputs can be rebuilt from its storage)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import optuna

from ..accel.config import AccelConfig
from ..metrics import METRIC_DIRECTIONS
from ..profile import Profile
from ..search_spaces import config_from_params
from .pick import (
    HELDOUT,
    against_best_preset,
    baseline_trial,
    completed,
    confirmations,
    is_feasible,
    is_neutral_point,
    pick,
    speed_of,
)
from .storage import load_run


@dataclass
class StudyOutcome:
    study: optuna.Study
    out_dir: Path
    profile: Profile | None
    profile_path: Path | None
    report_path: Path
    table_path: Path
    interrupted: bool = False
    reason: str = ""
    stop_reason: str = ""  # why the study ended: a budget, an interrupt or an exhausted search space
    kept_path: Path | None = None  # the profile.yaml that was there before, moved aside
    against_preset: str | None = None  # the pick beside the best preset alone, both confirmed (pick.against_best_preset)


def write_outputs(study: optuna.Study, out_dir: Path, pick_how: str | None = None,
                  samples_dir: Path | None = None) -> StudyOutcome:
    """Pick the profile and write profile.yaml, trials.csv and report.html from the stored study.

    ``pick_how`` None re-picks the way the study last picked (stored as its ``pick`` attribute);
    a pick given is stored for the next time. A profile.yaml already in ``out_dir`` that differs
    from the new one is kept as profile.<n>.yaml.
    """
    from ..paths import keep_previous
    from ..reports import write_report, write_trials_table
    from .importance import param_importances
    from .table import trials_table

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if pick_how is None:
        pick_how = study.user_attrs.get("pick") or "fastest"
    chosen, reason = pick(study, pick_how)
    if study.user_attrs.get("pick") != pick_how:
        study.set_user_attr("pick", pick_how)
    profile = freeze_profile(study, chosen) if chosen is not None else None
    kept = profile_path = None
    if profile is not None:
        kept = keep_previous(out_dir / "profile.yaml", profile.to_yaml())
        profile_path = profile.save(out_dir / "profile.yaml")
    df = trials_table(study)
    table_path = write_trials_table(df, out_dir / "trials.csv", metrics=METRIC_DIRECTIONS)
    chosen_no = chosen.number if chosen is not None else None
    base = baseline_trial(study)
    against = against_best_preset(study, chosen)
    report_path = write_report(
        df, study.user_attrs, out_dir / "report.html", chosen_no, reason if against is None else f"{reason}; {against}",
        study.study_name, metrics=METRIC_DIRECTIONS,
        importances=param_importances(study, study.user_attrs.get("objective", "psnr")),
        baseline_no=base.number if base is not None else None, samples_dir=samples_dir,
        quality=quality_summary(study),
    )
    return StudyOutcome(study, out_dir, profile, profile_path, report_path, table_path, reason=reason,
                        stop_reason=study.user_attrs.get("stop_reason", ""), kept_path=kept, against_preset=against)


def quality_summary(study: optuna.Study) -> dict:
    """What the report's quality section shows: the front's per-prompt values, the held-out
    figures beside the tuning ones, and the cliffs along the front's knobs (``tuner.cliffs``)."""
    from .cliffs import front_cliffs

    attrs = study.user_attrs
    front = [t for t in study.best_trials if "latency_s" in t.user_attrs] if completed(study) else []
    held = attrs.get(HELDOUT) or {}
    objective = attrs.get("objective", "psnr")
    note = None
    if not (attrs.get("holdout") or {}).get("prompts"):
        note = "the study kept no prompts out of the search (--holdout 0)"
    elif not held:
        note = "the pick was not measured on the held-out prompts (no candidate to confirm, or no time left)"
    try:
        cliffs = front_cliffs(study, front, objective)
    except Exception as e:  # noqa: BLE001  (the report is written whatever a plugin's knob does)
        cliffs = {"cliffs": [], "distance": {}, "error": f"{type(e).__name__}: {e}"}
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    return {
        "per_prompt": {t.number: t.user_attrs.get("per_prompt") for t in front if t.user_attrs.get("per_prompt")},
        "tuning": {str(k): (trials[int(k)].user_attrs.get("metrics") or {}) for k in held if int(k) in trials},
        "heldout": held, "heldout_note": note, "cliffs": cliffs, "judged_on": attrs.get("judged_on"),
    }


def freeze_profile(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> Profile:
    attrs = study.user_attrs
    speed = speed_of(trial, confirmations(study), baseline_trial(study))
    metrics = trial.user_attrs.get("metrics", {})
    measured = {
        "latency_s": _round(speed.latency_s),
        "baseline_s": _round(speed.baseline_s),
        "speedup": _round(speed.speedup),
        "speedup_low": _round(speed.low),
        "speedup_high": _round(speed.high),
        "confirmed": speed.confirmed,
        "latency_iqr_s": _round(speed.latency_iqr_s),
        "baseline_iqr_s": _round(speed.baseline_iqr_s),
        "cpu_s": _round(speed.cpu_s),
        "baseline_cpu_s": _round(speed.baseline_cpu_s),
        **{k: _finite(v) for k, v in metrics.items()},
        "skipped_fraction": _round(trial.user_attrs.get("counters", {}).get("skipped_fraction")),
        # linear weights with their quantisation scales, every component (what --max-weight-bytes caps)
        "weight_bytes": trial.user_attrs.get("counters", {}).get("weight_bytes"),
        "feasible": is_feasible(trial),
        **_heldout_figures(attrs, trial),
    }
    workload = attrs.get("workload", {})
    generation = {"height": None, "width": None, "num_frames": None, **workload.get("generation", {})}
    accel = AccelConfig.from_dict(trial.user_attrs["config"]) if "config" in trial.user_attrs else config_from_params(trial.params)
    return Profile(
        model=dict(attrs["model"]),
        generation=generation,
        accel=accel,
        measured=measured,
        # the picked call's ranks, not the study's group: a single-device pick deploys on one device
        hardware={**attrs.get("hardware", {}), "world_size": accel.parallel.world_size},
        study={
            "name": study.study_name,
            "trial": trial.number,
            "storage": attrs.get("storage"),
            "created": attrs.get("created"),
            "prompts": workload.get("prompts"),
            "seeds": workload.get("seeds"),
            # what the trial was picked under: the same trial can be the pick of one floor and not another
            "objective": attrs.get("objective"),
            "floors": list(attrs.get("floors") or []),
            "pick": attrs.get("pick"),
            # a floor on a mean: judged on its confidence bound or on the mean (mindiesd_tune.quality)
            "judged_on": attrs.get("judged_on"),
            "heldout_prompts": (attrs.get("holdout") or {}).get("prompts"),
        },
    )


def _heldout_figures(attrs: dict, trial: optuna.trial.FrozenTrial) -> dict:
    """The pick's quality on the held-out prompts, beside its tuning figures: ``heldout.psnr``,
    ``heldout.psnr.min``, ..., how many prompts, and whether the floors held there. A study
    with held-out prompts whose pick was not measured on them says so (``heldout.measured``)."""
    if not (attrs.get("holdout") or {}).get("prompts") or is_neutral_point(trial):
        return {}
    held = (attrs.get(HELDOUT) or {}).get(str(trial.number))
    if not held:
        return {"heldout.measured": False}
    return {"heldout.measured": True, "heldout.prompts": held.get("prompts"), "heldout.meets_floors": held.get("meets"),
            **{f"heldout.{k}": _finite(v) for k, v in (held.get("metrics") or {}).items()}}


def _finite(v):
    if isinstance(v, float) and math.isinf(v):
        return "inf"  # identical to the baseline
    return _round(v)


def _round(v, digits: int = 6):
    # significant digits, not decimals: a 1 ms GPU call keeps the precision of a 10 s CPU one
    return None if v is None else float(f"{float(v):.{digits}g}")


def _save_sample(path: Path, arr) -> None:
    from PIL import Image

    if arr.ndim == 4:  # video: frames side by side, and an animated WebP the report can play
        frames = [Image.fromarray(f) for f in arr]
        frames[0].save(path.with_suffix(".webp"), save_all=True, append_images=frames[1:], duration=125, loop=0, lossless=True)
        arr = arr.transpose(1, 0, 2, 3).reshape(arr.shape[1], -1, arr.shape[3])
    Image.fromarray(arr).save(path)


def export(run_dir: str | Path, pick_how: str | None = None, storage: str | None = None,
           out_dir: str | Path | None = None) -> StudyOutcome:
    """Re-pick the profile of a finished run without running anything (``pick_how`` None: the
    study's own pick); the outputs go to ``out_dir`` (default the run folder)."""
    run_dir = Path(run_dir)
    return write_outputs(load_run(run_dir, storage), Path(out_dir) if out_dir is not None else run_dir, pick_how,
                         samples_dir=run_dir / "samples")
