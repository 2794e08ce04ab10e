"""The mindiesd-tune command line: each command parses its arguments, calls one library function and prints."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .cli_checks import (
    check_dtype,
    check_media_suffix,
    check_model_arg,
    check_pick,
    check_workload,
    given_options,
    tune_request,
    workload_options,
)
from .cli_options import BENCH_HELP, OUT_HELP, B, R, S, T, W
from .cli_store import register as register_store_commands
from .cli_store import tune_summary
from .errors import UserError, require
from .paths import check_storage_writable, check_writable

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Search diffusion acceleration settings on this machine and deploy the best as a profile.",
    pretty_exceptions_enable=False,
)

# typer exports only some of click's exceptions (and recent typer vendors its own copy of
# click), so the base classes are found through one it does export
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _console(quiet: bool = False):
    from rich.console import Console

    return Console(quiet=quiet, highlight=False, soft_wrap=True)


@app.command()
def tune(ctx: typer.Context, model: str = T.model, budget: str = T.budget, dry_run: bool = T.dry_run,
         screening: bool = T.screening, promotion: int = T.promotion, out: Optional[Path] = T.out, objective: str = T.objective,
         quality_floor: List[str] = T.quality_floor, max_memory: Optional[str] = T.max_memory,
         max_weight_bytes: Optional[str] = T.max_weight_bytes, sampler: str = T.sampler, pick: str = T.pick,
         holdout: str = T.holdout, judge: str = T.judge, fvd_weights: Optional[Path] = T.fvd_weights,
         prompt: List[str] = T.prompt, seed: int = T.seed, height: Optional[int] = W.height,
         width: Optional[int] = W.width, frames: Optional[int] = W.frames, steps: Optional[int] = W.steps,
         guidance: Optional[float] = W.guidance, true_cfg: Optional[float] = W.true_cfg,
         negative_prompt: Optional[str] = W.negative_prompt, prompts_file: Optional[Path] = W.prompts_file,
         seeds: Optional[str] = W.seeds, device: Optional[str] = T.device, dtype: Optional[str] = T.dtype,
         repeats: int = T.repeats, warmup: int = T.warmup, prune_margin: float = T.prune_margin,
         confirm_precision: float = T.confirm_precision, clip_model: Optional[str] = T.clip_model,
         interleave: bool = T.interleave, compile_: bool = T.compile_,
         baseline_cache: Optional[Path] = T.baseline_cache, no_baseline_cache: bool = T.no_baseline_cache,
         workers: int = T.workers, devices: Optional[int] = T.devices, storage: Optional[str] = T.storage,
         study_name: Optional[str] = T.study_name, resume: bool = T.resume, publish: Optional[str] = T.publish,
         warm_start: Optional[str] = T.warm_start, isolate: bool = T.isolate, allow_download: bool = T.allow_download,
         quiet: bool = T.quiet, verbose: bool = T.verbose):
    """Tune MODEL within a budget; write profile.yaml, report.html and trials.csv."""
    con = _console(quiet)
    # every argument is checked before torch, Optuna or the model is imported (cli_checks)
    req = tune_request(ctx.params, given_options(ctx), con, check_model=check_model_arg)
    from .models.quiet import quiet_loading
    from .tuner import plan_study, run_study

    with quiet_loading(verbose):
        _quiet_optuna()
        if req.dry_run:
            for line in plan_study(model, req.budget, req.options):
                con.print(line, markup=False)
            return
        outcome = run_study(model, req.budget, req.out, req.options)
    _print_outcome(outcome)
    tune_summary(outcome, warm_start)
    if outcome.interrupted:
        # Ctrl-C means "let me go now": the interpreter's last garbage collection walks every
        # object torch and diffusers made (seconds on a loaded machine) and has nothing to free
        gc.freeze()
        raise typer.Exit(130)


def _quiet_optuna() -> None:
    """Optuna logs every finished trial at INFO; the tuner's console prints its own line per trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="a run folder written by `tune`"),
    pick: Optional[str] = typer.Option(None, help="fastest, knee or trial:N (default: the pick the study last used)"),
    storage: Optional[str] = typer.Option(None, help="the study's storage URL when run.json cannot hold it (a password)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=OUT_HELP),
):
    """Re-pick the profile of a finished study without running anything."""
    if pick is not None:
        check_pick(pick)
    target = _out_folder(run_dir, out)
    check_storage_writable(storage)
    _check_run_folder(run_dir, storage)
    from .tuner import export as _export

    _print_outcome(_export(run_dir, pick, storage, out_dir=target))


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


