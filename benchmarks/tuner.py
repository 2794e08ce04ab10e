"""How fast each sampler finds the latency/quality front, and how much of a study is not inference.

Two parts, both printed as a table (or JSON rows with --json):

1. Search efficiency (tabular benchmark). A table of real measurements is made first: N
   configurations of the model's search space (the presets plus random points), each run
   on the model with the tuner's evaluator. Each sampler then searches that table (a
   proposal is answered by the measured point nearest to it in normalised parameter space),
   for 3 seeds, and the hypervolume of the feasible front (relative latency, 1 / the
   interleaved speed-up, against quality: the study's own objectives) after 10, 20 and 40
   trials is reported next to random search's. Answering from a table makes 4 samplers x 3 seeds x
   40 trials affordable on a CPU; every number in it was measured on the model. ``--extend``
   adds, measured, the points the tuner's study derives (presets, refinements, combinations) that
   the table lacks, so they are not answered by a random row that lacks what they combine.
2. Overhead: a short live study; the share of its trial loop's wall time spent outside the
   evaluator (sampling, storage, hand-over to the worker process, outputs), with the start-up
   (model load, baseline outputs) reported beside it.

    python benchmarks/tuner.py [--model demo-flux] [--points 96] [--json]
    python benchmarks/tuner.py --table benchmarks/tables/demo-flux.json --seeds 8 --no-live   # replay the shipped table
    python benchmarks/tuner.py --model tiny-flux-random --points 6 --seeds 2 --trials 10 --no-live   # a smoke run

The space is the tuner's, calibrated as a study calibrates it (one baseline call): the
calibrated methods (``schedule``, ``diffusers_mag``) carry their derived fields (the step mask,
the ratios) in each row's config.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mindiesd_tune.tuner.study as study_module  # noqa: E402
from mindiesd_tune.accel.config import AccelConfig  # noqa: E402
from mindiesd_tune.metrics import LatencyStats  # noqa: E402
from mindiesd_tune.search_spaces import SpaceContext, presets, suggest  # noqa: E402
from mindiesd_tune.tuner import parse_budget, parse_floor, run_study  # noqa: E402
from mindiesd_tune.tuner.evaluator import TrialResult  # noqa: E402
from mindiesd_tune.tuner.pick import PRESET  # noqa: E402
from mindiesd_tune.tuner.worker import WorkerSpec, build_evaluator  # noqa: E402

PSNR_CAP = 100.0
TABLE_ENV = "MINDIESD_BENCH_TABLE"  # the measured table, as a JSON file, for the worker factory


def measure_table(model: str, points: int, seed: int = 0) -> dict:
    """Real measurements of the presets and ``points`` distinct random points of the full space.

    Points are drawn by the tuner's own ``suggest`` (cache and sparse sections, with the model's
    SpaceContext), so the table covers exactly the space the samplers search; each row keeps its
    flat parameters, and the table keeps every parameter's distribution for the lookup.
    """
    spec = WorkerSpec(model=model, warmup=1, repeats=2)
    ev, info = build_evaluator(spec)
    family = info["model"]["family"]
    ctx = SpaceContext.from_dict(info.get("space"))
    draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    preset_list = presets(family, ctx)
    for p in preset_list:
        draw.enqueue_trial(p)
    candidates, seen, dists = [], set(), {}
    for _ in range(len(preset_list) + points * 50):  # random points repeat (e.g. "no cache"): draw until enough
        if len(candidates) >= max(points, len(preset_list)):
            break
        trial = draw.ask()
        # the config, not only the parameters: calibrated methods derive fields (a step mask, ratios) from ctx
        config = suggest(trial, family, ctx)
        draw.tell(trial, 0.0)
        dists.update({k: optuna.distributions.distribution_to_json(d) for k, d in trial.distributions.items()})
        key = json.dumps(trial.params, sort_keys=True)
        if key not in seen:
            seen.add(key)
            candidates.append((dict(trial.params), config))
    rows = measure_rows(ev, candidates)
    return {"info": info, "rows": rows, "distributions": dists}


def measure_rows(ev, candidates: list) -> list[dict]:
    """One measured row per (flat parameters, config) pair, with the tuner's evaluator."""
    rows = []
    for params, config in candidates:
        config = config if isinstance(config, AccelConfig) else AccelConfig.from_dict(config)
        r = ev.evaluate(config)
        speed = r.speedup if r.speedup else None
        rows.append({"params": params, "config": config.to_dict(), "latency_s": r.latency.median_s, "speedup": speed,
                     "metrics": r.metrics, "skipped": r.counters.get("skipped_fraction", 0.0)})
        print(f"  measured {len(rows)}/{len(candidates)}: {r.latency.median_s:.3f}s "
              f"{f'{speed:.2f}x' if speed else '-'} psnr {r.metrics['psnr']:.3g} "
              f"{params.get('cache.method')}/{params.get('sparse.method')}", file=sys.stderr)
    return rows


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def replay(model: str, trials: int, seed: int, floor: str, sampler: str = "tpe") -> list:
    """The trials of a study of ``trials`` trials answered from the table ``TABLE_ENV`` names
    (read before its run folder goes)."""
    with tempfile.TemporaryDirectory() as d:
        return run_study(model, parse_budget(f"{trials}t"), Path(d) / "s", sampler=sampler, seed=seed,
                         floors=[parse_floor(floor)], prune_margin=None, isolate=False,
                         worker_factory="benchmarks.tuner:table_factory", quiet=True, log=lambda s: None).study.trials


