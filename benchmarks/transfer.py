"""Does a stored front transfer to another workload, or another checkpoint? Cold studies against warm-started ones.

1. source: a study of MODEL at --source-steps is published to a (temporary) profile store;
2. for each target (--targets):
   - ``steps``: MODEL at --target-steps (another workload of the same weights);
   - ``checkpoint``: a second checkpoint of MODEL's architecture at --source-steps (the same
     workload, other weights): --target-checkpoint, a diffusers folder, or by default demo-flux
     fine-tuned here, into the temporary folder, for --finetune-steps on another seed's data and
     noise (``training.flux.finetune``; nothing is added to the package);
   a cold study (the presets, then the sampler) and the same study warm-started from the store
   (``TuneOptions.warm_start``: the stored points, fitted into the new space, right after the
   baseline).

Cold and warm get the same budget, floor, prompts and sampler seed. Printed side by side per
target: trials run, the best speed-up at the floor (confirmed where the study confirmed it), and
the trials each needed to reach the cold study's best confirmed speed-up at the floor (within
--tolerance, or the cold study's best point itself, timed again; only a point that held on the
held-out prompts reaches it: a trial that would reach it and that its study never checked there
is checked by this benchmark, outside the studies' budgets, ``check_reaching``), counted two ways: every trial asked (the unaccelerated trial 0 included: what a
budget pays for) and the accelerated trials only (trial 0, the same in both, left out); for the
warm study also how many stored points held (met the floor, faster beyond noise) and each warm
point's figures.

Everything runs in this one process (``isolate=False``): the model is loaded once per study.

    nice -n 19 python benchmarks/transfer.py --budget 4m --targets steps,checkpoint
    python benchmarks/transfer.py --model tiny-flux-random --budget 6t --targets steps   # a smoke run

Timings come from the machine as it is: on a shared machine they are noisy, and a short budget
buys few trials; the trial counts, not the speed-ups, are what this compares.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mindiesd_tune.accel.config import AccelConfig  # noqa: E402
from mindiesd_tune.models.prompts import DEMO_IMAGE_PROMPTS  # noqa: E402
from mindiesd_tune.search_spaces import config_from_params  # noqa: E402
from mindiesd_tune.store import ProfileStore  # noqa: E402
from mindiesd_tune.tuner import parse_budget, parse_floor, run_study  # noqa: E402
from mindiesd_tune.tuner.pick import (  # noqa: E402
    HELDOUT,
    baseline_trial,
    completed,
    confirmations,
    failed_heldout,
    is_feasible,
    speed_of,
)
from mindiesd_tune.tuner.warm import held, warm_trials  # noqa: E402


def _reaches(t, speeds: dict, target: float, tolerance: float, same: str | None) -> str | None:
    """How trial ``t`` reaches the target ("speed", "same point"); None when it does not or is not
    at the floor (not in ``speeds``)."""
    s = speeds.get(t.number)
    if s is None:
        return None
    if (s.speedup or 0.0) >= target * (1 - tolerance):
        return "speed"
    return "same point" if same is not None and t.user_attrs.get("config_id") == same else None


def reach(trials_by_number: list, speeds: dict, target: float, tolerance: float,
          same: str | None = None) -> tuple[int | None, int | None, str | None]:
    """(trials asked, accelerated trials asked, how) up to the first feasible one within
    ``tolerance`` of ``target``, or that is the target's own point (``same``: the cold study's
    best point's ``config_id``): the same configuration timed again is the same point, whatever
    its reading (on the checkpoint target the warm study's first point was the cold study's best
    one, confirmed at 2.73x [2.63-2.84] against 2.88x [2.66-3.27]). (None, None, None) when none
    reached it. Trial 0 is the unaccelerated baseline."""
    for t in trials_by_number:
        how = _reaches(t, speeds, target, tolerance, same)
        if how is not None:
            return t.number + 1, t.number, how
    return None, None, None


def describe(config) -> str:
    """An AccelConfig (or its dict) in one line: its sections that are not off."""
    try:
        cfg = AccelConfig.from_dict(config) if isinstance(config, dict) else config
        return "; ".join(text for _, text in cfg.summary() if text != "off") or "the baseline"
    except Exception:  # noqa: BLE001  (a display only)
        return str(config)




def check_reaching(study, target: float, tolerance: float, same: str | None, evaluator, most: int = 4) -> dict[int, bool]:
    """Held-out checks, by this benchmark and outside the study's budget, of the trials that would
    reach ``target`` but that the study never measured on its held-out prompts -> {trial: meets}.

    A study checks only the points near its own front: a warm study whose best point is 4.5x
    never checks its 3.2x stored pick, which may be the trial that reached a cold study's 3.3x.
    Without a check such a trial cannot count (nothing says it holds there), so the counts would
    follow what each study happened to check. Each candidate, in trial order, is measured on the
    study's held-out prompts and seeds as its own check would (``Evaluator.heldout``, floors judged
    on their own aggregate) until one meets the floors or ``most`` were measured."""
    from mindiesd_tune.tuner.objectives import Constraints

    conf, base = confirmations(study), baseline_trial(study)
    checked = study.user_attrs.get(HELDOUT) or {}
    verdict = {t.user_attrs.get("config_id"): bool(checked[str(t.number)].get("meets"))
               for t in study.get_trials(deepcopy=False) if str(t.number) in checked}
    aside = failed_heldout(study)
    feasible = sorted((t for t in completed(study) if is_feasible(t) and t.number not in aside), key=lambda t: t.number)
    speeds = {t.number: speed_of(t, conf, base) for t in feasible}
    floors = Constraints.from_spec({"floors": study.user_attrs.get("floors") or [], "judge": "mean"})
    baseline = study.user_attrs.get("baseline_metrics") or {}
    out: dict[int, bool] = {}
    for t in feasible:
        if len(out) >= most or not _reaches(t, speeds, target, tolerance, same):
            continue
        known = verdict.get(t.user_attrs.get("config_id"))
        if known is not None:  # the study checked its point: the figures read the study's own verdict
            if known:
                break
            continue
        config = t.user_attrs.get("config") or config_from_params(t.params).to_dict()
        metrics = evaluator.heldout(AccelConfig.from_dict(config))["metrics"]
        out[t.number] = floors.meets(metrics, baseline)
        if out[t.number]:
            break
    return out


def heldout_evaluator(model: str, study):
    """An Evaluator for ``study``'s model, workload and held-out prompts (its ``heldout`` computes
    the baseline's outputs on them once)."""
    from mindiesd_tune.models import load
    from mindiesd_tune.tuner.evaluator import Evaluator, Workload

    w, h = study.user_attrs["workload"], study.user_attrs["holdout"]
    loaded = load(model, device="cpu", seed=0)
    return Evaluator(loaded, Workload(list(w["prompts"]), list(w["seeds"]), dict(w["generation"])),
                     holdout=Workload(list(h["prompts"]), list(h["seeds"]), dict(w["generation"])))


