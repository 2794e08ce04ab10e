"""Where a study lives: SQLite in the run folder (one worker), Optuna's journal file (several
local workers), or any Optuna RDB URL such as PostgreSQL (several machines).

The run folder's run.json records the storage URL and study name, so `report`, `export` and
`tune --resume` find the study again without being told.

RDB storages (SQLite included) can keep Optuna's trial heartbeats, so a trial whose process died
is told apart from one still running. Optuna's JournalStorage keeps none in this version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import optuna

from ..errors import UserError
from ..paths import redact
from .quiet import ignoring

STUDY_DB = "study.db"
JOURNAL = "journal.log"
RUN_JSON = "run.json"
# seconds a SQLite connection waits for another writer (Python's default is 5): worker threads
# and their heartbeats share one file, and a slow disk must not fail a trial
SQLITE_TIMEOUT = 60.0


def default_storage(out_dir: Path, workers: int) -> str:
    if workers > 1:  # Optuna advises against SQLite with parallel writers
        return f"journal:///{(out_dir / JOURNAL).resolve()}"
    return f"sqlite:///{(out_dir / STUDY_DB).resolve()}"


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 on_stale: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None):
    """An Optuna storage object for ``url`` (``journal:///path`` for a journal file).

    With ``heartbeat_interval`` an RDB storage keeps trial heartbeats: a running trial silent for
    ``grace_period`` seconds is failed by ``optuna.storages.fail_stale_trials``, which then calls
    ``on_stale(study, trial)``. Recording the heartbeats is the caller's job.
    """
    if url.startswith("journal:///"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal://"):]))
    heartbeat = {}
    if heartbeat_interval is not None:
        heartbeat = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period,
                     "heartbeat_stale_trial_callback": on_stale}
    if url.startswith("sqlite:"):
        return _sqlite_storage(url, heartbeat)
    if url.startswith(("postgresql", "mysql", "oracle", "mssql")):
        try:
            return _rdb_storage(url, {"pool_pre_ping": True}, heartbeat)
        except ImportError as e:
            how = "pip install 'mindiesd-tune[postgres]'" if url.startswith("postgresql") else "install its driver"
            raise UserError(f"storage {redact(url)}: a database driver is missing ({e}); {how}") from None
        except Exception as e:  # noqa: BLE001  (connection refused, bad credentials, ...)
            raise UserError(f"storage {redact(url)}: cannot connect ({type(e).__name__}: {str(e).strip().splitlines()[0][:200]})") from None
    raise UserError(f"storage {url!r}: use sqlite:///FILE, journal:///FILE or a database URL such as postgresql://...")


def _rdb_storage(url: str, engine_kwargs: dict, heartbeat: dict):
    with ignoring(optuna.exceptions.ExperimentalWarning):  # the heartbeat arguments are marked experimental
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)


def _sqlite_storage(url: str, heartbeat: dict):
    """SQLite in WAL mode without a sync per commit: a trial writes a dozen small records, and
    a full fsync each (tens of ms here) would cost more than a small model's trial. WAL keeps the
    database consistent on a crash; at worst the last trial's records are lost."""
    from sqlalchemy import event

    storage = _rdb_storage(url, {"connect_args": {"timeout": SQLITE_TIMEOUT}}, heartbeat)

    def _pragmas(conn, _record):
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(storage.engine, "connect", _pragmas)
    storage.engine.dispose()  # reconnect with the pragmas
    return storage


def write_run_json(out_dir: Path, storage_url: str, study_name: str) -> None:
    # the password is left out: a shared run folder must not leak it; `report` asks for --storage then
    data = {"storage": redact(storage_url), "study": study_name, "has_password": redact(storage_url) != storage_url}
    (out_dir / RUN_JSON).write_text(json.dumps(data, indent=2))


def read_run_json(out_dir: Path) -> dict | None:
    path = out_dir / RUN_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def has_study(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a study with trials; the files of one that never got to its first
    trial (a process killed while the model loaded) are removed, so the folder can be used afresh."""
    files = [out_dir / RUN_JSON, *out_dir.glob(STUDY_DB + "*"), *out_dir.glob(JOURNAL + "*")]
    if not any(f.is_file() for f in files):
        return False
    if (out_dir / RUN_JSON).is_file() and (read_run_json(out_dir) or {}).get("has_password"):
        return True  # its database is not ours to open without the password
    try:
        with ignoring():
            study = load_run(out_dir)
            empty = not study.get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001  (unreadable: keep it, and let the caller say it is there)
        return True
    if empty:
        for f in files:
            f.unlink(missing_ok=True)
    return not empty


def _own_file(run_dir: Path, url: str) -> str:
    """run.json names the study file where `tune` wrote it; a run folder since moved or copied
    holds its own copy, which is the one that belongs to it."""
    for scheme, name in (("sqlite:///", STUDY_DB), ("journal:///", JOURNAL)):
        if url.startswith(scheme) and Path(url[len(scheme):]).name == name and (run_dir / name).is_file():
            return f"{scheme}{(run_dir / name).resolve()}"
    return url


def run_storage(run_dir: Path) -> str:
    """The storage URL a run folder's study lives in: its run.json, else a study.db or journal.log there."""
    meta = read_run_json(run_dir)
    if meta is not None and not meta.get("has_password"):
        return _own_file(run_dir, meta["storage"])
    if meta is not None:
        raise UserError(f"{run_dir}: the study's database needs a password; pass --storage with the full URL")
    if (run_dir / STUDY_DB).is_file():
        return f"sqlite:///{(run_dir / STUDY_DB).resolve()}"
    if (run_dir / JOURNAL).is_file():
        return f"journal:///{(run_dir / JOURNAL).resolve()}"
    raise UserError(f"{run_dir}: no study here (no {RUN_JSON}, {STUDY_DB} or {JOURNAL}); is this a run folder written by `tune`?")


def load_run(run_dir: str | Path, storage: str | None = None) -> optuna.Study:
    """The study of a run folder (its run.json, or study.db / journal.log found there)."""
    run_dir = Path(run_dir)
    meta = read_run_json(run_dir)
    if storage is None:
        storage = run_storage(run_dir)
    st = open_storage(storage)
    names = [s.study_name for s in optuna.study.get_all_study_summaries(st)]
    name = meta["study"] if meta is not None else (names[0] if len(names) == 1 else None)
    if name is None or name not in names:
        raise UserError(f"{run_dir}: expected one study in {redact(storage)}, found {len(names)}")
    return optuna.load_study(study_name=name, storage=st)


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes. Optuna has no public accessor for it, yet an ask/tell
    driver needs the storage's own (public) methods: fail a trial another process left running,
    record heartbeats, read one trial without copying the study. The one private read is here,
    and tests/test_tuner_storage.py fails loudly if an Optuna release moves it."""
    return study._storage



def trial_id_of(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The id a trial has in its storage, which the storage's methods take (unlike its number,
    it is unique across the studies a storage holds). Neither Trial nor FrozenTrial exposes it
    publicly; the one private read is here, and tests/test_tuner_storage.py fails loudly if an
    Optuna release renames it."""
    try:
        return trial._trial_id
    except AttributeError:
        raise RuntimeError(f"optuna {optuna.__version__}: {type(trial).__name__} has no _trial_id, "
                           "which the study driver needs to reach a trial in its storage") from None