def derived_unmeasured(trials, table: dict) -> list:
    """The trials a study derived rather than sampled (presets, refinements, combinations) whose
    parameters no row of ``table`` holds exactly."""
    known = {_key(r["params"]) for r in table["rows"]}
    return [t for t in trials if (t.user_attrs.get(PRESET) or "refined_from" in t.user_attrs)
            and "config" in t.user_attrs and _key(t.params) not in known]


def extend_table(table: dict, model: str, seeds: int, trials: int, floor: str, rounds: int) -> int:
    """Measure the points the tuner's own study derives rather than samples (its presets, front
    refinements and combinations) that the table does not hold exactly, replaying the default
    study over ``seeds`` and measuring again until it derives nothing new or ``rounds`` ran.

    A table of the presets and random draws answers a refinement or a combination (schedule
    with the bf16 denoiser and compiled blocks) by the nearest random row, which may lack the
    very setting it combines; the sampled points of every arm, random search's included, are
    still answered by the nearest row. Returns the number of rows added."""
    table_file = Path(tempfile.mkdtemp()) / "table.json"
    os.environ[TABLE_ENV] = str(table_file)
    ev, added = None, 0
    for _ in range(rounds):
        table_file.write_text(json.dumps(table, default=float))
        new: dict[str, optuna.trial.FrozenTrial] = {}
        for seed in range(seeds):
            for t in derived_unmeasured(replay(model, trials, seed, floor), table):
                new.setdefault(_key(t.params), t)
        for t in new.values():
            for k, dist in t.distributions.items():
                table["distributions"].setdefault(k, optuna.distributions.distribution_to_json(dist))
        if not new:
            break
        print(f"extending the table by {len(new)} derived point(s)", file=sys.stderr)
        if ev is None:
            ev, _ = build_evaluator(WorkerSpec(model=model, warmup=1, repeats=2))
        table["rows"].extend(measure_rows(ev, [(dict(t.params), t.user_attrs["config"]) for t in new.values()]))
        added += len(new)
    return added


METHOD_KEYS = ("cache.method", "sparse.method")
OFF = (None, "none")


