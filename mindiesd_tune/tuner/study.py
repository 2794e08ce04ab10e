"""The study driver: Optuna asks for a config, the evaluator scores it, the profile is frozen at the end."""

from __future__ import annotations

import datetime as _dt
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna

from ..errors import UserError
from ..kernels import hardware_info
from ..metrics import HIGHER_IS_BETTER
from ..profile import Profile, model_fingerprint
from ..search_spaces import config_from_params, presets, suggest
from .budget import Budget
from .evaluator import DEFAULT_PROMPTS, DEFAULT_VIDEO_PROMPTS, Evaluator, Workload, to_uint8
from .select import QualityFloor, baseline_trial, pick_fastest, trial_summary

# Identical outputs have infinite PSNR; Optuna wants finite objective values.
PSNR_CAP = 100.0
STUDY_DB = "study.db"


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


def storage_url(out_dir: Path) -> str:
    return f"sqlite:///{(out_dir / STUDY_DB).resolve()}"


def default_out_dir(model: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{Path(model).name}-{stamp}"


def run_study(
    model: str,
    budget: Budget,
    out_dir: str | Path | None = None,
    *,
    objective: str = "psnr",
    floors: list[QualityFloor] | None = None,
    prompts: list[str] | None = None,
    seed: int = 0,
    device: str | None = None,
    dtype: str | None = None,
    warmup: int = 1,
    repeats: int = 3,
    resume: bool = False,
    allow_download: bool = False,
    log: Callable[[str], None] = print,
) -> StudyOutcome:
    """Tune ``model`` within ``budget``; write profile.yaml, report.html and trials.csv to ``out_dir``."""
    from ..models import load

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if objective not in HIGHER_IS_BETTER:
        raise UserError(f"unknown objective {objective!r} (known: {', '.join(HIGHER_IS_BETTER)})")
    floors = list(floors) if floors is not None else []
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(model)
    db = out_dir / STUDY_DB
    if db.exists() and not resume:
        raise UserError(f"{out_dir} already holds a study; pass --resume to continue it or choose another --out")
    if resume and not db.exists():
        raise UserError(f"{out_dir} holds no study to resume")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    log(f"loading {model} ...")
    loaded = load(model, device=device, dtype=dtype, allow_download=allow_download)
    default_prompts = DEFAULT_VIDEO_PROMPTS if loaded.is_video else DEFAULT_PROMPTS
    prompts = list(prompts) if prompts else list(default_prompts)
    workload = Workload(prompts, [seed + i for i in range(len(prompts))], dict(loaded.generation))
    evaluator = Evaluator(loaded, workload, warmup=warmup, repeats=repeats)

    # multivariate TPE with groups handles the conditional space; Optuna flags both as experimental
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = optuna.create_study(
        study_name=Path(model).name,
        storage=storage_url(out_dir),
        directions=["minimize", "maximize"],
        sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True),
        load_if_exists=resume,
    )
    if not study.user_attrs:
        meta = {
            "model": {
                "name": loaded.name,
                "family": loaded.family,
                "pipeline": type(loaded.pipe).__name__,
                "fingerprint": model_fingerprint(loaded.pipe),
            },
            "workload": {"prompts": workload.prompts, "seeds": workload.seeds, "generation": workload.generation},
            "objective": objective,
            "floors": [str(f) for f in floors],
            "hardware": hardware_info(evaluator.device),
            "budget": str(budget),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "latency": {"warmup": warmup, "repeats": repeats},
        }
        for key, value in meta.items():
            study.set_user_attr(key, value)
    if not study.trials:
        for params in presets(loaded.family):  # the baseline is always trial 0
            study.enqueue_trial(params, skip_if_exists=True)

    log("computing the baseline outputs ...")
    _ = evaluator.baseline
    samples = out_dir / "samples"
    samples.mkdir(exist_ok=True)

    def objective_fn(trial: optuna.Trial) -> tuple[float, float]:
        try:
            config = suggest(trial, loaded.family)
            earlier = _same_params(study, trial)
            if earlier is not None:  # a sampler may propose a point again; don't pay for it twice
                for key, value in earlier.user_attrs.items():
                    trial.set_user_attr(key, value)
                trial.set_user_attr("repeat_of", earlier.number)
                return tuple(earlier.values)
            result = evaluator.evaluate(config)
            if result.has_nan:
                raise FloatingPointError("the output contains NaN or inf")
        except Exception as e:
            trial.set_user_attr("fail_reason", f"{type(e).__name__}: {_first_line(e)}")
            raise
        trial.set_user_attr("latency_s", result.latency.median_s)
        trial.set_user_attr("latency", result.latency.as_dict())
        trial.set_user_attr("metrics", result.metrics)
        trial.set_user_attr("counters", result.counters)
        trial.set_user_attr("config", config.to_dict())
        _save_sample(samples / f"trial-{trial.number:04d}.png", result.outputs[0])
        quality = result.metrics[objective]
        if objective == "psnr":
            quality = min(quality, PSNR_CAP)
        return result.latency.median_s, quality

    def report_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        log(_trial_line(study, trial))

    remaining = None if budget.seconds is None else max(1.0, budget.seconds - (time.monotonic() - started))
    interrupted = False
    log(f"tuning for {budget} ...")
    try:
        study.optimize(
            objective_fn,
            n_trials=budget.trials,
            timeout=remaining,
            catch=(Exception,),
            callbacks=[report_trial],
            gc_after_trial=False,
        )
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: keeping the finished trials and writing the outputs")
    outcome = write_outputs(study, out_dir, floors)
    outcome.interrupted = interrupted
    return outcome