def _print_outcome(outcome) -> None:
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
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=OUT_HELP),
):
    """Rebuild profile.yaml, report.html and trials.csv from the study stored in RUN_DIR, with the
    study's own pick, floors and objective."""
    target = _out_folder(run_dir, out)
    _check_run_folder(run_dir, None)
    from .tuner import load_run, write_outputs

    outcome = write_outputs(load_run(run_dir), target, samples_dir=run_dir / "samples")
    _print_outcome(outcome)


@app.command()
def show(profile: Path = typer.Argument(..., help="a profile.yaml")):
    """Print a human summary of a profile: what it speeds up, by how much, at what quality, tuned where."""
    from .profile import load_profile, summary

    for line in summary(load_profile(profile)):
        typer.echo(line)


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
    from .profile import differences, load_profile

    rows = differences(load_profile(a), load_profile(b))
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


def _show_value(v) -> str:
    from .profile import ABSENT

    if v is ABSENT:
        return "(absent)"
    if v is None:
        return "null"
    return str(v)


@app.command(help=BENCH_HELP)
def bench(ctx: typer.Context, model: str = B.model, profile: Optional[Path] = B.profile,
          store: Optional[str] = B.store, json_out: bool = B.json_out, repeats: int = B.repeats,
          warmup: int = B.warmup, precision: float = B.precision, max_seconds: float = B.max_seconds,
          device: Optional[str] = B.device, dtype: Optional[str] = B.dtype, force: bool = B.force,
          strict: bool = B.strict, height: Optional[int] = W.height, width: Optional[int] = W.width,
          frames: Optional[int] = W.frames, steps: Optional[int] = W.steps, guidance: Optional[float] = W.guidance,
          true_cfg: Optional[float] = W.true_cfg, negative_prompt: Optional[str] = W.negative_prompt,
          prompts_file: Optional[Path] = W.prompts_file, seeds: Optional[str] = W.seeds,
          allow_download: bool = B.allow_download, verbose: bool = B.verbose):
    prof = _profile_or_store(profile, store, required=True)
    given_prompts, given_seeds = check_workload(prompts_file, seeds)
    check_dtype(dtype)
    check_model_arg(model, allow_download)
    _launch_ranks(prof)
    from .bench import BenchRequest
    from .bench import bench as measure_profile

    req = BenchRequest(model, prof, profile, store, repeats, warmup, precision, max_seconds, device, dtype, force, strict,
                       workload_options(ctx.params), given_prompts, given_seeds, allow_download, verbose)
    with _warning_lines():
        report = measure_profile(req, log=lambda line: typer.echo(line, err=True))
    if report is not None:  # None: a following rank of a mesh
        for line in [json.dumps(report.result())] if json_out else report.table():
            typer.echo(line)


def _profile_or_store(profile: Path | None, store: str | None, required: bool = False):
    """The profile read from its file, or None to look it up in ``store`` once the model has loaded."""
    from .profile import load_profile

    if profile is not None and store is not None:
        raise UserError("give --profile FILE or --store URL, not both")
    if store is not None:
        from .store.db import check_url

        check_url(store)
        return None
    if profile is None and required:
        raise UserError("no profile to measure: give --profile FILE or --store URL")
    return load_profile(profile) if profile is not None else None


