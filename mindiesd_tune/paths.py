"""Checks that an output path or a file-backed storage URL can be written, before any work starts.

The CLI calls these first, so that a bad ``--out`` or ``--storage`` is one line on stderr
and exit 2 instead of a traceback after a model has loaded and run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from .errors import UserError

# what ``run`` writes an image or a video as, by suffix
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_SUFFIXES = (".gif", ".webp", ".mp4")

_WHY = {
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a parent is a file, not a folder",
    errno.ENOENT: "refused by the file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
}


def _why(e: OSError) -> str:
    return _WHY.get(e.errno, e.strerror or type(e).__name__)


def check_writable(path: str | Path, what: str = "--out", folder: bool = False, label: str | None = None) -> Path:
    """Raise UserError unless ``path`` (a file, or a folder with ``folder=True``) can be written.

    Writing is tried rather than permission bits read: root ignores them, and a virtual file
    system such as /proc refuses new entries whatever its bits say. The probe (a temporary
    folder, or the first missing parent folder) is removed again.
    """
    path = Path(path).expanduser()
    label = label or f"{what} {path}"
    if path.exists():
        if folder and not path.is_dir():
            raise UserError(f"{label}: is a file, not a folder")
        if not folder:
            if path.is_dir():
                raise UserError(f"{label}: is a folder, not a file")
            try:
                with open(path, "ab"):  # opening to append changes nothing
                    pass
            except OSError as e:
                raise UserError(f"{label}: {_why(e)}") from None
    target = path if folder else path.parent
    ancestor = target
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{label}: parent {ancestor} is a file, not a folder")
    try:
        if ancestor == target:
            os.rmdir(tempfile.mkdtemp(prefix=".mindiesd-tune-check-", dir=target))
        else:
            first = target
            while first.parent != ancestor:
                first = first.parent
            first.mkdir()
            with contextlib.suppress(OSError):
                first.rmdir()
    except OSError as e:
        if ancestor == target:
            raise UserError(f"{label}: cannot write in {target} ({_why(e)})") from None
        raise UserError(f"{label}: cannot create folder {target} ({_why(e)})") from None
    return path


def storage_file(url: str) -> Path | None:
    """The file behind a ``sqlite:///FILE`` or ``journal:///FILE`` storage URL; None for a database server."""
    if url.startswith("sqlite:///"):
        file = url[len("sqlite:///"):].split("?", 1)[0]
        return Path(file) if file and file != ":memory:" else None
    if url.startswith("journal:///"):
        return Path(url[len("journal://"):])
    return None


def check_storage_writable(url: str | None, what: str = "--storage") -> None:
    """A file-backed Optuna storage must be writable, file and folder (SQLite in WAL mode
    writes files beside the database); a database server is checked when it is connected to."""
    file = storage_file(url) if url else None
    if file is not None:
        check_writable(file, label=f"{what} {url}")


def keep_previous(path: str | Path, new_text: str | None = None) -> Path | None:
    """Move an existing ``path`` (``profile.yaml``) aside as ``profile.<n>.yaml``, the next free n,
    so that writing a new one never loses the old; returns where it went, or None when there was
    nothing to keep (no file, or one identical to ``new_text``)."""
    path = Path(path)
    if not path.is_file():
        return None
    if new_text is not None and path.read_text(encoding="utf-8", errors="replace") == new_text:
        return None
    n = 1
    while (kept := path.with_name(f"{path.stem}.{n}{path.suffix}")).exists():
        n += 1
    path.rename(kept)
    return kept


def redact(url: str) -> str:
    """The URL without its password, for messages and files."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url
