"""The tuned profile against the caching methods a user would otherwise pick, on held-out prompts.

    python benchmarks/peers.py                                     # demo-flux, human table
    python benchmarks/peers.py --profile runs/demo-flux/profile.yaml --floor psnr>=30
    python benchmarks/peers.py --model demo-wan --repeats 3 --prompts 4 --json
    python benchmarks/peers.py --methods diffusers_mag cachedit_dbcache   # a subset of the rows

Peers run through their own APIs, each over a small grid around its published defaults:

- diffusers FirstBlockCache, TaylorSeer and MagCache (``transformer.enable_cache(config)`` /
  ``disable_cache()``). MagCache is calibrated on the model with diffusers' own calibration
  mode (``MagCacheConfig(calibrate=True)``) on a tuning prompt, once per run;
- cache-dit DBCache F1B0 (``cache_dit.enable_cache`` / ``disable_cache``), with and without its
  TaylorSeer calibrator. cache-dit is an optional extra: ``pip install 'mindiesd-tune[peers]'``;
  without it those rows are skipped with one line saying so;
- ``METHOD+compile``: the diffusers peers' fastest settings at a 30 dB floor on demo-flux
  (MagCache 0.24, FirstBlockCache 0.2, TaylorSeer interval 5) again over regional compile, the
  blocks compiled as a profile's are and the peers' hooks eager around them, where a compiler
  is there (``--no-compile-peers`` leaves them out);
- ``METHOD+batch_cfg``: where the pipeline calls the denoiser once per CFG branch, MagCache 0.24
  and FirstBlockCache 0.2 again with our ``steps.batch_cfg`` beneath them (both branches in one
  call), which a profile may have and no peer does on its own: how much of a lead that is;
- ``--profile PATH``: our tuned profile (``mindiesd_tune.apply_profile`` and the profile's
  ``call_kwargs()``); without it that row is skipped with a note;
- ``baseline (A/A)``: the baseline against itself, which shows how far timing noise alone
  moves a speed-up on this machine.

Every row loads the pipeline afresh and times (baseline, candidate) pairs, alternating which
goes first, ``--repeats`` times per prompt after one untimed pair. ``speedup`` is the tuner's
speed-up of the per-pair ratios baseline/candidate (``metrics.speed_interval``: their
Hodges-Lehmann centre) with its 95% interval ``speedup_low``-``speedup_high``, and ``q1``-``q3``
the ratios' interquartile range;
``latency_s`` and ``baseline_s`` are the medians of each side. The method is switched on
before and off after every candidate call, untimed. Quality (PSNR, SSIM, mean over prompts)
is against the baseline output of the same prompt and seed, on ``--prompts`` held-out prompts
(the shapes data set's held-out stream, excluding the tuning prompts and the profile's).
``attn`` is how many of the blocks' attention computations ran per call out of how many the
baseline runs (counted on the attention query projections, so every method is counted alike);
``restored`` says the output after switching the method off equals the baseline's.

``--floor psnr>=30`` (repeatable) prints, per floor, the fastest row that meets it and where
the profile stands.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import io
import json
import math
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mindiesd_tune import accel, apply_profile, load_profile  # noqa: E402
from mindiesd_tune.accel.methods.compile import has_compiler  # noqa: E402
from mindiesd_tune.errors import UserError  # noqa: E402
from mindiesd_tune.metrics import fidelity  # noqa: E402
from mindiesd_tune.metrics.latency import compare_interleaved, quartiles, speed_interval  # noqa: E402
from mindiesd_tune.models import load, shapes  # noqa: E402
from mindiesd_tune.models.prompts import DEMO_IMAGE_PROMPTS as DEFAULT_PROMPTS  # noqa: E402
from mindiesd_tune.models.prompts import DEMO_VIDEO_PROMPTS as DEFAULT_VIDEO_PROMPTS  # noqa: E402
from mindiesd_tune.tuner.objectives import parse_floor  # noqa: E402

CACHE_DIT_MISSING = "cache-dit is not installed: pip install 'mindiesd-tune[peers]'"
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
# Seeds of the held-out prompts; the tuner's workload uses 0, 1, ...
HELDOUT_SEED = 1000


@dataclass
class Candidate:
    """One row: ``setup(pipe)`` switches the method on and returns the call that switches it off."""

    method: str
    params: dict
    setup: Callable[[Any], Callable[[], None]] | None = None
    call_kwargs: dict = field(default_factory=dict)


def has_cache_dit() -> bool:
    return importlib.util.find_spec("cache_dit") is not None


# ---------------------------------------------------------------------------- peers


def _diffusers(config) -> Callable[[Any], Callable[[], None]]:
    def setup(pipe):
        pipe.transformer.enable_cache(config)
        return pipe.transformer.disable_cache

    return setup


def _compiled(inner: Callable[[Any], Callable[[], None]]) -> Callable[[Any], Callable[[], None]]:
    """``inner``'s method over regional compile: each transformer block's own forward compiled
    (``accel``'s ``compile`` section, as a profile gets it), installed first so the method's
    hooks stay eager around it. ``ModelMixin.compile_repeated_blocks`` compiles the blocks'
    ``__call__`` with the hooks inside, whose per-step state Dynamo then recompiles on: with
    MagCache on demo-flux it read 2.14x against 2.26x eager (6 calls each, one thread)."""
    return _beneath({"compile": {"mode": "default"}}, inner)


def _beneath(config: dict, inner: Callable[[Any], Callable[[], None]]) -> Callable[[Any], Callable[[], None]]:
    """``inner``'s method with an ``accel`` config installed first, beneath it."""
    def setup(pipe):
        from mindiesd_tune import accel

        handle = accel.apply(pipe, config)
        try:
            off = inner(pipe)
        except BaseException:
            handle.remove()
            raise

        def remove():
            off()
            handle.remove()

        return remove

    return setup


def _cache_dit(cache_config: dict, calibrator: dict | None) -> Callable[[Any], Callable[[], None]]:
    def setup(pipe):
        import cache_dit

        cal = cache_dit.TaylorSeerCalibratorConfig(**calibrator) if calibrator is not None else None
        cache_dit.enable_cache(pipe, cache_config=cache_dit.DBCacheConfig(**cache_config), calibrator_config=cal)
        return lambda: cache_dit.disable_cache(pipe)

    return setup


def calibrate_mag(loaded, prompt: str, seed: int = 0) -> tuple[list[float], str]:
    """MagCache ratios for this model from diffusers' calibration mode -> (ratios, source).

    diffusers prints the ratios at the end of a calibrated call (one list per CFG branch,
    each branch being its own cache context); the branches are averaged. Should its output
    change shape, the ratios ``step_statistics`` measures stand in.
    """
    from diffusers.hooks import MagCacheConfig

    pipe, gen = loaded.pipe, loaded.generation
    steps = gen["num_inference_steps"]
    pipe.transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=steps))
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            pipe(prompt=prompt, generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **gen)
    finally:
        pipe.transformer.disable_cache()
    found = [json.loads(m) for m in re.findall(r"^\[[-0-9.e, ]+\]$", buf.getvalue(), re.M)]
    found = [r for r in found if len(r) == steps]
    if found:
        return [float(x) for x in np.mean(np.array(found), axis=0)], "diffusers calibrate=True"
    stats = accel.step_statistics(pipe, prompt, seed=seed, **gen)
    return list(stats.mag_ratios), "step_statistics"


