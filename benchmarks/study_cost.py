"""What a study budget buys: screening against full-fidelity trials in the same budget, and a
short study's pick against a long one's.

    python benchmarks/study_cost.py --height 256 --width 256 --budget 4m      # screening on vs off
    python benchmarks/study_cost.py --budgets 5m 20m                          # short vs long pick

The first form runs ``tune`` on the model twice in this process, with screening and with every
trial timed in full (``--no-screening``), each with the same budget and floor, and prints for
each: the wall time from the end of loading to the outputs on disk (against the budget and its
5% grace), the trials screened, pruned, timed in full and confirmed, and how many
accelerated configurations were evaluated (screened or timed in full; the unaccelerated point, timed
against itself the same way in both, is not counted).

The second form runs one study per budget (screening on) and then times each pick against the
baseline on held-out prompts, as ``benchmarks/peers.py --profile`` does (its ``run_row``): the
short study's held-out speed-up as a share of the long one's.

Every study writes its run folder under ``--out`` (default a temporary folder) and uses no
baseline cache, so each one times its own baseline inside its budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mindiesd_tune.tuner import TuneOptions, parse_budget, parse_floor, run_study  # noqa: E402
from mindiesd_tune.tuner.progress import summary  # noqa: E402
from mindiesd_tune.tuner.trials import is_neutral_point  # noqa: E402

GRACE = 0.05  # the budget's promise: outputs on disk within it plus 5%


def one_study(model: str, budget: str, out: Path, floor: str, screening: bool, generation: dict,
              prompts: int | None = None) -> dict:
    """Run ``tune`` and return what it cost and what it did."""
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        print(f"  | {line}", file=sys.stderr, flush=True)

    b = parse_budget(budget)
    chosen = None
    if prompts:  # the model's own first N prompts (a demo model's captions), not its default count
        from mindiesd_tune.models import load
        from mindiesd_tune.models.prompts import default_prompts

        loaded = load(model, device="cpu")
        chosen = list(default_prompts(loaded.source == "builtin", loaded.is_video))[:prompts]
        del loaded
    opts = TuneOptions(floors=[parse_floor(floor)], screening=screening, generation=generation or None, prompts=chosen,
                       baseline_cache=None, progress=False, log=log)
    t0 = time.monotonic()
    outcome = run_study(model, b, out, opts)
    total = time.monotonic() - t0
    study = outcome.study
    timing = study.user_attrs.get("timing") or {}
    s = summary(study)
    wall = timing.get("wall_seconds")
    return {
        "budget": budget, "budget_s": b.seconds, "screening": screening, "out": str(out),
        "load_s": timing.get("load_seconds"), "wall_after_load_s": wall, "process_s": round(total, 1),
        "within_budget": wall is not None and b.seconds is not None and wall <= b.seconds * (1 + GRACE),
        "screened": s["screened"], "pruned": s["pruned"], "screened_out": s["screened_out"], "timed_in_full": s["full"],
        "confirmed": s["confirmed"],
        # an accelerated configuration the study looked at: screened, or timed in full (with or
        # without a screen); the unaccelerated point, the same A/A timing in both arms, apart, and
        # a parked screen's later full timing counted once, with its screen
        "configurations": sum("fidelity" in t.user_attrs and "repeat_of" not in t.user_attrs and not is_neutral_point(t)
                              and "promoted_from" not in t.user_attrs for t in study.get_trials(deepcopy=False)),
        "phases": {k: timing.get(k) for k in ("startup_seconds", "screen_seconds", "full_seconds", "confirm_seconds",
                                              "output_seconds")},
        "pick": outcome.reason, "speedup": (outcome.profile.measured if outcome.profile else {}).get("speedup"),
        "confirmation": study.user_attrs.get("confirmation"),
        "profile": str(outcome.profile_path) if outcome.profile_path else None,
    }


def held_out(model: str, profile: str, prompts: int, repeats: int) -> dict:
    """The profile against the baseline on held-out prompts, as benchmarks/peers.py times it."""
    from benchmarks.peers import heldout, profile_candidate, run_row
    from mindiesd_tune.models import load
    from mindiesd_tune.profile import load_profile

    prof = load_profile(profile)
    loaded = load(model)
    chosen = heldout(loaded, prompts, 15, list(prof.study.get("prompts") or []))
    del loaded
    return run_row(model, profile_candidate(prof), chosen, repeats=repeats)


def _row(r: dict) -> str:
    phases = ", ".join(f"{k.replace('_seconds', '')} {v:.0f}s" for k, v in r["phases"].items() if v is not None)
    return (f"{'screening' if r['screening'] else 'full-fidelity':>13}  budget {r['budget']:>4}  "
            f"after loading {r['wall_after_load_s']:.0f} s ({'within' if r['within_budget'] else 'OVER'} +5%)  "
            f"screened {r['screened']}  pruned {r['pruned']}  timed in full {r['timed_in_full']}  "
            f"confirmed {r['confirmed']}  configurations {r['configurations']}  [{phases}]")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo-flux")
    ap.add_argument("--budget", default="4m", help="the budget of the screening comparison")
    ap.add_argument("--budgets", nargs=2, default=None, metavar=("SHORT", "LONG"),
                    help="compare a short study's pick with a long one's on held-out prompts instead")
    ap.add_argument("--floor", default="psnr>=30")
    ap.add_argument("--prompts", type=int, default=None, help="tune on the model's first N default prompts (default: all)")
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--heldout-prompts", type=int, default=4)
    ap.add_argument("--heldout-repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="folder for the run folders (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = args.out or Path(tempfile.mkdtemp(prefix="study-cost-"))
    generation = {k: v for k, v in (("height", args.height), ("width", args.width)) if v is not None}
    print(f"# {args.model} {generation or 'default size'}, floor {args.floor}, load average {os.getloadavg()}",
          file=sys.stderr)
    if args.budgets is None:
        rows = [one_study(args.model, args.budget, out / ("screening" if on else "full"), args.floor, on, generation, args.prompts)
                for on in (True, False)]
        ratio = rows[0]["configurations"] / max(rows[1]["configurations"], 1)
        verdict = {"configurations_ratio": round(ratio, 2), "at_least_3x": ratio >= 3}
    else:
        rows = [one_study(args.model, b, out / f"budget-{b}", args.floor, True, generation, args.prompts) for b in args.budgets]
        for r in rows:
            r["held_out"] = {k: held_out(args.model, r["profile"], args.heldout_prompts, args.heldout_repeats).get(k)
                             for k in ("speedup", "speedup_low", "speedup_high", "psnr")} if r["profile"] else None
        short, long_ = (r["held_out"]["speedup"] if r["held_out"] else None for r in rows)
        share = short / long_ if short and long_ else None
        verdict = {"short_over_long": round(share, 3) if share else None, "at_least_90_percent": bool(share and share >= 0.9)}
    for r in rows:
        print(json.dumps(r, default=str) if args.json else _row(r)
              + (f"  held out {r['held_out']['speedup']:.2f}x [{r['held_out']['speedup_low']:.2f}-"
                 f"{r['held_out']['speedup_high']:.2f}] at {r['held_out']['psnr']:.1f} dB" if r.get("held_out") else ""),
              flush=True)
    print(json.dumps(verdict) if args.json else "# " + ", ".join(f"{k} {v}" for k, v in verdict.items()), flush=True)
    print(f"# load average {os.getloadavg()}; run folders in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