def _same_params(study: optuna.Study, trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if t.number != trial.number and t.params == trial.params and "repeat_of" not in t.user_attrs:
            return t
    return None


def write_outputs(study: optuna.Study, out_dir: Path, floors: list[QualityFloor] | None = None) -> StudyOutcome:
    """Pick the profile and write profile.yaml, trials.csv and report.html from the stored study."""
    from ..reports import write_report, write_trials_csv
    from .select import parse_floor
    from .table import trials_table

    if floors is None:
        floors = [parse_floor(f) for f in study.user_attrs.get("floors", [])]
    chosen, reason = pick_fastest(study, floors)
    profile = freeze_profile(study, chosen, out_dir) if chosen is not None else None
    profile_path = profile.save(out_dir / "profile.yaml") if profile is not None else None
    df = trials_table(study, floors)
    table_path = write_trials_csv(df, out_dir / "trials.csv")
    chosen_no = chosen.number if chosen is not None else None
    report_path = write_report(df, study.user_attrs, out_dir / "report.html", chosen_no, reason, study.study_name)
    return StudyOutcome(study, out_dir, profile, profile_path, report_path, table_path, reason=reason)


def freeze_profile(study: optuna.Study, trial: optuna.trial.FrozenTrial, out_dir: Path) -> Profile:
    attrs = study.user_attrs
    base = baseline_trial(study)
    summary = trial_summary(trial, base)
    metrics = trial.user_attrs.get("metrics", {})
    measured = {
        "latency_s": _round(summary["latency_s"]),
        "baseline_s": _round(summary["baseline_s"]),
        "speedup": _round(summary["speedup"], 3),
        **{k: _finite(v) for k, v in metrics.items()},
        "skipped_fraction": _round(trial.user_attrs.get("counters", {}).get("skipped_fraction"), 4),
    }
    workload = attrs.get("workload", {})
    generation = {"height": None, "width": None, "num_frames": None, **workload.get("generation", {})}
    return Profile(
        model=dict(attrs["model"]),
        generation=generation,
        accel=config_from_params(trial.params),
        measured=measured,
        hardware=dict(attrs.get("hardware", {})),
        study={
            "name": study.study_name,
            "trial": trial.number,
            "storage": storage_url(out_dir),
            "created": attrs.get("created"),
            "prompts": workload.get("prompts"),
            "seeds": workload.get("seeds"),
        },
    )


def _finite(v):
    if isinstance(v, float) and math.isinf(v):
        return "inf"  # identical to the baseline; YAML readers agree on this spelling
    return _round(v)


def _round(v, digits: int = 5):
    return None if v is None else round(float(v), digits)


def _save_sample(path: Path, output) -> None:
    from PIL import Image

    arr = to_uint8(output)
    if arr.ndim == 4:  # video: frames side by side
        arr = arr.transpose(1, 0, 2, 3).reshape(arr.shape[1], -1, arr.shape[3])
    Image.fromarray(arr).save(path)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


def _trial_line(study: optuna.Study, t: optuna.trial.FrozenTrial) -> str:
    params = ", ".join(f"{k.split('.', 1)[1]}={_fmt(v)}" for k, v in t.params.items()) or "baseline"
    if t.state == optuna.trial.TrialState.COMPLETE:
        base = baseline_trial(study)
        s = trial_summary(t, base)
        m = t.user_attrs.get("metrics", {})
        speed = f"{s['speedup']:.2f}x" if s["speedup"] else "-"
        quality = "  ".join(f"{k} {v:.3g}" for k, v in m.items())
        return f"trial {t.number:3d}  {s['latency_s']:.3f}s  {speed:>6}  {quality}  [{params}]"
    reason = t.user_attrs.get("fail_reason", t.state.name.lower())
    return f"trial {t.number:3d}  {t.state.name.lower()}: {reason}  [{params}]"


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def load_run(run_dir: str | Path) -> optuna.Study:
    """The study stored in a run folder."""
    run_dir = Path(run_dir)
    if not (run_dir / STUDY_DB).is_file():
        raise UserError(f"{run_dir}: no {STUDY_DB} here; is this a run folder written by `tune`?")
    storage = storage_url(run_dir)
    names = optuna.study.get_all_study_names(storage)
    if len(names) != 1:
        raise UserError(f"{run_dir}: expected one study in {STUDY_DB}, found {len(names)}")
    return optuna.load_study(study_name=names[0], storage=storage)