def separate_cfg(generation: dict) -> bool | None:
    """cache-dit must know when the pipeline calls the transformer once per CFG branch.

    Its Flux adapter assumes guidance distillation (one call per step); demo-flux runs true
    CFG, two calls per step, and without ``enable_separate_cfg`` cache-dit compares the
    conditional branch against the unconditional one and caches nothing. ``None`` keeps the
    adapter's own default.
    """
    return True if (generation.get("true_cfg_scale") or 1.0) > 1.0 else None


def peer_candidates(loaded, mag_ratios: list[float] | None, methods: list[str] | None, notes: list[str],
                    compile_peers: bool = False) -> list[Candidate]:
    from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    steps = loaded.generation["num_inference_steps"]
    out: list[Candidate] = []
    # diffusers' defaults: FirstBlockCache threshold 0.05; TaylorSeer interval 5, order 1,
    # 3 warm-up steps; MagCache threshold 0.06, at most 3 skipped steps in a row.
    for t in (0.05, 0.1, 0.2):
        out.append(Candidate("diffusers_first_block", {"threshold": t}, _diffusers(FirstBlockCacheConfig(threshold=t))))
    for interval, order in ((3, 1), (5, 1), (5, 2)):
        cfg = TaylorSeerCacheConfig(cache_interval=interval, max_order=order, disable_cache_before_step=3)
        out.append(Candidate("diffusers_taylorseer", {"cache_interval": interval, "max_order": order}, _diffusers(cfg)))
    if mag_ratios is not None:
        for t, k in ((0.06, 3), (0.12, 3), (0.24, 2), (0.24, 3)):
            cfg = MagCacheConfig(threshold=t, max_skip_steps=k, num_inference_steps=steps, mag_ratios=list(mag_ratios))
            out.append(Candidate("diffusers_mag", {"threshold": t, "max_skip_steps": k}, _diffusers(cfg)))
    if compile_peers:
        # with regional compile, where it can help: the settings that came fastest at a 30 dB floor
        # on demo-flux (the peers' own hooks stay eager, as a profile's do)
        best = {("diffusers_first_block", 0.2), ("diffusers_taylorseer", 5), ("diffusers_mag", 0.24)}
        for c in list(out):
            key = (c.method, c.params.get("threshold", c.params.get("cache_interval")))
            if key in best and c.params.get("max_order", 1) == 1:
                out.append(Candidate(f"{c.method}+compile", c.params, _compiled(c.setup)))
    if separate_cfg(loaded.generation):
        # the peers' best settings again with our steps.batch_cfg beneath them: a profile may
        # batch the two CFG calls, which none of the peers does on its own; these rows show how
        # much of a profile's lead that is
        for c in list(out):
            if "+" not in c.method and (c.method, c.params.get("threshold")) in {("diffusers_mag", 0.24), ("diffusers_first_block", 0.2)}:
                out.append(Candidate(f"{c.method}+batch_cfg", c.params, _beneath({"steps": {"batch_cfg": True}}, c.setup)))
    wanted = [m for m in ("cachedit_dbcache", "cachedit_dbcache_taylorseer") if not methods or m in methods]
    if wanted and not has_cache_dit():
        notes.append(CACHE_DIT_MISSING)
    elif wanted:
        # cache-dit's default residual threshold is 0.08 (8 warm-up steps); F1B0 computes the
        # first block and caches the rest, its cheapest published setting.
        cfg_split = separate_cfg(loaded.generation)
        for calibrated in (False, True):
            for t in (0.08, 0.16, 0.24, 0.32):
                cache = {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "residual_diff_threshold": t, "num_inference_steps": steps}
                if cfg_split is not None:
                    cache["enable_separate_cfg"] = cfg_split
                cal = {"taylorseer_order": 1} if calibrated else None
                method = "cachedit_dbcache_taylorseer" if calibrated else "cachedit_dbcache"
                params = {"F": 1, "B": 0, "threshold": t, **({"order": 1} if calibrated else {})}
                out.append(Candidate(method, params, _cache_dit(cache, cal)))
    return [c for c in out if not methods or c.method in methods]


