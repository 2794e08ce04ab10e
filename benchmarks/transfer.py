"""Does a stored front transfer to another workload? A cold study against a warm-started one.

1. source: a study of MODEL at --source-steps is published to a (temporary) profile store;
2. cold:   a study at --target-steps, from nothing (the presets, then the sampler);
3. warm:   the same study warm-started from the store (``TuneOptions.warm_start``): the stored
           front, fitted into the new space, runs right after the baseline.

Cold and warm get the same budget, floor, prompts and sampler seed. Printed side by side: trials
run, the best speed-up at the floor (confirmed where the study confirmed it), and the trials each
needed to reach the cold study's best confirmed speed-up at the floor (within --tolerance); for
the warm study also how many stored points held (met the floor, faster beyond noise).

Everything runs in this one process (``isolate=False``): the model is loaded once per study.

    nice -n 19 python benchmarks/transfer.py --budget 3m                  # demo-flux, 20 -> 28 steps
    python benchmarks/transfer.py --model tiny-flux-random --budget 6t   # a smoke run

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

from mindiesd_tune.models.prompts import DEMO_IMAGE_PROMPTS  # noqa: E402
from mindiesd_tune.store import ProfileStore  # noqa: E402
from mindiesd_tune.tuner import parse_budget, parse_floor, run_study  # noqa: E402
from mindiesd_tune.tuner.pick import baseline_trial, completed, confirmations, is_feasible, speed_of  # noqa: E402
from mindiesd_tune.tuner.warm import WARM, held  # noqa: E402


def study_figures(study, target: float | None, tolerance: float) -> dict:
    """Trials run, the best speed-up at the floor (confirmed first), trials to reach ``target``."""
    conf, base = confirmations(study), baseline_trial(study)
    trials = study.get_trials(deepcopy=False)
    feasible = sorted((t for t in completed(study) if is_feasible(t)), key=lambda t: t.number)
    speeds = {t.number: speed_of(t, conf, base) for t in feasible}
    confirmed = [s.speedup for s in speeds.values() if s.confirmed and s.speedup]
    best_any = max((s.speedup for s in speeds.values() if s.speedup), default=None)
    reach = None
    if target is not None:
        # trial numbers count every trial asked (the baseline, pruned ones): what a budget pays for
        reach = next((t.number + 1 for t in feasible if (speeds[t.number].speedup or 0.0) >= target * (1 - tolerance)), None)
    good, warm = held(study)
    return {
        "trials": len(trials),
        "feasible": len(feasible),
        "best_confirmed": max(confirmed, default=None),
        "best_any": best_any,
        "trials_to_target": reach,
        "warm_points": warm,
        "warm_held": good,
        "warm_numbers": [t.number for t in trials if WARM in t.user_attrs],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo-flux")
    ap.add_argument("--source-steps", type=int, default=20)
    ap.add_argument("--target-steps", type=int, default=28)
    ap.add_argument("--budget", default="3m", help="each study's budget (the three run one after the other)")
    ap.add_argument("--source-budget", default=None, help="the published study's budget (default --budget)")
    ap.add_argument("--floor", default="psnr>=30")
    ap.add_argument("--prompts", type=int, default=1, help="demo prompts per study (fewer buys more trials)")
    ap.add_argument("--tolerance", type=float, default=0.05, help="reached: within this share of the target")
    ap.add_argument("--store", default=None, help="profile store URL (default: a temporary SQLite file)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker-factory", default=None, help="module:callable instead of loading the model (smoke runs)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # enqueue notices of points the presets repeat

    floors = [parse_floor(args.floor)]
    prompts = list(DEMO_IMAGE_PROMPTS[: args.prompts])
    quiet_log: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mindiesd-transfer-") as d:
        url = args.store or f"sqlite:///{Path(d) / 'profiles.db'}"
        common = dict(floors=floors, prompts=prompts, seed=args.seed, isolate=False, progress=False,
                      worker_factory=args.worker_factory, log=quiet_log.append)

        def study(name, steps, budget, **extra):
            t0 = time.monotonic()
            out = run_study(args.model, parse_budget(budget), Path(d) / name,
                            generation={"num_inference_steps": steps}, **common, **extra)
            print(f"# {name}: {steps} steps, {budget}, {time.monotonic() - t0:.0f} s wall", file=sys.stderr, flush=True)
            return out

        source = study("source", args.source_steps, args.source_budget or args.budget, publish=url)
        stored = ProfileStore(url).list()
        cold = study("cold", args.target_steps, args.budget)
        warm = study("warm", args.target_steps, args.budget, warm_start=url)

    src = study_figures(source.study, None, args.tolerance)
    c0 = study_figures(cold.study, None, args.tolerance)
    target = c0["best_confirmed"] or c0["best_any"]
    c = study_figures(cold.study, target, args.tolerance)
    w = study_figures(warm.study, target, args.tolerance)
    rows = {"cold": c, "warm": w}
    if args.json:
        print(json.dumps({"model": args.model, "source_steps": args.source_steps, "target_steps": args.target_steps,
                          "budget": args.budget, "floor": args.floor, "target": target, "source": src,
                          "published_front": len(stored[-1].front) if stored else 0, **rows}, indent=2))
        return

    def fmt(v, spec="{:.2f}x"):
        return "-" if v is None else spec.format(v)

    print(f"{args.model}: source study at {args.source_steps} steps ({src['trials']} trials, best at the floor "
          f"{fmt(src['best_confirmed'] or src['best_any'])}) published "
          f"{len(stored[-1].front) if stored else 0} front point(s) + its profile")
    print(f"target workload: {args.target_steps} steps, budget {args.budget} each, floor {args.floor}, "
          f"{len(prompts)} prompt(s), seed {args.seed}")
    print(f"target speed-up: the cold study's best confirmed at the floor, {fmt(target)} (reached: within {args.tolerance:.0%})")
    print()
    print(f"{'':34} {'cold':>10} {'warm':>10}")
    for label, key, spec in [("trials run", "trials", "{}"), ("trials meeting the floor", "feasible", "{}"),
                             ("best confirmed speed-up", "best_confirmed", "{:.2f}x"),
                             ("best speed-up (any trial)", "best_any", "{:.2f}x"),
                             ("trials to reach the target", "trials_to_target", "{}"),
                             ("warm-start points run", "warm_points", "{}"),
                             ("warm-start points that held", "warm_held", "{}")]:
        print(f"{label:34} {fmt(c[key], spec):>10} {fmt(w[key], spec):>10}")
    if c["trials_to_target"] and w["trials_to_target"]:
        print(f"\nwarm reached the target in {w['trials_to_target']} trial(s), cold in {c['trials_to_target']} "
              f"({w['trials_to_target'] / c['trials_to_target']:.2f} of cold's)")
    elif c["trials_to_target"]:
        print(f"\nwarm did not reach the target within its budget; cold did in {c['trials_to_target']}")


if __name__ == "__main__":
    main()
