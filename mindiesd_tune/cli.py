"""The mindiesd-tune command line: thin wrappers that parse, call the library and print."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import UserError, require
from .paths import check_storage_writable, check_writable

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Search diffusion acceleration settings on this machine and deploy the best as a profile.",
    pretty_exceptions_enable=False,
)

DEFAULT_FLOOR = "psnr>=30"

# typer exports only some of click's exceptions (and recent typer vendors its own copy of
# click), so the base classes are found through one it does export
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _console(quiet: bool = False):
    from rich.console import Console

    return Console(quiet=quiet, highlight=False, soft_wrap=True)


@app.command()
def tune(
    model: str = typer.Argument(..., help="built-in name (see `models`), a diffusers folder, or a cached hub id"),
    budget: str = typer.Option("90s", "--budget", "-b", help="time (90s, 30m, 2h), trial count (40t) or both (30m+40t); whichever ends first"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="run folder (default runs/<model>-<time>)"),
    objective: str = typer.Option("psnr", help="quality axis of the front: psnr, ssim, ms_ssim, lpips (minimised) or clip"),
    quality_floor: List[str] = typer.Option([DEFAULT_FLOOR], "--quality-floor", help="METRIC>=VALUE, or METRIC>=Fx relative to the baseline; repeatable"),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="peak memory cap, e.g. 24GB (device memory; process RSS on the CPU)"),
    sampler: str = typer.Option("tpe", help="tpe (constrained multivariate TPE), nsga2, gp or random"),
    pick: str = typer.Option("fastest", help="which trial becomes the profile: fastest, knee or trial:N"),
    prompt: List[str] = typer.Option([], "--prompt", "-p", help="prompt of the fixed workload; repeatable"),
    seed: int = typer.Option(0, help="seed of the sampler and of the first prompt"),
    device: Optional[str] = typer.Option(None, help="cuda, npu or cpu (default: the best available)"),
    dtype: Optional[str] = typer.Option(None, help="fp32, fp16 or bf16 (default: the model's own)"),
    repeats: int = typer.Option(3, min=1, help="timed calls per trial (the median is reported)"),
    warmup: int = typer.Option(1, min=0, help="untimed calls before timing"),
    prune_margin: float = typer.Option(0.05, min=0.0, help="prune after the first prompt when it misses a floor by more than this fraction"),
    clip_model: Optional[str] = typer.Option(None, help="CLIP for the clip metric: demo-clip, NAME:/path/weights, local-dir:/path (default demo-clip for demo models)"),
    interleave: bool = typer.Option(True, help="time the baseline alternately with every trial, so speed-ups are ratios from one run"),
    baseline_cache: Optional[Path] = typer.Option(None, help="folder caching baseline outputs across studies (default ~/.cache/mindiesd-tune/baselines; --no-baseline-cache to compute per study)"),
    no_baseline_cache: bool = typer.Option(False, "--no-baseline-cache", help="compute the baseline outputs afresh"),
    workers: int = typer.Option(1, min=1, help="evaluator workers on this machine, each on its own device or device group"),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL shared by several machines, e.g. postgresql://user:pw@host/db"),
    study_name: Optional[str] = typer.Option(None, help="study name in --storage (default: the model name)"),
    resume: bool = typer.Option(False, help="continue the study in --out"),
    isolate: bool = typer.Option(True, help="evaluate in a child process that survives crashes (--no-isolate: in this process)"),
    allow_download: bool = typer.Option(False, "--allow-download", help="let a hub id be downloaded"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print only where the outputs went"),
):
    """Tune MODEL within a budget; write profile.yaml, report.html and trials.csv."""
    from .tuner import parse_budget, parse_floor, parse_memory, run_study
    from .tuner.study import default_out_dir

    out = out if out is not None else default_out_dir(model)
    check_writable(out, "--out", folder=True)
    check_storage_writable(storage)
    cache = None if no_baseline_cache else (baseline_cache or _default_baseline_cache())
    if cache is not None:
        check_writable(cache, "--baseline-cache", folder=True)
    b = parse_budget(budget)
    floors = [parse_floor(f) for f in quality_floor]
    mem = parse_memory(max_memory) if max_memory else None
    if pick not in ("fastest", "knee") and not pick.startswith("trial:"):
        raise UserError(f"--pick {pick!r}: use fastest, knee or trial:N")
    con = _console(quiet)
    outcome = run_study(
        model, b, out, objective=objective, floors=floors, max_memory_bytes=mem, sampler=sampler, prompts=prompt or None,
        seed=seed, device=device, dtype=dtype, warmup=warmup, repeats=repeats, resume=resume,
        allow_download=allow_download, workers=workers, storage=storage, study_name=study_name, pick_how=pick,
        prune_margin=prune_margin if prune_margin > 0 else None, isolate=isolate, quiet=quiet,
        clip_model=clip_model, interleave=interleave,
        baseline_cache=None if cache is None else str(cache),
        log=lambda line: con.print(line, markup=False),
    )
    _print_outcome(outcome, quiet)
    if outcome.interrupted:
        # Ctrl-C means "let me go now": the interpreter's last garbage collection walks every
        # object torch and diffusers made (seconds on a loaded machine) and has nothing to free
        gc.freeze()
        raise typer.Exit(130)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="a run folder written by `tune`"),
    pick: str = typer.Option("fastest", help="fastest, knee or trial:N"),
    storage: Optional[str] = typer.Option(None, help="the study's storage URL when run.json cannot hold it (a password)"),
):
    """Re-pick the profile of a finished study without running anything."""
    from .tuner import export as _export

    if run_dir.exists():  # profile, report and table are rewritten there; a missing folder is load_run's to name
        check_writable(run_dir, "RUN_DIR", folder=True)
    check_storage_writable(storage)
    _print_outcome(_export(run_dir, pick, storage), False)


def _default_baseline_cache() -> Path:
    from .metrics.baseline_store import default_root

    return default_root()


def _print_outcome(outcome, quiet: bool) -> None:
    from .tuner.pick import NO_GAIN

    con = _console()
    if outcome.profile is not None:
        m = outcome.profile.measured
        if NO_GAIN in outcome.reason:
            speed = "the baseline"  # its reading against itself is noise, not a speed-up to print
        else:
            interval = (f" [{m['speedup_low']:.2f}-{m['speedup_high']:.2f}]"
                        if m.get("speedup_low") is not None and m.get("speedup_high") is not None else "")
            speed = f"{m['speedup']:.2f}x{interval} faster" if m.get("speedup") else "? faster"
        con.print(f"profile: {outcome.profile_path}  ({speed}, {outcome.reason})", markup=False)
    else:
        con.print(f"no profile: {outcome.reason}", markup=False)
    con.print(f"report:  {outcome.report_path}", markup=False)
    con.print(f"trials:  {outcome.table_path}", markup=False)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run folder written by `tune`")):
    """Rebuild profile.yaml, report.html and trials.csv from the study stored in RUN_DIR."""
    from .tuner import load_run, write_outputs

    if run_dir.exists():
        check_writable(run_dir, "RUN_DIR", folder=True)
    outcome = write_outputs(load_run(run_dir), run_dir)
    _print_outcome(outcome, False)


@app.command()
def show(profile: Path = typer.Argument(..., help="a profile.yaml")):
    """Print a human summary of a profile: what it speeds up, by how much, at what quality, tuned where."""
    from .profile import load_profile

    p = load_profile(profile)
    for line in _profile_summary(p):
        typer.echo(line)


# measured fields about timing, not quality
TIMING_FIELDS = ("speedup_low", "speedup_high", "confirmed", "latency_iqr_s", "baseline_iqr_s", "cpu_s", "baseline_cpu_s")


def _profile_summary(p) -> list[str]:
    m, model, hw, st = p.measured, p.model, p.hardware, p.study
    lines = [f"{model['name']}  ({model['pipeline']}, family {model['family']})"
             + (f"  [schema {p.schema}, migrated from schema {p.migrated_from} on load]" if p.migrated_from else f"  [schema {p.schema}]")]
    ident = ", ".join(f"{k} {model[k]}" for k in ("fingerprint", "dtype") if model.get(k))
    if ident:
        lines.append(f"  model:       {ident}")
    if m:
        speed = f"{m['speedup']:.2f}x faster" if isinstance(m.get("speedup"), (int, float)) else "speed-up not recorded"
        if isinstance(m.get("speedup_low"), (int, float)) and isinstance(m.get("speedup_high"), (int, float)):
            speed += f" [{m['speedup_low']:.2f}-{m['speedup_high']:.2f}]"
        if "confirmed" in m:
            speed += " (confirmed)" if m["confirmed"] else " (unconfirmed)"
        lines.append(f"measured:      {speed}: {_secs(m.get('latency_s'))} against {_secs(m.get('baseline_s'))} for the baseline")
        quality = [f"{k} {'identical' if v == 'inf' else v}" for k, v in m.items()
                   if k not in ("latency_s", "baseline_s", "speedup", "skipped_fraction", "feasible") and k not in TIMING_FIELDS]
        if quality:
            lines.append("  quality:     " + ", ".join(quality) + " (against the baseline's output, same prompt and seed)")
        if m.get("skipped_fraction") is not None:
            lines.append(f"  skipped:     {m['skipped_fraction']:.0%} of block evaluations")
        if m.get("feasible") is False:
            lines.append("  note:        this trial did not meet the study's quality floors")
    lines.append("acceleration:")
    for section, values in p.accel.to_dict().items():
        lines.append(f"  {section:12s} {_section_text(values)}")
    gen = ", ".join(f"{k}={v}" for k, v in p.generation.items() if v is not None)
    lines.append(f"generation:    {gen or 'the pipeline defaults'}")
    if hw:
        lines.append(f"tuned on:      {hw.get('device')} {hw.get('name')}" + (f" x{hw['count']}" if hw.get("count") else "")
                     + f", torch {hw.get('torch')}, diffusers {hw.get('diffusers')}")
    if st:
        lines.append(f"study:         {st.get('name')}, trial {st.get('trial')}, created {st.get('created')}"
                     + (f" ({st['storage']})" if st.get("storage") else ""))
        prompts = st.get("prompts") or []
        if prompts:
            lines.append(f"  workload:    {len(prompts)} prompt(s), seeds {', '.join(map(str, st.get('seeds') or []))}: "
                         + "; ".join(f"\"{q}\"" for q in prompts))
    return lines


def _section_text(values: dict) -> str:
    neutral = values in ({"method": "none"}, {"method": "none", "backend": "sdpa"}, {"scheme": "none"},
                         {"mode": "none", "dynamic": False}, {"cfg": 1, "ulysses": 1, "ring": 1})
    if neutral:
        return "off"
    head = values.get("method") or values.get("scheme") or values.get("mode")
    rest = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in values.items() if k not in ("method", "scheme", "mode"))
    return f"{head}: {rest}" if head and rest else (head or rest)


def _secs(v) -> str:
    return f"{v:.4g} s" if isinstance(v, (int, float)) else "?"


@app.command()
def validate(
    profile: Path = typer.Argument(..., help="a profile.yaml"),
    upgrade: bool = typer.Option(False, "--upgrade", help="rewrite a profile of an older schema in the current one"),
):
    """Check a profile; name the first bad field and its value (exit 2) or print OK."""
    from .profile import load_profile

    p = load_profile(profile)
    if p.migrated_from is None:
        typer.echo(f"{profile}: OK (schema {p.schema})")
    elif upgrade:
        check_writable(profile, "PROFILE")
        p.save(profile)
        typer.echo(f"{profile}: OK; rewritten from schema {p.migrated_from} to schema {p.schema}")
    else:
        typer.echo(f"{profile}: OK (schema {p.migrated_from}, read as schema {p.schema}; --upgrade rewrites it)")


@app.command()
def diff(
    a: Path = typer.Argument(..., help="a profile.yaml"),
    b: Path = typer.Argument(..., help="another profile.yaml"),
):
    """Show what differs between two profiles, field by field. Exit 0 when they are the same, 1 when they differ."""
    from .profile import load_profile

    pa, pb = load_profile(a), load_profile(b)
    fa, fb = _flatten(pa.to_dict()), _flatten(pb.to_dict())
    keys = list(fa) + [k for k in fb if k not in fa]
    rows = [(k, fa.get(k, _ABSENT), fb.get(k, _ABSENT)) for k in keys if fa.get(k, _ABSENT) != fb.get(k, _ABSENT)]
    if not rows:
        typer.echo(f"{a} and {b} are the same profile")
        return
    width = max(len("field"), *(len(k) for k, _, _ in rows))
    wa = max(len(str(a)), *(len(_show_value(v)) for _, v, _ in rows))
    typer.echo(f"{'field':{width}s}  {str(a):{wa}s}  {b}")
    for section in dict.fromkeys(k.split(".")[0] for k, _, _ in rows):
        for k, va, vb in rows:
            if k.split(".")[0] == section:
                typer.echo(f"{k:{width}s}  {_show_value(va):{wa}s}  {_show_value(vb)}")
    changes = sorted({k.split(".")[0] for k, _, _ in rows} & {"model", "generation", "accel"})
    if changes:
        typer.echo(f"{len(rows)} field(s) differ; those in {', '.join(changes)} change what the pipeline computes")
    else:
        typer.echo(f"{len(rows)} field(s) differ, all in what was measured or recorded")
    raise typer.Exit(1)


_ABSENT = object()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _show_value(v) -> str:
    if v is _ABSENT:
        return "(absent)"
    if v is None:
        return "null"
    return str(v)


@app.command()
def bench(
    model: str = typer.Argument(..., help="built-in name, diffusers folder or cached hub id"),
    profile: Path = typer.Option(..., "--profile", help="the profile to measure against the baseline"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
    repeats: int = typer.Option(3, min=1, help="timed calls of each (the median is reported)"),
    warmup: int = typer.Option(1, min=0, help="untimed calls before timing"),
    device: Optional[str] = typer.Option(None, help="cuda, npu or cpu (default: the best available)"),
    dtype: Optional[str] = typer.Option(None, help="fp32, fp16 or bf16 (default: the profile's dtype)"),
    strict: bool = typer.Option(False, "--strict", help="refuse when the model or machine differs from the profile's"),
    allow_download: bool = typer.Option(False, "--allow-download", help="let a hub id be downloaded"),
):
    """Measure the baseline against PROFILE on the profile's prompts and seeds: latency and quality.

    The JSON object has the fields baseline_s, profile_s, speedup (the median ratio of interleaved
    baseline/profile calls on every prompt) with its interval speedup_low/speedup_high, the spread
    and CPU time of each side, one field per quality metric (an identical output's PSNR is the
    string "inf"), plus tuned_speedup(_low/_high), what the profile recorded when it was frozen.
    """
    import json
    import warnings

    from .deploy import ProfileMismatchError, check_profile
    from .models import load
    from .profile import load_profile
    from .tuner.evaluator import DEFAULT_PROMPTS, DEFAULT_VIDEO_PROMPTS, Evaluator, Workload

    prof = load_profile(profile)
    # measure at the profile's dtype; float32 is how models load anyway, and casting warns
    wanted = dtype or (prof.model.get("dtype") if prof.model.get("dtype") != "float32" else None)
    loaded = load(model, device=device, dtype=wanted, allow_download=allow_download)
    mismatches = check_profile(loaded.pipe, prof)
    if mismatches:
        msg = "the profile was tuned elsewhere: " + "; ".join(map(str, mismatches))
        if strict:
            raise ProfileMismatchError(msg, mismatches)
        typer.echo(f"mindiesd-tune: warning: {msg}", err=True)
    prompts = list(prof.study.get("prompts") or (DEFAULT_VIDEO_PROMPTS if loaded.is_video else DEFAULT_PROMPTS))
    seeds = list(prof.study.get("seeds") or range(len(prompts)))
    if len(seeds) != len(prompts):
        raise UserError(f"{profile}: study.seeds gives {len(seeds)} seeds for {len(prompts)} prompts")
    generation = {**loaded.generation, **prof.call_kwargs()}
    # quality from one pass over every prompt; the speed-up as the tuner confirms one: the baseline
    # and the profile interleaved, ``repeats`` rounds on every prompt, the median ratio and its interval
    ev = Evaluator(loaded, Workload(prompts, seeds, generation), warmup=warmup, repeats=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base_metrics = ev.baseline_metrics
        tuned = ev.evaluate(prof.accel)
        cmp = ev.confirm(prof.accel, repeats)
    baseline_s, profile_s = cmp.baseline.median_s, cmp.candidate.median_s
    result = {
        "model": model,
        "profile": str(profile),
        "device": str(ev.device),
        "prompts": len(prompts),
        "repeats": repeats,
        "baseline_s": _significant(baseline_s),
        "profile_s": _significant(profile_s),
        "speedup": _significant(cmp.speedup),
        "speedup_low": _significant(cmp.speedup_low),
        "speedup_high": _significant(cmp.speedup_high),
        "baseline_iqr_s": _significant(cmp.baseline.iqr_s),
        "profile_iqr_s": _significant(cmp.candidate.iqr_s),
        "baseline_cpu_s": _significant(cmp.baseline.cpu_s) if cmp.baseline.cpu_s is not None else None,
        "profile_cpu_s": _significant(cmp.candidate.cpu_s) if cmp.candidate.cpu_s is not None else None,
        **{k: _json_number(v) for k, v in tuned.metrics.items()},
        "skipped_fraction": tuned.counters.get("skipped_fraction"),
        "tuned_speedup": prof.measured.get("speedup"),
        "tuned_speedup_low": prof.measured.get("speedup_low"),
        "tuned_speedup_high": prof.measured.get("speedup_high"),
        "mismatches": [m.field for m in mismatches],
    }
    if json_out:
        typer.echo(json.dumps(result))
        return
    metrics = list(tuned.metrics)
    typer.echo(f"{model} with {profile} on {ev.device}: {len(prompts)} prompt(s); latency is the median of "
               f"{repeats} interleaved call(s) on each, quality is against the baseline on every prompt")
    head = f"{'':10s}{'latency':>12s}{'speed-up':>10s}" + "".join(f"{m:>11s}" for m in metrics)
    typer.echo(head)
    typer.echo(f"{'baseline':10s}{baseline_s:>10.4g} s{1.0:>9.2f}x" + "".join(f"{_metric_text(base_metrics[m]):>11s}" for m in metrics))
    typer.echo(f"{'profile':10s}{profile_s:>10.4g} s{cmp.speedup:>9.2f}x" + "".join(f"{_metric_text(tuned.metrics[m]):>11s}" for m in metrics))
    typer.echo(f"speed-up {cmp.speedup:.2f}x, interval {cmp.speedup_low:.2f}-{cmp.speedup_high:.2f}; latency spread (IQR) "
               f"{cmp.baseline.iqr_s:.3g} s baseline, {cmp.candidate.iqr_s:.3g} s profile")
    if isinstance(prof.measured.get("speedup"), (int, float)):
        typer.echo(f"when frozen, the profile measured {prof.measured['speedup']:.2f}x")


def _significant(v: float, digits: int = 6) -> float:
    # significant digits, not decimals: a 1 ms GPU call keeps the precision of a 10 s CPU one
    return float(f"{v:.{digits}g}")


def _json_number(v):
    import math

    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else None)
    return v


def _metric_text(v) -> str:
    import math

    if isinstance(v, float) and math.isinf(v):
        return "identical"
    return f"{v:.4g}" if isinstance(v, (int, float)) else str(v)


@app.command()
def models():
    """List the built-in models: pipelines to tune or run, and scorers for the quality metrics."""
    from .models import builtin_scorers, builtins

    con = _console()
    rows = [(b, "pipeline") for b in builtins()] + [(s, "scorer") for s in builtin_scorers()]
    for b, kind in rows:
        trained = "trained" if b.trained() else "random weights"
        con.print(f"{b.name:18s} {kind:9s} {b.description} [{trained}]", markup=False)


@app.command()
def run(
    model: str = typer.Argument(..., help="built-in name, diffusers folder or cached hub id"),
    prompt: str = typer.Option(..., "--prompt", "-p", help="what to generate"),
    out: Path = typer.Option(..., "--out", "-o", help="output file: .png for images; .gif, .webp or .mp4 for video"),
    profile: Optional[Path] = typer.Option(None, help="apply this profile first"),
    seed: int = typer.Option(0),
    device: Optional[str] = typer.Option(None),
    allow_download: bool = typer.Option(False, "--allow-download"),
):
    """Generate one image or video, optionally with a profile applied."""
    import time

    import torch

    from .models import load
    from .profile import load_profile
    from .tuner.evaluator import Evaluator, Workload

    check_writable(out, "--out")
    suffix = out.suffix.lower()
    if suffix == ".mp4":  # found missing now, not after the model has run
        require("imageio.v3", "video", "writing .mp4 (or use .gif)", "imageio with imageio-ffmpeg")
    prof = load_profile(profile) if profile is not None else None
    loaded = load(model, device=device, allow_download=allow_download)
    allowed = (".gif", ".webp", ".mp4") if loaded.is_video else (".png", ".jpg", ".jpeg", ".webp")
    if suffix not in allowed:
        raise UserError(f"{out}: use one of {', '.join(allowed)} for a {'video' if loaded.is_video else 'image'}")
    generation = dict(loaded.generation)
    if prof is not None:
        generation.update(prof.call_kwargs())
        generation.update(_apply_warning_once(loaded.pipe, prof).call_kwargs)  # e.g. a reduced step count
    ev = Evaluator(loaded, Workload([prompt], [seed], generation))
    t0 = time.perf_counter()
    with torch.inference_mode():
        arr = ev.generate(prompt, seed)
    dt = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_media(out, arr)
    typer.echo(f"{out} ({dt:.2f}s)")


def _apply_warning_once(pipe, prof):
    """apply_profile, its mismatch warning printed as one line rather than a Python warning."""
    import warnings

    from .deploy import ProfileMismatchWarning, apply_profile

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ProfileMismatchWarning)
        handle = apply_profile(pipe, prof)
    for w in caught:
        if issubclass(w.category, ProfileMismatchWarning):
            typer.echo(f"mindiesd-tune: warning: {w.message}", err=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return handle


def _write_media(path: Path, arr) -> None:
    from PIL import Image

    from .tuner.evaluator import to_uint8

    u8 = to_uint8(arr)
    if u8.ndim == 3:
        Image.fromarray(u8).save(path)
        return
    if path.suffix.lower() == ".mp4":
        iio = require("imageio.v3", "video", "writing .mp4 (or use .gif)", "imageio with imageio-ffmpeg")
        iio.imwrite(path, u8, fps=8)
        return
    frames = [Image.fromarray(f) for f in u8]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=125, loop=0, lossless=True)


@app.command()
def score(
    folder: Path = typer.Argument(..., help="images or videos to score (.png .jpg .webp .gif .mp4 .npy)"),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="text file, one prompt per line in file-name order"),
    reference: Optional[Path] = typer.Option(None, "--reference", help="folder of reference outputs, matched by file name"),
    metrics: Optional[str] = typer.Option(
        None, "--metrics", "-m",
        help="comma list of psnr, ssim, ms_ssim, lpips, clip, fid, fvd, fd_clip, fd_clip_frames "
        "(default: psnr,ssim with --reference; clip with --prompts and --clip-model)",
    ),
    clip_model: Optional[str] = typer.Option(None, "--clip-model", help="demo-clip, NAME:/path/to/weights, local-dir:/path or NAME:TAG (cached)"),
    inception: Optional[Path] = typer.Option(None, "--inception", help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth)"),
    i3d: Optional[Path] = typer.Option(None, "--i3d", help="FVD I3D TorchScript (i3d_torchscript.pt)"),
    lpips_net: str = typer.Option("alex", "--lpips-net", help="LPIPS backbone: alex, vgg or squeeze (weights from the torch hub cache)"),
    device: str = typer.Option("cpu", help="device for the weight-bearing metrics"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object keyed by metric name"),
):
    """Score a folder of images or videos: fidelity to a reference folder, CLIP score, Frechet distances."""
    import json

    from .metrics.score import parse_metrics, read_prompts, score_folder

    if metrics is None:
        chosen = (["psnr", "ssim"] if reference is not None else []) + (["clip"] if prompts is not None and clip_model else [])
        if not chosen:
            raise UserError("nothing to score: give --reference DIR, or --prompts FILE with --clip-model, or --metrics")
    else:
        chosen = parse_metrics(metrics)
    result = score_folder(
        folder, chosen, prompts=read_prompts(prompts) if prompts is not None else None, reference=reference,
        clip_model=clip_model, inception=inception, i3d=i3d, lpips_net=lpips_net, device=device,
    )
    if json_out:
        typer.echo(json.dumps(result.as_json()))
        return
    kind = "videos" if result.video else "images"
    typer.echo(f"{folder}: {result.n} {kind}")
    for name, value in result.values.items():
        if hasattr(value, "label"):
            typer.echo(f"  {name:15s} {value.value:10.4f}   n={value.n} vs {value.n_reference}; {value.label}")
        else:
            typer.echo(f"  {name:15s} {value:10.4f}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: ``mindiesd-tune MODEL --budget 30m`` is short for ``tune``."""
    from .accel.config import ConfigError

    args = list(sys.argv[1:] if argv is None else argv)
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    if args and not args[0].startswith("-") and args[0] not in commands:
        args.insert(0, "tune")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        # not standalone: click's usage errors come back here instead of as typer's error panel
        code = app(args=args, prog_name="mindiesd-tune", standalone_mode=False)
    except _USAGE_ERROR as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            sys.exit(2)  # the full help has been printed already
        hint = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
        _error(" ".join(e.format_message().split()).rstrip(".") + hint)
    except _CLICK_EXCEPTION as e:
        _error(" ".join(e.format_message().split()))
    except typer.Abort:
        print("Aborted!", file=sys.stderr)
        sys.exit(1)
    except (UserError, ConfigError) as e:
        _error(str(e))
    sys.exit(code if isinstance(code, int) else 0)


def _error(message: str) -> None:
    print(f"mindiesd-tune: error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
