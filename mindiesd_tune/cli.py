"""The mindiesd-tune command line: thin wrappers that parse, call the library and print."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .cli_checks import (
    check_dtype,
    check_holdout,
    check_media_suffix,
    check_model_arg,
    check_pick,
    check_tune_options,
    check_workload,
)
from .cli_store import register as register_store_commands
from .cli_store import tune_checks, tune_summary
from .errors import UserError, require
from .paths import check_storage_writable, check_writable

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Search diffusion acceleration settings on this machine and deploy the best as a profile.",
    pretty_exceptions_enable=False,
)

DEFAULT_FLOOR = "psnr>=30"
_OUT_HELP = ("folder for profile.yaml, report.html and trials.csv (default RUN_DIR); "
             "a profile.yaml already there is kept as profile.<n>.yaml")
_FORCE_HELP = "run a profile tuned for another model anyway (its settings and measurements may not fit)"

# typer exports only some of click's exceptions (and recent typer vendors its own copy of
# click), so the base classes are found through one it does export
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


_VERBOSE_HELP = "show the loading bars and warnings of diffusers and transformers"
# Read by diffusers, transformers, huggingface_hub and tqdm when they start: the evaluator's
# child process inherits them, so its model loading is as quiet as this process's.
_QUIET_ENV = {"DIFFUSERS_VERBOSITY": "error", "TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
              "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
_NOISY_MODULES = r"(diffusers|transformers|huggingface_hub|accelerate)(\..*)?$"


@contextlib.contextmanager
def _quiet_libraries(verbose: bool = False):
    """While a model loads: no loading bars, "pip install accelerate" banners or warnings from the
    libraries that load it, unless ``verbose``. Settings the user exported are kept, and all
    is put back afterwards."""
    import importlib.util
    import logging
    import warnings

    if verbose:
        yield
        return
    saved_env = {k: os.environ.get(k) for k in _QUIET_ENV}
    for k, v in _QUIET_ENV.items():
        os.environ.setdefault(k, v)
    restore = []
    for name in ("diffusers", "transformers"):
        if importlib.util.find_spec(name) is None:
            continue
        lib = importlib.import_module(f"{name}.utils.logging")
        restore.append((lib, lib.get_verbosity(), lib.is_progress_bar_enabled()))
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=_NOISY_MODULES)
            yield
    finally:
        for lib, level, bars in restore:
            lib.set_verbosity(level if level != logging.NOTSET else logging.WARNING)
            (lib.enable_progress_bar if bars else lib.disable_progress_bar)()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _workload_options():
    """Typer options of the workload, shared by tune, bench and run (None: the model's or profile's own)."""
    return dict(
        height=typer.Option(None, "--height", min=1, help="image height in px (default: the model's)"),
        width=typer.Option(None, "--width", min=1, help="image width in px (default: the model's)"),
        frames=typer.Option(None, "--frames", min=1, help="video frames (default: the model's)"),
        steps=typer.Option(None, "--steps", min=1, help="denoising steps of the workload, the baseline's (default: the model's)"),
        guidance=typer.Option(None, "--guidance", help="guidance scale (default: the model's)"),
        true_cfg=typer.Option(None, "--true-cfg", help="true classifier-free guidance scale, where the pipeline has one"),
        negative_prompt=typer.Option(None, "--negative-prompt", help="negative prompt of every call"),
        prompts_file=typer.Option(None, "--prompts", help="text file, one prompt a line"),
        seeds=typer.Option(None, "--seeds", help="comma list, e.g. 0,1: one per prompt, or every prompt with every seed"),
    )


_W = _workload_options()


def _options(height, width, frames, steps, guidance, true_cfg, negative_prompt):
    from .workload import WorkloadOptions

    return WorkloadOptions(height, width, frames, steps, guidance, true_cfg, negative_prompt)


def _console(quiet: bool = False):
    from rich.console import Console

    return Console(quiet=quiet, highlight=False, soft_wrap=True)


@app.command()
def tune(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="built-in name (see `models`), a diffusers folder, or a cached hub id"),
    budget: str = typer.Option("90s", "--budget", "-b", help="wall clock from the end of model loading to the outputs on disk "
                               "(90s, 30m, 2h), a trial count (40t) or both (30m+40t); whichever ends first"),
    dry_run: bool = typer.Option(False, "--dry-run", help="load the model, time the baseline, print what the budget buys and exit, writing nothing"),
    screening: bool = typer.Option(True, "--screening/--no-screening", help="screen each trial (one untimed look, one timing pair) and time in full only those that may reach the front"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="run folder (default runs/<model>-<time>)"),
    objective: str = typer.Option("psnr", help="second axis of the front: psnr, ssim, ms_ssim, lpips (minimised), clip, a set distance kid_clip, kvd_clip, kvd_i3d, fvd (minimised), or weight_bytes (minimised)"),
    quality_floor: List[str] = typer.Option([DEFAULT_FLOOR], "--quality-floor", help="METRIC[.AGG]>=VALUE (AGG over the prompts: mean, min, max, p10, p90; e.g. psnr.min>=28), or METRIC>=Fx relative to the baseline; repeatable"),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="peak memory cap, e.g. 24GB (device memory; process RSS on the CPU)"),
    max_weight_bytes: Optional[str] = typer.Option(None, "--max-weight-bytes", help="cap on the linear layers' weights with their quantisation scales, all components, e.g. 40MB"),
    sampler: str = typer.Option("tpe", help="tpe (constrained multivariate TPE), nsga2 or gp, each refining the front along the methods' knobs; or random (pure random search)"),
    pick: str = typer.Option("fastest", help="which trial becomes the profile: fastest, knee, robust (the fastest whose bolder neighbours still meet the floors) or trial:N"),
    holdout: str = typer.Option("2", help="prompts kept out of the search, on which the pick's quality is measured and the floors must hold: a count (0: none) or a file of prompts, one per line"),
    judge: str = typer.Option("bound", help="a floor on a mean is judged on its one-sided 90 percent confidence bound over the prompts (bound) or on the mean itself (mean)"),
    fvd_weights: Optional[Path] = typer.Option(None, "--fvd-weights", help="a local TorchScript I3D for the kvd_i3d and fvd set distances (never downloaded)"),
    prompt: List[str] = typer.Option([], "--prompt", "-p", help="prompt of the fixed workload; repeatable"),
    seed: int = typer.Option(0, help="seed of the sampler and of the first prompt"),
    height: Optional[int] = _W["height"],
    width: Optional[int] = _W["width"],
    frames: Optional[int] = _W["frames"],
    steps: Optional[int] = _W["steps"],
    guidance: Optional[float] = _W["guidance"],
    true_cfg: Optional[float] = _W["true_cfg"],
    negative_prompt: Optional[str] = _W["negative_prompt"],
    prompts_file: Optional[Path] = _W["prompts_file"],
    seeds: Optional[str] = _W["seeds"],
    device: Optional[str] = typer.Option(None, help="cuda, npu or cpu (default: the best available)"),
    dtype: Optional[str] = typer.Option(None, help="fp32, fp16 or bf16 (default: the model's own)"),
    repeats: int = typer.Option(3, min=1, help="timed calls per trial (the median is reported)"),
    warmup: int = typer.Option(1, min=0, help="untimed calls before timing"),
    prune_margin: float = typer.Option(0.05, min=0.0, help="prune after the first prompt when it misses a floor by more than this fraction"),
    confirm_precision: float = typer.Option(0.1, min=0.0, max=1.0, help="re-time the points near the front until the "
                                            "speed-up's 95 percent interval is within this share of it (0: one fixed pass)"),
    clip_model: Optional[str] = typer.Option(None, help="CLIP for the clip metric: demo-clip, NAME:/path/weights, local-dir:/path (default demo-clip for demo models)"),
    interleave: bool = typer.Option(True, help="time the baseline alternately with every trial, so speed-ups are ratios from one run"),
    compile_: bool = typer.Option(True, "--compile/--no-compile", help="search regional torch.compile where it can build kernels for the device (its compile time is set-up, not latency)"),
    baseline_cache: Optional[Path] = typer.Option(None, help="folder caching baseline outputs across studies (default ~/.cache/mindiesd-tune/baselines; --no-baseline-cache to compute per study)"),
    no_baseline_cache: bool = typer.Option(False, "--no-baseline-cache", help="compute the baseline outputs afresh"),
    workers: int = typer.Option(1, min=1, help="evaluator workers on this machine, each on its own device or device group"),
    devices: Optional[int] = typer.Option(None, min=1, help="devices the workers share: each trial spans devices/workers of them in a group of rank processes, whose meshes are searched (default: every visible GPU/NPU; on the CPU one process per worker, N ranks sharing the cores when given)"),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL shared by several machines, e.g. postgresql://user:pw@host/db"),
    study_name: Optional[str] = typer.Option(None, help="study name in --storage (default: the model name)"),
    resume: bool = typer.Option(False, help="continue the study in --out"),
    publish: Optional[str] = typer.Option(None, "--publish", help="profile store URL to publish the profile and its front to (see `publish`)"),
    warm_start: Optional[str] = typer.Option(None, "--warm-start", help="profile store URL: first try the stored fronts of this model's family"),
    isolate: bool = typer.Option(True, help="evaluate in a child process that survives crashes (--no-isolate: in this process)"),
    allow_download: bool = typer.Option(False, "--allow-download", help="let a hub id be downloaded"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print only where the outputs went"),
    verbose: bool = typer.Option(False, "--verbose", help=_VERBOSE_HELP),
):
    """Tune MODEL within a budget; write profile.yaml, report.html and trials.csv."""
    # the arguments are checked before torch, Optuna or the model is imported (cli_checks)
    from .tuner.budget import parse_budget
    from .tuner.objectives import parse_floor, parse_memory

    b = parse_budget(budget)
    floors = [parse_floor(f) for f in quality_floor]
    mem = parse_memory(max_memory, "--max-memory") if max_memory else None
    weights = parse_memory(max_weight_bytes, "--max-weight-bytes") if max_weight_bytes else None
    check_pick(pick)
    check_dtype(dtype)
    held = check_holdout(holdout, judge, fvd_weights)
    check_tune_options(objective=objective, sampler=sampler, workers=workers, devices=devices,
                       confirm_precision=confirm_precision or None, isolate=isolate)
    given_prompts, _ = check_workload(prompts_file, seeds)
    check_model_arg(model, allow_download)
    if out is None:
        from .tuner.study import default_out_dir

        out = default_out_dir(model)
    if not dry_run:  # a dry run writes nothing
        check_writable(out, "--out", folder=True)
    check_storage_writable(storage)
    tune_checks(publish, warm_start)
    cache = None if no_baseline_cache else (baseline_cache or _default_baseline_cache())
    if cache is not None:
        check_writable(cache, "--baseline-cache", folder=True)
    from .tuner import TuneOptions, plan_study, run_study
    from .workload import parse_seeds

    prompts = (given_prompts or []) + list(prompt)
    options = _options(height, width, frames, steps, guidance, true_cfg, negative_prompt)
    con = _console(quiet)
    with _quiet_libraries(verbose):
        _quiet_optuna()
        how = TuneOptions(
            objective=objective, floors=floors, max_memory_bytes=mem, max_weight_bytes=weights,
            sampler=sampler, prompts=prompts or None,
            generation=options.generation(), seeds=parse_seeds(seeds) if seeds else None, console=con,
            seed=seed, device=device, dtype=dtype, warmup=warmup, repeats=repeats, resume=resume,
            allow_download=allow_download, workers=workers, devices=devices, storage=storage, study_name=study_name, pick_how=pick,
            prune_margin=prune_margin if prune_margin > 0 else None, isolate=isolate, quiet=quiet,
            confirm_precision=confirm_precision or None,
            clip_model=clip_model, interleave=interleave, compile=compile_, screening=screening,
            baseline_cache=None if cache is None else str(cache), holdout=held, judge=judge,
            fvd_weights=str(fvd_weights) if fvd_weights else None,
            log=lambda line: con.print(line, markup=False), given=_given_options(ctx), publish=publish, warm_start=warm_start,
        )
        if dry_run:
            for line in plan_study(model, b, how):
                con.print(line, markup=False)
            return
        outcome = run_study(model, b, out, how)
    _print_outcome(outcome, quiet)
    tune_summary(outcome, warm_start)
    if outcome.interrupted:
        # Ctrl-C means "let me go now": the interpreter's last garbage collection walks every
        # object torch and diffusers made (seconds on a loaded machine) and has nothing to free
        gc.freeze()
        raise typer.Exit(130)


# tune's parameters that set a study option of another name (tuner.resume.STUDY_OPTIONS)
_OPTION_OF = {"quality_floor": "floors", "max_memory": "max_memory_bytes", "max_weight_bytes": "max_weight_bytes",
              "pick": "pick_how", "prompt": "prompts", "prompts_file": "prompts", "compile_": "compile",
              **{k: "generation" for k in ("height", "width", "frames", "steps", "guidance", "true_cfg", "negative_prompt")}}


def _given_options(ctx: typer.Context) -> frozenset[str]:
    """The study options set on the command line, not left at their defaults: on a resume these
    are checked against the study's own."""
    given = set()
    for name in ctx.params:
        source = ctx.get_parameter_source(name)
        # by name: typer may bring its own copy of click's ParameterSource
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            given.add(_OPTION_OF.get(name, name))
    return frozenset(given)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="a run folder written by `tune`"),
    pick: Optional[str] = typer.Option(None, help="fastest, knee or trial:N (default: the pick the study last used)"),
    storage: Optional[str] = typer.Option(None, help="the study's storage URL when run.json cannot hold it (a password)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=_OUT_HELP),
):
    """Re-pick the profile of a finished study without running anything."""
    if pick is not None:
        check_pick(pick)
    target = _out_folder(run_dir, out)
    check_storage_writable(storage)
    _check_run_folder(run_dir, storage)
    from .tuner import export as _export

    _print_outcome(_export(run_dir, pick, storage, out_dir=target), False)