class TableEvaluator:
    """Answers a proposal with the measured row nearest to it.

    Distance: a different cache or sparse method costs more than every other difference
    together (a row of the same method pair is always preferred); within it, numeric parameters
    are compared on their distribution's normalised (log where the space is log) scale and
    other categorical ones cost 1 when they differ, as does a parameter the row lacks that the
    proposal sets to something other than off.
    """

    def __init__(self, table: dict):
        self.rows = table["rows"]
        self.dists = {k: optuna.distributions.json_to_distribution(v) for k, v in table["distributions"].items()}

    @staticmethod
    def flatten(config: AccelConfig) -> dict:
        return {f"{section}.{k}": v for section, fields in config.to_dict().items() if isinstance(fields, dict)
                for k, v in fields.items()}

    def _norm(self, key: str, value) -> float:
        d = self.dists.get(key)
        if d is None or not isinstance(d, (optuna.distributions.FloatDistribution, optuna.distributions.IntDistribution)):
            return float(value)
        lo, hi, v = float(d.low), float(d.high), float(value)
        if d.log:
            lo, hi, v = math.log(lo), math.log(hi), math.log(max(v, d.low))
        return (v - lo) / (hi - lo) if hi > lo else 0.0

    def distance(self, proposal: dict, row: dict) -> float:
        # a setting the row was measured without (a row from before the space offered it) is a
        # difference unless the proposal leaves it off too
        dist = float(sum(1 for key, value in proposal.items() if key not in row and value not in OFF))
        for key, value in row.items():
            mine = proposal.get(key)
            if key in METHOD_KEYS:
                dist += 0.0 if mine == value else 1000.0
            elif mine is None:
                dist += 1.0
            elif isinstance(value, (bool, str)) or isinstance(self.dists.get(key), optuna.distributions.CategoricalDistribution):
                dist += 0.0 if mine == value else 1.0
            else:
                dist += abs(self._norm(key, mine) - self._norm(key, value))
        return dist

    def evaluate(self, config: AccelConfig, constraints=None, margin=None) -> TrialResult:
        proposal = self.flatten(config)
        r = min(self.rows, key=lambda row: self.distance(proposal, row["params"]))
        stats = LatencyStats(r["latency_s"], 0.0, r["latency_s"], [r["latency_s"]], None)
        out = np.zeros((2, 2, 3), np.float32)
        # the measured interleaved speed-up: the study's first objective is 1 / it
        return TrialResult(stats, dict(r["metrics"]), {"skipped_fraction": r["skipped"]}, [out], 0.0,
                           speedup=r.get("speedup"))


def table_factory(spec):
    table = json.loads(Path(os.environ[TABLE_ENV]).read_text())
    return TableEvaluator(table), table["info"]


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """2-D hypervolume of (relative latency to minimise, quality to maximise) points against ``ref``."""
    pts = sorted((lat, q) for lat, q in points if lat < ref[0] and q > ref[1])
    hv, best_q = 0.0, ref[1]
    for _i, (lat, q) in enumerate(pts):
        if q <= best_q:
            continue
        nxt = ref[0]
        # area this point adds: from its latency to the reference, above the best quality so far
        hv += (nxt - lat) * (q - best_q)
        best_q = q
    return hv


