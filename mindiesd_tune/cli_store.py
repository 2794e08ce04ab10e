"""The profile store's commands: publish, profiles (list, show, retire, find) and recheck.

Registered on the main app by ``register(app)``; kept apart from cli.py so the store's commands
import nothing heavy until they run (SQLAlchemy only; torch only for ``find`` and ``recheck``,
which load a model). Errors are UserErrors: cli._main prints them as one line and exits 2.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Optional

import typer

from .errors import UserError

_STORE_HELP = ("profile store URL: sqlite:///FILE or postgresql://user@host/db "
               "(default $MINDIESD_TUNE_STORE, else ~/.local/share/mindiesd-tune/profiles.db)")

profiles_app = typer.Typer(help="List the profiles in a store; show, retire or find one.", no_args_is_help=False,
                           invoke_without_command=True, pretty_exceptions_enable=False)


@contextlib.contextmanager
def _database_errors(url: str | None):
    """A database failure after the store opened (a dropped connection) as one line, not a traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except SQLAlchemyError as e:
        from .store.db import default_url, redact

        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise UserError(f"store {redact(url or default_url())}: {type(e).__name__}: {first}") from None


def _store(url: str | None):
    from .store import ProfileStore

    return ProfileStore(url)


def publish(
    profile: Path = typer.Argument(..., help="a profile.yaml (written by `tune` or `export`)"),
    store: Optional[str] = typer.Option(None, "--store", help=_STORE_HELP),
):
    """Publish PROFILE to the store, matched later by its weights, machine and workload."""
    from .profile import load_profile

    prof = load_profile(profile)
    with _database_errors(store):
        st = _store(store)
        pid, new = st.publish(prof)
        row = st.get(pid).row
    from .store.db import redact

    typer.echo(f"{'published' if new else 'already published'}: profile {pid} in {redact(st.url)} "
               f"({row['model_name']} {row['fingerprint']}, {row['device']} {row['device_name'] or ''}, "
               f"{st.get(pid).workload_text()})")