def study_figures(study, target: float | None, tolerance: float, same: str | None = None,
                  extra: dict[int, bool] | None = None) -> dict:
    """Trials run, the best speed-up at the floor (confirmed first) and its point's ``config_id``,
    trials to reach ``target`` (or the point ``same``). ``extra``: held-out verdicts by this
    benchmark (``check_reaching``), beside the study's own."""
    conf, base = confirmations(study), baseline_trial(study)
    trials = study.get_trials(deepcopy=False)
    extra = extra or {}
    # at the floor: on the tuning prompts, and on the held-out ones where the study (or this
    # benchmark) checked
    aside = failed_heldout(study) | {n for n, ok in extra.items() if not ok}
    # a later trial of a point set aside (``repeat_of``) is that point, set aside too
    aside |= {t.number for t in trials if t.user_attrs.get("repeat_of") in aside}
    feasible = sorted((t for t in completed(study) if is_feasible(t) and t.number not in aside), key=lambda t: t.number)
    speeds = {t.number: speed_of(t, conf, base) for t in feasible}
    # reaching the target counts a point that held on the held-out prompts (at its first trial):
    # a point only the tuning prompts judged may be one the check would set aside (6 of 20
    # steps read 2.53x at 31.8 dB on demo-flux's one tuning prompt and 27.0 dB held out)
    checked = {k for k, v in (study.user_attrs.get(HELDOUT) or {}).items() if v.get("meets")}
    checked |= {str(n) for n, ok in extra.items() if ok}
    if study.user_attrs.get("holdout"):
        held_ids = {t.user_attrs.get("config_id") for t in trials if str(t.number) in checked}
        reaching = [t for t in feasible if str(t.number) in checked or
                    (t.user_attrs.get("config_id") is not None and t.user_attrs.get("config_id") in held_ids)]
    else:
        reaching = feasible
    confirmed = [s.speedup for s in speeds.values() if s.confirmed and s.speedup]
    best_any = max((s.speedup for s in speeds.values() if s.speedup), default=None)
    asked, accelerated, how = reach(reaching, speeds, target, tolerance, same) if target is not None else (None, None, None)
    best = max((t for t in feasible if speeds[t.number].speedup), default=None,
               key=lambda t: (bool(speeds[t.number].confirmed), speeds[t.number].speedup))
    good, warm = held(study)
    done = {t.number for t in completed(study)}
    warm_rows = []
    for t in warm_trials(study):
        s = speed_of(t, conf, base) if t.number in done else None
        warm_rows.append({"trial": t.number, "point": describe(t.user_attrs.get("config") or {}), "state": t.state.name,
                          "feasible": t.number in speeds, "aside": t.number in aside,
                          "speedup": s.speedup if s else None,
                          "confirmed": bool(s and s.confirmed),
                          "psnr": (t.user_attrs.get("metrics") or {}).get("psnr"),
                          # a screen is pruned for missing a floor or for ranking below a faster,
                          # better point: the verdict printed is its own
                          "pruned": t.user_attrs.get("prune_reason") if t.state.name == "PRUNED" else None})
    return {
        "trials": len(trials),
        "feasible": len(feasible),
        "best_confirmed": max(confirmed, default=None),
        "best_any": best_any,
        "best_config": best.user_attrs.get("config_id") if best is not None else None,
        "trials_to_target": asked,
        "accelerated_to_target": accelerated,
        "reached_by": how,
        "warm_points": warm,
        "warm_held": good,
        "checked_here": len(extra),
        "warm": warm_rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo-flux")
    ap.add_argument("--source-steps", type=int, default=20)
    ap.add_argument("--target-steps", type=int, default=28)
    ap.add_argument("--targets", default="steps", help="comma-separated: steps, checkpoint")
    ap.add_argument("--target-checkpoint", default=None,
                    help="the checkpoint target's diffusers folder (default: demo-flux fine-tuned here)")
    ap.add_argument("--finetune-steps", type=int, default=150, help="the fine-tune's optimiser steps")
    ap.add_argument("--finetune-seed", type=int, default=1, help="the fine-tune's data and noise seed (demo-flux's was 0)")
    ap.add_argument("--budget", default="3m", help="each study's budget (they run one after the other)")
    ap.add_argument("--source-budget", default=None, help="the published study's budget (default --budget)")
    ap.add_argument("--floor", default="psnr>=30")
    ap.add_argument("--prompts", type=int, default=1, help="demo prompts per study (fewer buys more trials)")
    ap.add_argument("--tolerance", type=float, default=0.05, help="reached: within this share of the target")
    ap.add_argument("--store", default=None, help="profile store URL (default: a temporary SQLite file)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker-factory", default=None, help="module:callable instead of loading the model (smoke runs)")
    ap.add_argument("--keep", default=None, help="a folder to keep the studies' run folders and logs in (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets or set(targets) - {"steps", "checkpoint"}:
        ap.error(f"--targets: steps and/or checkpoint, not {args.targets!r}")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # enqueue notices of points the presets repeat

    floors = [parse_floor(args.floor)]
    prompts = list(DEMO_IMAGE_PROMPTS[: args.prompts])
    from mindiesd_tune.models import registry

    # a checkpoint loaded from a folder gets the pipeline's call defaults: run it as the built-in runs
    generation = next((dict(b.generation) for b in registry.builtins() if b.name == args.model), {})
    # and with the built-in's held-out prompts: from a folder a checkpoint counts as another model,
    # whose held-out prompts would be 2 of the varied set, words a demo model never learned (every
    # point read 12 dB on them, and the cold and warm picks were the mildest points)
    from mindiesd_tune.models.prompts import split_prompts

    builtin = any(b.name == args.model for b in registry.builtins())
    holdout = split_prompts(True, False, prompts, "auto")[1] if builtin else "auto"
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="mindiesd-transfer-") as tmp:
        d = Path(args.keep or tmp)
        d.mkdir(parents=True, exist_ok=True)
        url = args.store or f"sqlite:///{d / 'profiles.db'}"

        def study(name, model, steps, budget, **extra):
            log: list[str] = []
            t0 = time.monotonic()
            out = run_study(model, parse_budget(budget), d / name, generation={**generation, "num_inference_steps": steps},
                            floors=floors, prompts=prompts, holdout=holdout, seed=args.seed, isolate=False, progress=False,
                            worker_factory=args.worker_factory, log=log.append, **extra)
            (d / f"{name}.log").write_text("\n".join(log) + "\n")
            print(f"# {name}: {steps} steps, {budget}, {time.monotonic() - t0:.0f} s wall", file=sys.stderr, flush=True)
            return out

        source = study("source", args.model, args.source_steps, args.source_budget or args.budget, publish=url)
        stored = ProfileStore(url).list()
        if not stored:
            sys.exit("the source study published nothing (no profile: see source.log); nothing to transfer")
        src = study_figures(source.study, None, args.tolerance)
        src["published_front"] = len(stored[-1].front)
        src["pick"] = describe(stored[-1].profile().accel)
        if not args.json:
            print_source(args, src, len(prompts))
        if stored[-1].profile().accel.is_neutral and not stored[-1].front:
            # a warm study would start exactly as the cold one: the comparison would measure nothing
            sys.exit("the source study found nothing faster than the baseline at the floor (its pick is the "
                     "baseline, its front empty; see source.log): nothing to transfer; a longer --source-budget may")
        for target in targets:
            model, steps, what = args.model, args.target_steps, f"{args.model} at {args.target_steps} steps"
            info: dict = {}
            if target == "checkpoint":
                steps = args.source_steps
                model = args.target_checkpoint
                if model is None:
                    from mindiesd_tune.training.flux import finetune

                    t0 = time.monotonic()
                    info = finetune(d / "checkpoint", args.finetune_steps, seed=args.finetune_seed)
                    model = str(d / "checkpoint" / "pipeline")
                    print(f"# checkpoint: fine-tuned {info['steps_done']} steps, {time.monotonic() - t0:.0f} s wall",
                          file=sys.stderr, flush=True)
                what = f"a second checkpoint at {steps} steps ({model})"
            cold = study(f"{target}-cold", model, steps, args.budget)
            warm = study(f"{target}-warm", model, steps, args.budget, warm_start=url)
            c0 = study_figures(cold.study, None, args.tolerance)
            goal = c0["best_confirmed"] or c0["best_any"]
            same = c0["best_config"]
            extra: dict = {"cold": {}, "warm": {}}
            if goal and args.worker_factory is None and cold.study.user_attrs.get("holdout"):
                ev = heldout_evaluator(model, cold.study)  # cold and warm share the model, workload and prompts
                for name, st in (("cold", cold.study), ("warm", warm.study)):
                    extra[name] = check_reaching(st, goal, args.tolerance, same, ev)
                del ev
            results[target] = {"what": what, "target": goal,
                               "cold": study_figures(cold.study, goal, args.tolerance, same, extra["cold"]),
                               "warm": study_figures(warm.study, goal, args.tolerance, same, extra["warm"]),
                               "checkpoint": {k: info[k] for k in ("steps_done", "relative_change", "final_loss") if k in info}}
            if not args.json:
                print_target(args, target, results[target])  # as each ends: a long run shows what it has
    if args.json:
        print(json.dumps({"model": args.model, "source_steps": args.source_steps, "budget": args.budget,
                          "floor": args.floor, "source": src, **results}, indent=2, default=str))


def fmt(v, spec="{:.2f}x"):
    return "-" if v is None else spec.format(v)


def print_source(args, src, n_prompts) -> None:
    print(f"{args.model}: source study at {args.source_steps} steps ({src['trials']} trials, best at the floor "
          f"{fmt(src['best_confirmed'] or src['best_any'])}) published {src['published_front']} front point(s) + its profile")
    print(f"its pick: {src['pick']}")
    print(f"budget {args.budget} per study, floor {args.floor}, {n_prompts} prompt(s), seed {args.seed}; "
          f"reached: within {args.tolerance:.0%} of the cold study's best confirmed speed-up at the floor", flush=True)


def print_target(args, target, r) -> None:
    c, w = r["cold"], r["warm"]
    print(f"\n## {target}: {r['what']}")
    if r["checkpoint"]:
        ck = r["checkpoint"]
        print(f"fine-tune: {ck.get('steps_done')} steps, seed {args.finetune_seed}, weights moved "
              f"{fmt(ck.get('relative_change'), '{:.2%}')} (relative L2), last loss {fmt(ck.get('final_loss'), '{:.4f}')}")
    print(f"target: {fmt(r['target'])}\n")
    print(f"{'':44} {'cold':>8} {'warm':>8}")
    for label, key, spec in [("trials run", "trials", "{}"), ("trials meeting the floor", "feasible", "{}"),
                             ("best confirmed speed-up", "best_confirmed", "{:.2f}x"),
                             ("best speed-up (any trial)", "best_any", "{:.2f}x"),
                             ("trials to reach the target (with trial 0)", "trials_to_target", "{}"),
                             ("accelerated trials to reach it (without)", "accelerated_to_target", "{}"),
                             ("held-out checks by this benchmark", "checked_here", "{}"),
                             ("warm-start points run", "warm_points", "{}"),
                             ("warm-start points that held", "warm_held", "{}")]:
        print(f"{label:44} {fmt(c[key], spec):>8} {fmt(w[key], spec):>8}")
    for row in w["warm"]:
        if row.get("pruned"):
            verdict = f"pruned ({row['pruned']})"
        else:
            verdict = f"{'meets' if row['feasible'] else 'misses'} the floor{' on the held-out prompts' if row.get('aside') else ''}"
        print(f"  warm trial {row['trial']:>2}: {fmt(row['speedup'])}{' confirmed' if row['confirmed'] else ''}, "
              f"psnr {fmt(row['psnr'], '{:.1f}')}, {verdict} [{row['state'].lower()}]: {row['point']}")
    if c["trials_to_target"] and w["trials_to_target"]:
        how = " (by its point: the cold study's best point itself)" if w["reached_by"] == "same point" else ""
        print(f"warm reached the target{how} in {w['trials_to_target']} trial(s), cold in {c['trials_to_target']} "
              f"({w['trials_to_target'] / c['trials_to_target']:.2f} of cold's); without trial 0: "
              f"{w['accelerated_to_target']} against {c['accelerated_to_target']} "
              f"({w['accelerated_to_target'] / max(c['accelerated_to_target'], 1):.2f})")
    elif c["trials_to_target"]:
        print(f"warm did not reach the target within its budget; cold did in {c['trials_to_target']}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