def profile_candidate(profile) -> Candidate:
    prof = load_profile(profile)

    def setup(pipe):
        # the baseline runs on the same pipeline between the profile's calls: a precision or
        # quant section must be able to put the original weights back
        return apply_profile(pipe, prof, keep_original=True).remove

    params = {"cache": prof.accel.cache.method, **_changed(prof.accel.cache)}
    if prof.accel.sparse.method != "none":
        params.update({"sparse": prof.accel.sparse.method, **_changed(prof.accel.sparse)})
    if _changed(prof.accel.steps):
        params["steps"] = _changed(prof.accel.steps)
    quant = _changed(prof.accel.quant)
    if quant or prof.accel.quant.scheme != "none":
        params["quant"] = {"scheme": prof.accel.quant.scheme, **quant}
    if prof.accel.compile.mode != "none":
        params["compile"] = prof.accel.compile.mode
    return Candidate("mindiesd_tune_profile", params, setup, prof.call_kwargs())


def _changed(section) -> dict:
    """The fields of a config section that differ from their defaults (a list shows its length)."""
    out = {}
    for f in dataclasses.fields(section):
        v = getattr(section, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if v != default:
            out[f.name] = f"[{len(v)}]" if isinstance(v, (list, tuple)) else v
    return out


# ---------------------------------------------------------------------------- one row


class AttentionCounter:
    """Counts the blocks' attention computations per call, whatever skips them.

    Caches replace a block's or an attention module's ``forward``, which module forward hooks
    would still see; the query projection inside only runs when attention is computed. Installed
    for untimed counting calls only: inside a compiled block (a profile with ``compile``) its
    hooks break the graph, so they would slow the timed calls of that row alone. They run
    eagerly there (``torch.compiler.disable``): traced, their counting would make Dynamo
    recompile the block on every call.
    """

    def __init__(self, pipe):
        model = accel.find_denoiser(pipe)
        mods = [m for b in accel.transformer_blocks(model) for _, m in b.attention_modules()]
        self.per_call = len(mods)
        self.active, self.computed, self.calls = False, 0, 0
        targets = [getattr(m, "to_q", m) for m in mods]
        self.handles = [t.register_forward_pre_hook(self._attn) for t in targets]
        self.handles.append(model.register_forward_pre_hook(self._call))

    @torch.compiler.disable
    def _attn(self, *_):
        self.computed += self.active

    @torch.compiler.disable
    def _call(self, *_):
        self.calls += self.active

    def remove(self):
        for h in self.handles:
            h.remove()


def heldout(loaded, n: int, seed: int, exclude: list[str]) -> list[str]:
    """``n`` held-out prompts, none of them a tuning prompt."""
    skip = set(exclude) | set(DEFAULT_VIDEO_PROMPTS if loaded.is_video else DEFAULT_PROMPTS)
    out: list[str] = []
    draw = n + len(skip)
    while len(out) < n and draw <= 50 * (n + len(skip)):
        drawn = dict.fromkeys(p for p, _ in shapes.heldout_prompts(draw, video=loaded.is_video, seed=seed))
        out = [p for p in drawn if p not in skip]
        draw *= 2
    return out[:n]


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values):  # an identical output scores inf; the others speak
        return math.inf if not finite else float(np.mean(finite))
    return float(np.mean(values))


