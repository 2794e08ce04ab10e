"""Parameter importances for the report: which knobs moved latency and quality."""

from __future__ import annotations

from typing import Any

import optuna

from .quiet import ignoring

# Below this many complete trials an importance is noise: PED-ANOVA compares the top quantile
# (a few trials) with the rest, and with fewer than ten a single trial flips the ranking.
# The report then says only how many trials there were.
MIN_TRIALS = 10


def param_importances(study: optuna.Study, objective: str, min_trials: int = MIN_TRIALS) -> dict[str, Any]:
    """Importances of the parameters for latency and for ``objective`` (PED-ANOVA).

    PED-ANOVA needs no extra dependency and handles the conditional space (a threshold
    exists only for a cache method that has one). It answers: which parameters decide
    whether a trial lands among the best ``quantile`` of trials for that target.
    Returns ``{"n_trials", "method", "importances": {target: {param: share}}, "note"}``;
    ``importances`` is empty, and ``note`` says why, when there are too few trials.
    """
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    params = {p for t in done for p in t.params}
    out: dict[str, Any] = {"n_trials": len(done), "method": "PED-ANOVA (optuna.importance)", "importances": {}, "note": ""}
    if len(done) < min_trials:
        out["note"] = f"needs at least {min_trials} complete trials; this study has {len(done)}"
        return out
    if not params:
        out["note"] = "no parameter was varied"
        return out
    quantile = min(0.5, max(0.1, 3 / len(done)))  # at least a few trials in the top group
    # PED-ANOVA ranks low values as good: a quality that should be high is negated
    sign = -1.0 if study.directions[1] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    targets = {"latency_s": lambda t: t.values[0], objective: lambda t: sign * t.values[1]}
    for name, target in targets.items():
        if len({target(t) for t in done}) < 2:
            continue  # the target never changed: no parameter explains anything
        try:
            with ignoring():
                imp = optuna.importance.get_param_importances(
                    study, target=target, evaluator=optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
                )
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            out["note"] = f"{name}: {type(e).__name__}: {e}"
            continue
        out["importances"][name] = {k: round(float(v), 4) for k, v in imp.items()}
    if not out["importances"] and not out["note"]:
        out["note"] = "neither latency nor quality varied across trials"
    return out