@profiles_app.callback()
def profiles(
    ctx: typer.Context,
    store: Optional[str] = typer.Option(None, "--store", help=_STORE_HELP),
    model: Optional[str] = typer.Option(None, "--model", help="only this model name, family or fingerprint"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object a line"),
):
    """List the store's profiles (`profiles show ID`, `profiles retire ID`, `profiles find MODEL` for one)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = store
        return
    with _database_errors(store):
        rows = _store(store).list(model=model)
    if json_out:
        for r in rows:
            typer.echo(json.dumps(_summary(r), default=str))
        return
    if not rows:
        typer.echo("no profiles" + (f" for {model}" if model else ""))
        return
    typer.echo(f"{'ID':>4}  {'status':8} {'model':22} {'fingerprint':16}  {'device':28} {'workload':28} {'speed-up':>16}  created")
    for r in rows:
        row = r.row
        status = row["status"] + (f" ({row['verdict']})" if row["verdict"] and row["status"] == "stale" else "")
        typer.echo(f"{r.id:>4}  {status:8} {row['model_name'][:22]:22} {row['fingerprint'] or '':16}  "
                   f"{(row['device'] + ' ' + (row['device_name'] or ''))[:28]:28} {r.workload_text()[:28]:28} "
                   f"{_speed(row):>16}  {row['created']:%Y-%m-%d %H:%M}")


def _speed(row) -> str:
    if row["speedup"] is None:
        return "-"
    if row["speedup_low"] is not None and row["speedup_high"] is not None:
        return f"{row['speedup']:.2f}x [{row['speedup_low']:.2f}-{row['speedup_high']:.2f}]"
    return f"{row['speedup']:.2f}x"


def _summary(r) -> dict:
    row = {k: v for k, v in r.row.items() if k not in ("profile", "front", "measured", "digest")}
    return {**row, "measured": r.measured, "front_points": len(r.front)}


def _store_of(ctx: typer.Context, store: str | None) -> str | None:
    return store if store is not None else ctx.obj


@profiles_app.command("show")
def show(
    ctx: typer.Context,
    profile_id: int = typer.Argument(..., metavar="ID", help="the profile's ID (`profiles` lists them)"),
    store: Optional[str] = typer.Option(None, "--store", help=_STORE_HELP),
):
    """Print a stored profile: its match facts, its checks, then the frozen profile's YAML."""
    url = _store_of(ctx, store)
    with _database_errors(url):
        st = _store(url)
        r = st.get(profile_id)
        history = st.history(profile_id)
    row = r.row
    typer.echo(f"# profile {r.id}: {row['status']}" + (f", last recheck: {row['verdict']} ({row['checked']:%Y-%m-%d %H:%M})"
                                                      if row["verdict"] else ""))
    typer.echo(f"# model {row['model_name']} ({row['family']}, {row['pipeline']}), fingerprint {row['fingerprint']}, {row['dtype']}")
    typer.echo(f"# machine {row['device']} {row['device_name'] or ''} x{row['device_count']}, CPU {row['cpu_model'] or 'unknown'} "
               f"(flags {row['cpu_flags'] or 'unknown'}), hash {row['machine']}")
    typer.echo(f"# workload {r.workload_text()}; speed-up {_speed(row)}")
    typer.echo("# versions " + ", ".join(f"{k} {v}" for k, v in r.versions.items()))
    typer.echo(f"# published {row['created']:%Y-%m-%d %H:%M:%S %Z}; front points {len(r.front)}")
    for h in history:
        s = f"{h['speedup']:.2f}x [{h['speedup_low']:.2f}-{h['speedup_high']:.2f}]" if h["speedup"] is not None else "-"
        typer.echo(f"# check {h['checked']:%Y-%m-%d %H:%M}: {h['verdict']} ({s}) with {h['versions']}" +
                   (f": {h['note']}" if h["note"] else ""))
    typer.echo(row["profile"].rstrip())


@profiles_app.command("retire")
def retire(
    ctx: typer.Context,
    profile_id: int = typer.Argument(..., metavar="ID", help="the profile's ID"),
    store: Optional[str] = typer.Option(None, "--store", help=_STORE_HELP),
):
    """Take a profile out of lookups and warm starts (it stays listed as retired)."""
    url = _store_of(ctx, store)
    with _database_errors(url):
        r = _store(url).retire(profile_id)
    typer.echo(f"retired: profile {r.id} ({r.row['model_name']}, {r.workload_text()})")


@profiles_app.command("find")
def find(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="built-in name, diffusers folder or cached hub id"),
    store: Optional[str] = typer.Option(None, "--store", help=_STORE_HELP),
    device: Optional[str] = typer.Option(None, help="cuda, npu or cpu (default: the best available)"),
    dtype: Optional[str] = typer.Option(None, help="fp32, fp16 or bf16 (default: the model's own)"),
    height: Optional[int] = typer.Option(None, "--height", min=1),
    width: Optional[int] = typer.Option(None, "--width", min=1),
    frames: Optional[int] = typer.Option(None, "--frames", min=1),
    steps: Optional[int] = typer.Option(None, "--steps", min=1),
    guidance: Optional[float] = typer.Option(None, "--guidance"),
    verify: bool = typer.Option(False, "--verify", help="refuse a profile a recheck marked stale"),
):
    """Which stored profile MODEL gets on this machine at this workload (what apply_profile(store=) picks).

    Loads the model to fingerprint its weights; runs no model call. Exit 2 when none matches."""
    import warnings

    from .cli_checks import check_dtype, check_model_arg

    check_dtype(dtype)
    check_model_arg(model)
    from .models import load
    from .store.lookup import find_profile

    url = _store_of(ctx, store)
    with _database_errors(url):
        st = _store(url)  # a bad URL is refused before the model loads
        loaded = load(model, device=device, dtype=dtype)
        workload = {"height": height, "width": width, "num_frames": frames, "num_inference_steps": steps,
                    "guidance_scale": guidance}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            match = find_profile(loaded.pipe, st, {k: v for k, v in workload.items() if v is not None}, verify)
    for w in caught:
        typer.echo(f"mindiesd-tune: warning: {w.message}", err=True)
    typer.echo(f"{'exact' if match.exact else 'near'}: profile {match.stored.id} "
               f"({match.stored.workload_text()}, {_speed(match.stored.row)})")


def recheck(
    store: Optional[str] = typer.Option(None, "--store", help=_STORE_HELP),
    model: Optional[str] = typer.Option(None, "--model", help="only this model name, family or fingerprint"),
    all_profiles: bool = typer.Option(False, "--all", help="re-measure every profile, not only those whose library versions changed"),
    repeats: int = typer.Option(2, min=1, help="interleaved rounds per prompt at least"),
    precision: float = typer.Option(0.1, min=0.0, help="more rounds until the speed-up's interval is within this share (0: exactly --repeats)"),
    max_seconds: float = typer.Option(120.0, "--max-seconds", min=0.0, help="cap on each profile's measurement"),
):
    """Re-measure stored profiles whose torch/diffusers/torchao/torch_npu versions differ from the
    installed ones, against a fresh baseline, and mark each holds, slower, below floor or no-op
    (all but holds mark it stale). Exit 1 when any was marked stale, for CI."""
    from .recheck import recheck as run_recheck

    with _database_errors(store):
        st = _store(store)
        results = run_recheck(st, model, all_profiles=all_profiles, repeats=repeats, precision=precision or None,
                              max_s=max_seconds, log=typer.echo)
    measured = [r for r in results if r.verdict is not None]
    stale = [r for r in measured if r.verdict != "holds"]
    typer.echo(f"recheck: {len(measured)} profile(s) re-measured, {len(stale)} marked stale, "
               f"{len(results) - len(measured)} not measurable here")
    if stale:
        raise typer.Exit(1)


def tune_summary(outcome, warm_start: str | None, echo=typer.echo) -> None:
    """After a warm-started study: how many of its warm-start points held on the new model."""
    if warm_start and getattr(outcome, "study", None) is not None:
        from .tuner.warm import summary

        line = summary(outcome.study)
        if line:
            echo(line)


def register(app: typer.Typer) -> None:
    app.command("publish")(publish)
    app.command("recheck")(recheck)
    app.add_typer(profiles_app, name="profiles")