def run_row(model: str, cand: Candidate, prompts: list[str], *, repeats: int = 3, warmup: int = 1,
            generation: dict | None = None, device: str = "cpu", clock: str = "wall") -> dict:
    """Load ``model`` afresh, time ``cand`` against the baseline on ``prompts``, score it."""
    loaded = load(model, device=device)
    gen = {**loaded.generation, **(generation or {})}
    pipe = loaded.pipe
    row: dict[str, Any] = {"model": model, "method": cand.method, "params": cand.params, "held_out_prompts": len(prompts)}

    def call(prompt, seed, kwargs):
        out = pipe(prompt=prompt, generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **kwargs)
        return (out.frames if loaded.is_video else out.images)[0]

    def candidate_setup():
        return cand.setup(pipe) if cand.setup is not None else (lambda: None)

    cand_kwargs = {**gen, **cand.call_kwargs}
    pairs: list[float] = []
    base_s: list[float] = []
    cand_s: list[float] = []
    psnr: list[float] = []
    ssim: list[float] = []
    try:
        with torch.inference_mode():
            # before any candidate ran: also the fresh pipeline's first, slowest call, untimed
            reference = call(prompts[0], HELDOUT_SEED, gen)
            for i, prompt in enumerate(prompts):
                seed = HELDOUT_SEED + i
                comp, base_out, cand_out = compare_interleaved(
                    lambda: call(prompt, seed, gen), lambda: call(prompt, seed, cand_kwargs), device=device,
                    warmup=warmup if i == 0 else 0, repeats=repeats, clock=CLOCKS[clock], candidate_setup=candidate_setup)
                b, c = comp.baseline.samples, comp.candidate.samples
                pairs += [x / y for x, y in zip(b, c) if y > 0]
                base_s += b
                cand_s += c
                fid = fidelity(cand_out, reference if i == 0 else base_out)
                psnr.append(fid["psnr"])
                ssim.append(fid["ssim"])
            # switched off, the method must leave the pipeline as it found it
            restored = bool(np.array_equal(call(prompts[0], HELDOUT_SEED, gen), reference))
    except Exception as e:  # a peer that does not support this model
        return {**row, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]}
    # Dynamo does not guard on hooks added to a module it has compiled (skip_nnmodule_hook_guards),
    # so a compiled profile would run past the counter's hooks: its graphs are dropped and rebuilt
    torch._dynamo.reset()
    counter = AttentionCounter(pipe)
    try:  # attention computed: one untimed call per prompt, the counter's hooks on only then
        with torch.inference_mode():
            for i, prompt in enumerate(prompts):
                teardown = candidate_setup()
                counter.active = True
                try:
                    call(prompt, HELDOUT_SEED + i, cand_kwargs)
                finally:
                    counter.active = False
                    teardown()
    except Exception:  # noqa: BLE001  (a method that cannot be set up twice, having leaked: no count)
        counter.calls = 0
    finally:
        counter.remove()
    q1, _, q3 = quartiles(pairs)
    speed, low, high = speed_interval(pairs)
    row.update({
        "speedup": speed, "speedup_low": low, "speedup_high": high, "speedup_q1": q1, "speedup_q3": q3,
        "pairs": len(pairs),
        "latency_s": statistics.median(cand_s), "baseline_s": statistics.median(base_s),
        "psnr": _mean(psnr), "ssim": float(np.mean(ssim)),
        "attn_computed": counter.computed / counter.calls if counter.calls else None, "attn_total": counter.per_call,
        "restored": restored,
    })
    return row



