"""The profile store's tables, its schema version and the way a store URL is opened.

A store is a SQLite file (one machine, the default) or a database server such as PostgreSQL (a
fleet), named by the same URL forms as ``tune --storage``; the tables carry an ``mdt_`` prefix so
a store can live in the very database a shared study uses, beside Optuna's own tables.

The schema is versioned by the one-row table ``mdt_store_schema``. Opening a store brings an
older schema up to ``SCHEMA_VERSION`` through ``MIGRATIONS`` (each a function run in the same
transaction as the version bump), and refuses a newer one naming the version it needs. A hand
rolled chain rather than Alembic: Alembic is installed (Optuna needs it) but wants a migration
folder and an ini file on disk, which a pip-installed tool opening a user's database by URL has
no place for; the chain is the same idea as ``profile.MIGRATIONS`` for profile files.
"""

from __future__ import annotations

import datetime as _dt
import threading
from pathlib import Path
from typing import Callable

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine

from ..errors import UserError

SCHEMA_VERSION = 1
# PostgreSQL advisory lock key: the processes that open a new store at once create its tables one
# after the other (CREATE TABLE IF NOT EXISTS is not safe against a concurrent creator there)
_LOCK_KEY = 0x6D64747374  # "mdtst"
SQLITE_TIMEOUT = 60.0  # seconds a SQLite writer waits for another (as tuner.storage)

STATUSES = ("active", "retired", "stale")
VERDICTS = ("holds", "slower", "below floor", "no-op")
WORKLOAD_KEYS = ("height", "width", "num_frames", "num_inference_steps", "guidance_scale")
VERSION_KEYS = ("torch", "diffusers", "torchao", "torch_npu")

metadata = MetaData()

schema_table = Table("mdt_store_schema", metadata, Column("version", Integer, nullable=False))

profiles = Table(
    "mdt_profiles", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # sha256 of the frozen profile and the machine: publishing the same profile twice is one row
    Column("digest", String(64), nullable=False, unique=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),  # active | retired | stale (a recheck found it no longer holds)
    Column("verdict", String(16)),  # the last recheck's: holds | slower | below floor | no-op
    Column("checked", DateTime(timezone=True)),
    # the model
    Column("model_name", String(512), nullable=False),
    Column("family", String(64), nullable=False, index=True),
    Column("pipeline", String(128)),
    Column("fingerprint", String(64), index=True),
    Column("dtype", String(32)),
    # the machine: device kind (device, device_name) and the rest of the hardware fingerprint
    Column("device", String(16), nullable=False),
    Column("device_name", String(255)),
    Column("device_count", Integer),
    Column("cpu_model", String(255)),
    Column("cpu_flags", String(64)),  # sha256 of the sorted CPU flags, 16 hex digits
    Column("machine", String(64), nullable=False),  # hash of the five above
    # the workload
    Column("height", Integer), Column("width", Integer), Column("num_frames", Integer),
    Column("num_inference_steps", Integer), Column("guidance_scale", Float),
    # library versions it was measured with
    Column("torch", String(64)), Column("diffusers", String(64)),
    Column("torchao", String(64)), Column("torch_npu", String(64)),
    # the measured figures (all of them in `measured`, JSON; the speed-up also as columns to sort on)
    Column("speedup", Float), Column("speedup_low", Float), Column("speedup_high", Float),
    Column("measured", Text, nullable=False),
    Column("profile", Text, nullable=False),  # the frozen profile, YAML as profile.yaml holds it
    Column("front", Text),  # JSON list of the study front's trial params (warm starts), when published from a study
)

checks = Table(
    "mdt_profile_checks", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("profile_id", Integer, ForeignKey("mdt_profiles.id"), nullable=False, index=True),
    Column("checked", DateTime(timezone=True), nullable=False),
    Column("versions", Text, nullable=False),  # JSON: the installed versions it was re-measured with
    Column("verdict", String(16), nullable=False),
    Column("speedup", Float), Column("speedup_low", Float), Column("speedup_high", Float),
    Column("metrics", Text),  # JSON: quality against a fresh baseline
    Column("skipped_fraction", Float),
    Column("note", Text),
)