def front_hv(trials: list, upto: int, ref) -> float:
    pts = []
    for t in trials[:upto]:
        if t.state == optuna.trial.TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values()):
            pts.append((t.values[0], min(t.values[1], PSNR_CAP)))
    return hypervolume(pts, ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo-flux")
    ap.add_argument("--points", type=int, default=96)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=40, help="trials per replayed study (hypervolume at 10, 20 and this)")
    ap.add_argument("--floor", default="psnr>=30")
    ap.add_argument("--live-budget", default="12t", help="budget of the live study that measures overhead")
    ap.add_argument("--table", type=Path, default=None,
                    help="JSON file of the measured table: read if it exists (no measuring), else written")
    ap.add_argument("--no-live", action="store_true", help="skip the live study (overhead part)")
    ap.add_argument("--extend", type=int, default=0, metavar="ROUNDS",
                    help="measure the presets, refinements and combinations the default study derives and the table "
                         "lacks, replaying and measuring up to ROUNDS times (written back to --table)")
    ap.add_argument("--without-presets", action="store_true",
                    help="replayed studies queue only the baseline: the samplers' own search, where the presets "
                         "alone would already reach the table's front")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    t0 = time.perf_counter()
    if args.table is not None and args.table.is_file():
        table = json.loads(args.table.read_text())
    else:
        table = measure_table(args.model, args.points)
        if args.table is not None:
            args.table.write_text(json.dumps(table, default=float))
    if args.extend and extend_table(table, args.model, args.seeds, args.trials, args.floor, args.extend) and args.table:
        args.table.write_text(json.dumps(table, default=float))
    table_file = Path(tempfile.mkdtemp()) / "table.json"
    table_file.write_text(json.dumps(table, default=float))
    os.environ[TABLE_ENV] = str(table_file)
    # the objectives are relative: the baseline sits at 1.0, a point must be faster to count
    ref = (1.05, parse_floor(args.floor).value)
    marks = sorted({n for n in (10, 20, args.trials) if n <= args.trials})
    full = study_module.presets
    only_baseline = lambda family, ctx: full(family, ctx)[:1]  # noqa: E731  (the baseline is always trial 0)
    queued = only_baseline if args.without_presets else full
    rows = []
    # ``random search``: what a user without the tuner would run, Optuna's random sampler from the
    # baseline on, no presets and no refinement; the other arms are the tuner's study with that sampler
    arms = [(sampler, sampler, queued) for sampler in ("random", "tpe", "nsga2", "gp")]
    if not args.without_presets:
        arms.append(("random search", "random", only_baseline))
    for name, sampler, queued in arms:
        study_module.presets = queued
        hvs = {n: [] for n in marks}
        for seed in range(args.seeds):
            trials = replay(args.model, args.trials, seed, args.floor, sampler)
            for n in hvs:
                hvs[n].append(front_hv(trials, n, ref))
        row = {"part": "search", "sampler": name, "points": len(table["rows"]),
               **{f"hv@{n}": round(statistics.mean(v), 5) for n, v in hvs.items()},
               **{f"hv@{n}_sd": round(statistics.stdev(v), 5) if len(v) > 1 else 0.0 for n, v in hvs.items()}}
        rows.append(row)
    study_module.presets = full
    rnd = rows[0]
    bare = next((r for r in rows if r["sampler"] == "random search"), None)
    for r in rows:
        for n in marks:
            r[f"vs_random@{n}"] = round(r[f"hv@{n}"] / rnd[f"hv@{n}"], 3) if rnd[f"hv@{n}"] else None
            if bare is not None:
                # beats random search by more than one standard deviation of both, over the seeds
                spread = max(r[f"hv@{n}_sd"], bare[f"hv@{n}_sd"])
                r[f"beats_random_search@{n}"] = r[f"hv@{n}"] - bare[f"hv@{n}"] > spread

    if not args.no_live:
        with tempfile.TemporaryDirectory() as d:
            live = run_study(args.model, parse_budget(args.live_budget), Path(d) / "live", floors=[parse_floor(args.floor)],
                             isolate=True, quiet=True, log=lambda s: None)
            timing = live.study.user_attrs["timing"]
        rows.append({"part": "overhead", "model": args.model, "trials": len(live.study.trials), **timing})

    if args.json:
        for r in rows:
            print(json.dumps(r))
        return
    print(f"tuner benchmark on {args.model}: {len(table['rows'])} measured points, floor {args.floor}, "
          f"{args.seeds} seeds ({time.perf_counter() - t0:.0f}s)")
    last = marks[-1]
    heads = " ".join(f"{f'hv@{n}':>8s}" for n in marks)
    print(f"{'sampler':13s} {heads} {f'sd@{last}':>7s}   {'vs random @' + '/@'.join(map(str, marks)):>24s}"
          + ("   beats random search by > 1 sd @" + "/@".join(map(str, marks)) if "random search" in {r.get("sampler") for r in rows} else ""))
    for r in [r for r in rows if r["part"] == "search"]:
        vs = "/".join(f"{r[f'vs_random@{n}']:.2f}" if r[f"vs_random@{n}"] else "-" for n in marks)
        hv = " ".join(f"{r[f'hv@{n}']:8.4f}" for n in marks)
        beats = "/".join("yes" if r[f"beats_random_search@{n}"] else "no" for n in marks) if f"beats_random_search@{last}" in r else ""
        print(f"{r['sampler']:13s} {hv} {r[f'hv@{last}_sd']:7.3f}   {vs:>24s}   {beats}")
    if args.no_live:
        return
    o = rows[-1]
    print(f"live study: {o['trials']} trials in {o['loop_seconds']:.1f}s, {o['inference_seconds']:.1f}s of them in the evaluator "
          f"(model calls, interleaved baseline timing, scoring), {o['sampler_seconds']:.1f}s sampling, "
          f"{o['handover_seconds']:.1f}s handing trials to the worker process: overhead share {o['overhead_share']:.1%} "
          f"(target <= 10%); before the loop, {o['startup_seconds']:.1f}s loading the model and computing its baseline")


if __name__ == "__main__":
    main()