# ---------------------------------------------------------------------------- the table


def best_per_floor(rows: list[dict], floors) -> list[dict]:
    """Per floor: the fastest row meeting it, and the profile row's standing."""
    out = []
    measured = [r for r in rows if "speedup" in r and r["method"] != "baseline_aa"]
    for f in floors:
        ok = [r for r in measured if f.holds(r.get(f.metric))]
        best = max(ok, key=lambda r: r["speedup"], default=None)
        peers = [r for r in ok if r["method"] != "mindiesd_tune_profile"]
        best_peer = max(peers, key=lambda r: r["speedup"], default=None)
        ours = next((r for r in measured if r["method"] == "mindiesd_tune_profile"), None)
        out.append({"floor": str(f), "best": _brief(best), "best_peer": _brief(best_peer),
                    "profile": _brief(ours), "profile_meets_floor": None if ours is None else f.holds(ours.get(f.metric))})
    return out


def _brief(row: dict | None) -> dict | None:
    if row is None:
        return None
    return {k: row[k] for k in ("method", "params", "speedup", "speedup_low", "speedup_high", "psnr", "ssim")}


def _params_text(params: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items())


HEADER = (f"{'method':<28} {'params':<34} {'speedup':>7} {'interval':>11} {'lat s':>7} {'base s':>7} {'psnr':>6} "
          f"{'ssim':>6} {'attn':>9} {'prompts':>7} restored")