# MIGRATIONS[n](conn) turns a schema-n store into a schema n+1 one, inside the opening transaction.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {}


def now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def redact(url: str) -> str:
    from ..paths import redact as _redact

    return _redact(url)


def check_url(url: str) -> None:
    """A URL the store cannot be opened from, refused in one line (before any import of a driver)."""
    if url.startswith("journal:"):
        raise UserError(f"store {url!r}: a journal file holds Optuna studies only; use sqlite:///FILE "
                        "or a database URL such as postgresql://...")
    if not url.startswith(("sqlite:", "postgresql", "mysql", "oracle", "mssql")):
        raise UserError(f"store {redact(url)!r}: use sqlite:///FILE or a database URL such as postgresql://user@host/db")


def default_url() -> str:
    """``$MINDIESD_TUNE_STORE``, else a SQLite file in the user's data folder."""
    import os

    if os.environ.get("MINDIESD_TUNE_STORE"):
        return os.environ["MINDIESD_TUNE_STORE"]
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return f"sqlite:///{Path(data) / 'mindiesd-tune' / 'profiles.db'}"


_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(url: str) -> Engine:
    """An engine for ``url`` with the schema in place (created or migrated); one per URL a process."""
    check_url(url)
    with _ENGINES_LOCK:
        if url in _ENGINES:
            return _ENGINES[url]
        engine = _connect(url)
        _ensure_schema(engine, url)
        _ENGINES[url] = engine
        return engine


def dispose(url: str | None = None) -> None:
    """Close the pooled connections of one store (or all): tests stop their servers after it."""
    with _ENGINES_LOCK:
        for key in [url] if url is not None else list(_ENGINES):
            engine = _ENGINES.pop(key, None)
            if engine is not None:
                engine.dispose()


def _connect(url: str) -> Engine:
    if url.startswith("sqlite:"):
        from ..paths import storage_file

        file = storage_file(url)
        if file is not None:
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"store {url}: cannot create folder {file.parent} ({e.strerror or e})") from None
        engine = create_engine(url, connect_args={"timeout": SQLITE_TIMEOUT})

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record):  # WAL: readers do not block the one writer (as tuner.storage)
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except ImportError as e:
        how = "pip install 'mindiesd-tune[postgres]'" if url.startswith("postgresql") else "install its driver"
        raise UserError(f"store {redact(url)}: a database driver is missing ({e}); {how}") from None
    except Exception as e:  # noqa: BLE001  (a malformed URL)
        raise UserError(f"store {redact(url)}: {type(e).__name__}: {_first_line(e)}") from None


def _ensure_schema(engine: Engine, url: str) -> None:
    for attempt in range(3):
        try:
            return _create_or_migrate(engine, url)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001  (connection refused, bad credentials, unreadable file, ...)
            # two processes creating a new SQLite store at once: the loser's CREATE TABLE finds
            # the winner's table; the next attempt sees it and creates nothing
            if attempt < 2 and "already exists" in str(e):
                continue
            raise UserError(f"store {redact(url)}: cannot open ({type(e).__name__}: {_first_line(e)})") from None


def _create_or_migrate(engine: Engine, url: str) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        metadata.create_all(conn, checkfirst=True)
        version = conn.execute(select(schema_table.c.version)).scalar()
        if version is None:
            conn.execute(schema_table.insert().values(version=SCHEMA_VERSION))
            return
        if version > SCHEMA_VERSION:
            raise UserError(f"store {redact(url)}: schema {version} is newer than this mindiesd-tune reads "
                            f"(schema {SCHEMA_VERSION} at most); upgrade mindiesd-tune")
        for v in range(version, SCHEMA_VERSION):
            MIGRATIONS[v](conn)
            conn.execute(schema_table.update().values(version=v + 1))


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else ""