def _out_folder(run_dir: Path, out: Path | None) -> Path:
    """Where export/report write: ``--out`` or the run folder, checked writable before the study is read."""
    if out is not None:
        if out.suffix.lower() in (".yaml", ".yml", ".html", ".csv"):
            raise UserError(f"--out {out}: give a folder; profile.yaml, report.html and trials.csv are written in it")
        check_writable(out, "--out", folder=True)
        return out
    if run_dir.exists():  # a missing folder is load_run's to name
        check_writable(run_dir, "RUN_DIR", folder=True)
    return run_dir


def _check_run_folder(run_dir: Path, storage: str | None) -> None:
    """A folder without a study is named before the study's modules (torch among them) load."""
    if storage is None:
        from .tuner.storage import run_storage

        run_storage(run_dir)


def _default_baseline_cache() -> Path:
    from .metrics.baseline_store import default_root

    return default_root()


def _print_outcome(outcome, quiet: bool) -> None:
    from .tuner.pick import NO_GAIN

    con = _console()
    if getattr(outcome, "kept_path", None) is not None:
        con.print(f"kept the previous profile as {outcome.kept_path}", markup=False)
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
def report(
    run_dir: Path = typer.Argument(..., help="a run folder written by `tune`"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=_OUT_HELP),
):
    """Rebuild profile.yaml, report.html and trials.csv from the study stored in RUN_DIR, with the
    study's own pick, floors and objective."""
    target = _out_folder(run_dir, out)
    _check_run_folder(run_dir, None)
    from .tuner import load_run, write_outputs

    outcome = write_outputs(load_run(run_dir), target, samples_dir=run_dir / "samples")
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
    for section, text in p.accel.summary():  # each method prints itself (accel.methods)
        lines.append(f"  {section:12s} {text}")
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
    precision: float = typer.Option(0.1, min=0.0, help="time more rounds, prompts taking turns, until the speed-up's "
                                    "interval is within this share of it (0: exactly --repeats rounds per prompt)"),
    max_seconds: float = typer.Option(300.0, "--max-seconds", min=0.0, help="cap in seconds on the measurement, counted once the model has loaded (the load time is "
                                      "printed apart): no model call starts past it but the first round's"),
    device: Optional[str] = typer.Option(None, help="cuda, npu or cpu (default: the best available)"),
    dtype: Optional[str] = typer.Option(None, help="fp32, fp16 or bf16 (default: the profile's dtype)"),
    force: bool = typer.Option(False, "--force", help=_FORCE_HELP),
    strict: bool = typer.Option(False, "--strict", hidden=True, help="refuse a different machine too"),
    height: Optional[int] = _W["height"],
    width: Optional[int] = _W["width"],
    frames: Optional[int] = _W["frames"],
    steps: Optional[int] = _W["steps"],
    guidance: Optional[float] = _W["guidance"],
    true_cfg: Optional[float] = _W["true_cfg"],
    negative_prompt: Optional[str] = _W["negative_prompt"],
    prompts_file: Optional[Path] = _W["prompts_file"],
    seeds: Optional[str] = _W["seeds"],
    allow_download: bool = typer.Option(False, "--allow-download", help="let a hub id be downloaded"),
    verbose: bool = typer.Option(False, "--verbose", help=_VERBOSE_HELP),
):
    """Measure the baseline against PROFILE on the profile's workload (prompts, seeds, size, steps;
    the workload options change it): latency and quality.

    A profile tuned for another model (pipeline, family or weights fingerprint) is refused
    unless --force; one tuned on another machine only warns. Each model call is a line on stderr.

    Timing goes on past --repeats rounds per prompt until the speed-up's 95% interval is within
    --precision of it, as the tuner's confirmation does. --max-seconds caps all of the measurement,
    quality included (the quality is scored on the interleaved calls' own outputs), but not the
    model's loading: no call starts after it, so bench ends at most one model call past it, with
    the rounds it has (at least one) and saying how many.

    The JSON object has the fields baseline_s, profile_s, speedup (the central ratio of interleaved
    baseline/profile calls on every prompt, as the tuner's) with its interval
    speedup_low/speedup_high, rounds (the interleaved pairs timed), the spread and CPU time of each
    side, one field per quality metric (an identical output's PSNR is the string "inf"), plus
    tuned_speedup(_low/_high), what the profile recorded when it was frozen.
    """

    from .profile import load_profile

    prof = load_profile(profile)
    given_prompts, given_seeds = check_workload(prompts_file, seeds)
    check_dtype(dtype)
    check_model_arg(model, allow_download)
    _launch_ranks(prof)
    from .deploy import ProfileMismatchError, check_profile
    from .models import load
    from .models.prompts import default_prompts
    from .tuner.evaluator import Evaluator, Workload
    from .workload import describe, pair, resolve

    # measure at the profile's dtype; float32 is how models load anyway, and casting warns
    wanted = dtype or (prof.model.get("dtype") if prof.model.get("dtype") != "float32" else None)
    import time

    t_load = time.perf_counter()
    with _quiet_libraries(verbose):
        loaded = load(model, device=_rank_device(device), dtype=wanted, allow_download=allow_download)
    load_s = time.perf_counter() - t_load
    mismatches = check_profile(loaded.pipe, prof)
    _refuse_another_model(loaded, prof, profile, mismatches, force)
    if mismatches:
        msg = "the profile was tuned elsewhere: " + "; ".join(map(str, mismatches))
        if strict and not force:
            raise ProfileMismatchError(msg, mismatches)
        typer.echo(f"mindiesd-tune: warning: {msg}", err=True)
    if given_prompts is not None or given_seeds is not None:
        prompts, seed_list = pair(given_prompts or list(dict.fromkeys(prof.study.get("prompts") or [])) or
                                  list(default_prompts(loaded.source == "builtin", loaded.is_video)), given_seeds)
    else:
        prompts = list(prof.study.get("prompts") or default_prompts(loaded.source == "builtin", loaded.is_video))
        seed_list = list(prof.study.get("seeds") or range(len(prompts)))
    if len(seed_list) != len(prompts):
        raise UserError(f"{profile}: study.seeds gives {len(seed_list)} seeds for {len(prompts)} prompts")
    # the baseline runs the profile's workload; the accelerated calls add the config's own overrides
    # (the steps section's step count) when it is applied
    measured_at = {**loaded.generation, **{k: v for k, v in prof.generation.items() if v is not None}}
    generation = resolve(loaded.pipe, measured_at, _options(height, width, frames, steps, guidance, true_cfg, negative_prompt))
    typer.echo(f"bench: workload {describe(generation, prompts, seed_list)}", err=True)
    typer.echo(f"bench: model loaded in {load_s:.1f} s (not counted in --max-seconds)", err=True)
    # quality from one pass over every prompt; the speed-up as the tuner confirms one: the baseline
    # and the profile interleaved, ``repeats`` rounds on every prompt, the central ratio and its interval
    ev = Evaluator(loaded, Workload(prompts, seed_list, generation), warmup=warmup, repeats=1)
    from .accel.parallel.launch import in_rank_group

    if in_rank_group():
        from .tuner.rankgroup import lead_or_follow

        if not lead_or_follow(ev):
            return  # a following rank: it ran rank 0's meshed calls
    try:
        result, tuned, base_metrics, cmp = _bench_measure(ev, prof, model, profile, prompts, repeats, mismatches,
                                                          precision or None, max_seconds)
    finally:
        if in_rank_group():
            from .tuner.rankgroup import stop_followers

            stop_followers()
    _bench_print(result, tuned, base_metrics, cmp, json_out, model, profile, prompts, repeats, prof, ev)