@contextlib.contextmanager
def _warning_lines():
    """The library's warnings about a profile (tuned elsewhere; the store's nearest, not an exact
    match) as one line each on stderr, when they happen; other warnings as Python shows them."""
    import warnings

    from .deploy import ProfileMismatchWarning
    from .store.lookup import ProfileWorkloadWarning

    ours = (ProfileMismatchWarning, ProfileWorkloadWarning)
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, ours):
                typer.echo(f"mindiesd-tune: warning: {message}", err=True)
            else:
                shown(message, category, filename, lineno, file, line)

        for category in ours:
            warnings.simplefilter("always", category)
        warnings.showwarning = show
        yield


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
def run(ctx: typer.Context, model: str = R.model, prompt: Optional[str] = R.prompt, out: Path = R.out,
        profile: Optional[Path] = R.profile, store: Optional[str] = R.store, seed: int = R.seed,
        height: Optional[int] = W.height, width: Optional[int] = W.width, frames: Optional[int] = W.frames,
        steps: Optional[int] = W.steps, guidance: Optional[float] = W.guidance,
        true_cfg: Optional[float] = W.true_cfg, negative_prompt: Optional[str] = W.negative_prompt,
        prompts_file: Optional[Path] = W.prompts_file, seeds: Optional[str] = W.seeds,
        device: Optional[str] = R.device, force: bool = R.force, allow_download: bool = R.allow_download,
        verbose: bool = R.verbose):
    """Generate one image or video, optionally with a profile applied (from a file, or the store's for
    this model, machine and workload with --store; refused, unless --force, when the profile was
    tuned for another model)."""
    from .generate import GenerateRequest, generate
    from .workload import pair

    given_prompts, given_seeds = check_workload(prompts_file, seeds)
    prompts = (given_prompts or []) + ([prompt] if prompt else [])
    if not prompts:
        raise UserError("nothing to generate: give --prompt TEXT or --prompts FILE")
    check_writable(out, "--out")
    check_media_suffix(out)
    if out.suffix.lower() == ".mp4":  # found missing now, not after the model has run
        require("imageio.v3", "video", "writing .mp4 (or use .gif)", "imageio with imageio-ffmpeg")
    prof = _profile_or_store(profile, store)
    check_model_arg(model, allow_download)
    _launch_ranks(prof)
    req = GenerateRequest(model, list(zip(*pair(prompts, given_seeds or [seed]))), out, prof, profile, store,
                          workload_options(ctx.params), device, force, allow_download, verbose)
    with _warning_lines():
        for target, seconds in generate(req):
            typer.echo(f"{target} ({seconds:.2f}s)")


def _launch_ranks(prof) -> None:
    """A profile whose mesh spans several ranks: run this same command in that many ranks
    (torch.distributed.run's launcher) and exit with rank 0's code. Inside the group: nothing."""
    from .accel.parallel.launch import in_rank_group, run_cli_group

    if prof is None or prof.world_size <= 1 or in_rank_group():
        return
    raise typer.Exit(run_cli_group(prof.world_size, list(_ARGV)))


@app.command()
def score(folder: Path = S.folder, prompts: Optional[Path] = S.prompts, reference: Optional[Path] = S.reference,
          metrics: Optional[str] = S.metrics, clip_model: Optional[str] = S.clip_model,
          inception: Optional[Path] = S.inception, i3d: Optional[Path] = S.i3d, lpips_net: str = S.lpips_net,
          device: str = S.device, json_out: bool = S.json_out):
    """Score a folder of images or videos: fidelity to a reference folder, CLIP score, Frechet distances."""
    from .metrics.score import chosen_metrics, read_prompts, score_folder

    chosen = chosen_metrics(metrics, reference, prompts, clip_model)
    result = score_folder(
        folder, chosen, prompts=read_prompts(prompts) if prompts is not None else None, reference=reference,
        clip_model=clip_model, inception=inception, i3d=i3d, lpips_net=lpips_net, device=device,
    )
    for line in [json.dumps(result.as_json())] if json_out else result.lines(folder):
        typer.echo(line)


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