def human(row: dict) -> str:
    head = f"{row['method']:<28} {_params_text(row['params'])[:34]:<34}"
    if "error" in row:
        return f"{head} {row['error']}"
    attn = f"{row['attn_computed']:.1f}/{row['attn_total']}" if row["attn_computed"] is not None else "-"
    return (f"{head} {row['speedup']:>6.2f}x {row['speedup_low']:>5.2f}-{row['speedup_high']:<5.2f} {row['latency_s']:>7.3f} "
            f"{row['baseline_s']:>7.3f} {row['psnr']:>6.1f} {row['ssim']:>6.3f} {attn:>9} {row['held_out_prompts']:>7} "
            f"{'yes' if row['restored'] else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo-flux", choices=["demo-flux", "demo-wan"])
    ap.add_argument("--profile", type=Path, default=None, help="a profile from `mindiesd-tune tune` for this model")
    ap.add_argument("--methods", nargs="+", default=None,
                    help="subset of rows: baseline_aa mindiesd_tune_profile diffusers_first_block diffusers_taylorseer "
                         "diffusers_mag cachedit_dbcache cachedit_dbcache_taylorseer, and METHOD+compile for a "
                         "diffusers peer with regional compile")
    ap.add_argument("--floor", action="append", default=[], help="quality floor, e.g. psnr>=30 (repeatable)")
    ap.add_argument("--repeats", type=int, default=3, help="timed (baseline, candidate) pairs per prompt")
    ap.add_argument("--warmup", type=int, default=1, help="untimed pairs before the first prompt of a row")
    ap.add_argument("--prompts", type=int, default=4, help="held-out prompts")
    ap.add_argument("--prompt-seed", type=int, default=15, help="seed of the held-out prompt stream")
    ap.add_argument("--clock", choices=list(CLOCKS), default="wall",
                    help="wall: elapsed time; cpu: this process's CPU time (single-threaded CPU runs only)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-compile-peers", action="store_true",
                    help="leave out the peers' rows with regional compile (METHOD+compile)")
    ap.add_argument("--json", action="store_true", help="one JSON object per row")
    args = ap.parse_args(argv)
    try:
        if args.repeats < 1 or args.prompts < 1:
            raise UserError("--repeats and --prompts must be at least 1")
        floors = [parse_floor(f) for f in args.floor]
        return run(args, floors)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args, floors) -> int:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    # cache-dit logs every enable/disable to stdout (INFO and WARNING alike), which would bury
    # the table; its loggers read this when it is first imported
    os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "error")
    notes: list[str] = []
    wanted = args.methods
    candidates: list[Candidate] = []
    exclude: list[str] = []
    if not wanted or "baseline_aa" in wanted:
        candidates.append(Candidate("baseline_aa", {}))
    if not wanted or "mindiesd_tune_profile" in wanted:
        if args.profile is None:
            notes.append("mindiesd_tune_profile: skipped, no --profile given")
        else:
            prof = load_profile(args.profile)
            if prof.model.get("name") not in (None, args.model):
                raise UserError(f"{args.profile} was tuned for {prof.model.get('name')}, not {args.model} (pass --model)")
            # the study's held-out prompts too: the check there chose among its candidates
            exclude += list(prof.study.get("prompts") or []) + list(prof.study.get("heldout_prompts") or [])
            candidates.append(profile_candidate(prof))
    loaded = load(args.model, device=args.device)
    prompts = heldout(loaded, args.prompts, args.prompt_seed, exclude)
    mag = None
    if not wanted or "diffusers_mag" in wanted:
        tuning_prompt = (DEFAULT_VIDEO_PROMPTS if loaded.is_video else DEFAULT_PROMPTS)[0]
        with torch.inference_mode():
            mag, source = calibrate_mag(loaded, tuning_prompt)
        notes.append(f"diffusers_mag: ratios from {source} on the tuning prompt {tuning_prompt!r}: "
                     + ", ".join(f"{r:.3f}" for r in mag))
    compile_peers = not args.no_compile_peers and has_compiler(args.device)
    if not compile_peers:
        notes.append("peers ran eager (--no-compile-peers, or no compiler for the device)")
    candidates += peer_candidates(loaded, mag, wanted, notes, compile_peers)
    del loaded

    print(f"# {args.model}: {len(prompts)} held-out prompts {prompts}; repeats {args.repeats}, clock {args.clock}, "
          f"threads {torch.get_num_threads()}, load average {os.getloadavg()}", file=sys.stderr)
    for n in notes:
        print(f"# {n}", file=sys.stderr)
    if not args.json:
        print(HEADER, flush=True)
    rows = []
    for cand in candidates:
        row = run_row(args.model, cand, prompts, repeats=args.repeats, warmup=args.warmup, device=args.device, clock=args.clock)
        rows.append(row)
        print(json.dumps(row, default=str) if args.json else human(row), flush=True)
    for summary in best_per_floor(rows, floors):
        if args.json:
            print(json.dumps(summary, default=str), flush=True)
            continue
        best, peer, ours = summary["best"], summary["best_peer"], summary["profile"]
        line = f"# floor {summary['floor']}: "
        line += (f"fastest {best['method']} {_params_text(best['params'])} {best['speedup']:.2f}x "
                 f"[{best['speedup_low']:.2f}-{best['speedup_high']:.2f}] at {best['psnr']:.1f} dB" if best else "no row meets it")
        if peer is not None and peer != best:
            line += f"; fastest peer {peer['method']} {peer['speedup']:.2f}x"
        if ours is None:
            line += "; no profile row"
        else:
            line += f"; profile {ours['speedup']:.2f}x at {ours['psnr']:.1f} dB ({'meets' if summary['profile_meets_floor'] else 'misses'} the floor)"
        print(line, flush=True)
    print(f"# load average {os.getloadavg()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