def _bench_measure(ev, prof, model, profile, prompts, repeats, mismatches, precision=None, max_s=None):
    import warnings

    from .bench import measure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _call_lines(ev, "interleaved"):
            m = measure(ev, prof.accel, repeats, precision=precision, max_s=max_s)
    cmp, tuned, base_metrics = m.comparison, m, m.base_metrics
    ended = "stopped at the --max-seconds cap" if m.capped else "done"
    typer.echo(f"bench: {ended} after {m.rounds} interleaved round(s); quality on {m.prompts_scored} of "
               f"{len(prompts)} prompt(s)", err=True)
    baseline_s, profile_s = cmp.baseline.median_s, cmp.candidate.median_s
    result = {
        "model": model,
        "profile": str(profile),
        "device": str(ev.device),
        "prompts": len(prompts),
        "repeats": repeats,
        "rounds": m.rounds,  # interleaved pairs timed, over every prompt
        "rounds_by_prompt": m.rounds_by_prompt,
        "prompts_scored": m.prompts_scored,
        "capped": m.capped,
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
    return result, tuned, base_metrics, cmp


def _bench_print(result, tuned, base_metrics, cmp, json_out, model, profile, prompts, repeats, prof, ev):
    import json

    baseline_s, profile_s = cmp.baseline.median_s, cmp.candidate.median_s
    if json_out:
        typer.echo(json.dumps(result))
        return
    metrics = list(tuned.metrics)
    scored = "every prompt" if result["prompts_scored"] == len(prompts) else f"{result['prompts_scored']} of them"
    typer.echo(f"{model} with {profile} on {ev.device}: {len(prompts)} prompt(s); latency is the median of "
               f"{result['rounds']} interleaved round(s) over them, quality is against the baseline on {scored}")
    head = f"{'':10s}{'latency':>12s}{'speed-up':>10s}" + "".join(f"{m:>11s}" for m in metrics)
    typer.echo(head)
    typer.echo(f"{'baseline':10s}{baseline_s:>10.4g} s{1.0:>9.2f}x" + "".join(f"{_metric_text(base_metrics[m]):>11s}" for m in metrics))
    typer.echo(f"{'profile':10s}{profile_s:>10.4g} s{cmp.speedup:>9.2f}x" + "".join(f"{_metric_text(tuned.metrics[m]):>11s}" for m in metrics))
    typer.echo(f"speed-up {cmp.speedup:.2f}x, interval {cmp.speedup_low:.2f}-{cmp.speedup_high:.2f}; latency spread (IQR) "
               f"{cmp.baseline.iqr_s:.3g} s baseline, {cmp.candidate.iqr_s:.3g} s profile")
    if isinstance(prof.measured.get("speedup"), (int, float)):
        typer.echo(f"when frozen, the profile measured {prof.measured['speedup']:.2f}x")


# model fields that make a profile another model's; the machine (device, versions) only warns
_MODEL_FIELDS = ("model.pipeline", "model.family", "model.fingerprint")


def _refuse_another_model(loaded, prof, path: Path, mismatches, force: bool) -> None:
    """A UserError naming the fields that differ when ``prof`` was tuned for another model than ``loaded``."""
    if force or not any(m.field in _MODEL_FIELDS for m in mismatches):
        return
    fields = []
    if prof.model.get("name") and prof.model["name"] != loaded.name:
        fields.append(f"model.name is {loaded.name} here, {prof.model['name']} in the profile")
    fields += [str(m) for m in mismatches if m.field.startswith("model.") and m.field != "model.dtype"]
    here, there = _size(loaded.generation), _size(prof.generation)
    if there and here != there:
        fields.append(f"generation size is {here or 'the pipeline default'} here, {there} in the profile")
    raise UserError(f"{path} was tuned for another model: " + "; ".join(fields) + " (--force runs it anyway)")


def _size(generation: dict) -> str:
    dims = [generation.get(k) for k in ("num_frames", "height", "width")]
    return "x".join(str(d) for d in dims if d)


def _quiet_optuna() -> None:
    """Optuna logs every finished trial at INFO; the tuner's console prints its own line per trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


@contextlib.contextmanager
def _call_lines(ev, what: str):
    """One line on stderr per model call while ``ev`` evaluates: a long bench shows it is moving."""
    import time

    calls = 0
    real = ev.generate
    t_start = time.perf_counter()

    def generate(*args, **kwargs):
        nonlocal calls
        t0 = time.perf_counter()
        out = real(*args, **kwargs)
        calls += 1
        typer.echo(f"bench: {what} call {calls} ({time.perf_counter() - t0:.2f} s)", err=True)
        return out

    ev.generate = generate  # the evaluator calls self.generate: the instance attribute wins
    try:
        yield
    finally:
        del ev.generate
    typer.echo(f"bench: {what} done: {calls} call(s) in {time.perf_counter() - t_start:.1f} s", err=True)


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
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="what to generate"),
    out: Path = typer.Option(..., "--out", "-o", help="output file: .png for images; .gif, .webp or .mp4 for video; "
                             "with several prompts or seeds, OUT-<n>.<suffix> for each"),
    profile: Optional[Path] = typer.Option(None, help="apply this profile first"),
    seed: int = typer.Option(0),
    height: Optional[int] = _W["height"],
    width: Optional[int] = _W["width"],
    frames: Optional[int] = _W["frames"],
    steps: Optional[int] = _W["steps"],
    guidance: Optional[float] = _W["guidance"],
    true_cfg: Optional[float] = _W["true_cfg"],
    negative_prompt: Optional[str] = _W["negative_prompt"],
    prompts_file: Optional[Path] = _W["prompts_file"],
    seeds: Optional[str] = _W["seeds"],
    device: Optional[str] = typer.Option(None),
    force: bool = typer.Option(False, "--force", help=_FORCE_HELP),
    allow_download: bool = typer.Option(False, "--allow-download"),
    verbose: bool = typer.Option(False, "--verbose", help=_VERBOSE_HELP),
):
    """Generate one image or video, optionally with a profile applied (refused, unless --force,
    when the profile was tuned for another model)."""
    from .profile import load_profile
    from .workload import pair

    given_prompts, given_seeds = check_workload(prompts_file, seeds)
    prompts = (given_prompts or []) + ([prompt] if prompt else [])
    if not prompts:
        raise UserError("nothing to generate: give --prompt TEXT or --prompts FILE")
    calls = list(zip(*pair(prompts, given_seeds or [seed])))
    check_writable(out, "--out")
    check_media_suffix(out)
    suffix = out.suffix.lower()
    if suffix == ".mp4":  # found missing now, not after the model has run
        require("imageio.v3", "video", "writing .mp4 (or use .gif)", "imageio with imageio-ffmpeg")
    prof = load_profile(profile) if profile is not None else None
    check_model_arg(model, allow_download)
    _launch_ranks(prof)
    import time

    import torch

    from .accel.parallel.launch import rank
    from .accel.parallel.watch import note
    from .models import load
    from .tuner.evaluator import Evaluator, Workload
    from .workload import resolve

    note(f"loading {model}")
    with _quiet_libraries(verbose):
        loaded = load(model, device=_rank_device(device), allow_download=allow_download)
    allowed = (".gif", ".webp", ".mp4") if loaded.is_video else (".png", ".jpg", ".jpeg", ".webp")
    if suffix not in allowed:
        raise UserError(f"{out}: use one of {', '.join(allowed)} for {'a video' if loaded.is_video else 'an image'}")
    generation = dict(loaded.generation)
    overrides: dict = {}
    if prof is not None:
        from .deploy import check_profile

        _refuse_another_model(loaded, prof, profile, check_profile(loaded.pipe, prof), force)
        generation.update({k: v for k, v in prof.generation.items() if v is not None})
    generation = resolve(loaded.pipe, generation, _options(height, width, frames, steps, guidance, true_cfg, negative_prompt))
    if prof is not None:
        note(f"applying {profile}")
        overrides = _apply_warning_once(loaded.pipe, prof).call_overrides  # e.g. a reduced step count
    ev = Evaluator(loaded, Workload([p for p, _ in calls], [s for _, s in calls], generation))
    out.parent.mkdir(parents=True, exist_ok=True)
    for i, (p, s) in enumerate(calls):
        target = out if len(calls) == 1 else out.with_name(f"{out.stem}-{i}{out.suffix}")
        note(f"call {i + 1}/{len(calls)}")
        t0 = time.perf_counter()
        with torch.inference_mode():
            arr = ev.generate(p, s, overrides)
        dt = time.perf_counter() - t0
        note(f"writing {target.name}")
        if rank() == 0:  # every rank of a mesh holds the whole output
            _write_media(target, arr)
            typer.echo(f"{target} ({dt:.2f}s)")


def _launch_ranks(prof) -> None:
    """A profile whose mesh spans several ranks: run this same command in that many ranks
    (torch.distributed.run's launcher) and exit with rank 0's code. Inside the group: nothing."""
    from .accel.parallel.launch import in_rank_group, run_cli_group

    if prof is None or prof.world_size <= 1 or in_rank_group():
        return
    raise typer.Exit(run_cli_group(prof.world_size, list(_ARGV)))


def _rank_device(device: str | None) -> str | None:
    """In a rank group on an accelerator, this rank's own device (torchrun's LOCAL_RANK)."""
    from .accel.parallel.launch import in_rank_group

    if not in_rank_group():
        return device
    import torch

    kind = torch.device(device).type if device else ("cuda" if torch.cuda.is_available() else "cpu")
    return f"{kind}:{os.environ.get('LOCAL_RANK', '0')}" if kind in ("cuda", "npu") else device


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


# the command line as given, for a command that relaunches itself in a rank group
_ARGV: list[str] = []


def main(argv: list[str] | None = None) -> None:
    """Console entry point: ``mindiesd-tune MODEL --budget 30m`` is short for ``tune``."""
    from .accel.parallel.launch import in_rank_group, run_as_rank

    if not in_rank_group():
        return _main(argv)
    run_as_rank(_main, argv)


def _main(argv: list[str] | None = None) -> None:
    from .accel.config import ConfigError

    args = list(sys.argv[1:] if argv is None else argv)
    commands = {c.name or c.callback.__name__ for c in app.registered_commands} | {g.name for g in app.registered_groups}
    if args and not args[0].startswith("-") and args[0] not in commands:
        args.insert(0, "tune")
    _ARGV[:] = args
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "--verbose" not in args:
        # torchao registers its enums with torch's pytree at import, and torch warns that this is
        # deprecated, once per enum, on every command that loads a model: library noise, not ours
        import logging

        logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
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


register_store_commands(app)  # publish, profiles, recheck

if __name__ == "__main__":
    main()
