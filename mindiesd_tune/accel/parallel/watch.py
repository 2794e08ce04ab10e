"""Watching rank processes: what each was doing, and a dead rank named in one line.

Everything that waits on a rank process (the rank groups, ``benchmarks/parallel.py``, the stress
harness, the tests' ``run_ranks``) waits with a timeout and checks that the ranks are alive, so
that a rank that dies ends the wait within seconds instead of leaving the others blocked in a
collective or the parent blocked on a queue. Each rank notes its current phase in a file
(``PhaseLog``); when one dies, ``RankDied`` says which rank, how it ended (its exit signal or
code) and the phase it was in, e.g. ``rank 1 was killed by SIGKILL (last phase: call 3/50:
demo-flux ulysses2)``.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

PHASE_DIR_ENV = "MINDIESD_TUNE_PHASE_DIR"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def how_it_ended(exitcode: int | None) -> str:
    """``was killed by SIGKILL`` / ``exited with code 1`` / ``is still running``."""
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with code {exitcode}"


class RankDied(RuntimeError):
    """A rank process ended before its work did (or the ranks did not finish in time)."""

    def __init__(self, message: str, rank: int | None = None, exitcode: int | None = None, details: str = ""):
        super().__init__(message)
        self.rank, self.exitcode, self.details = rank, exitcode, details

    @classmethod
    def of(cls, rank, exitcode: int | None, phase: str | None, what: str = "", label: str = "") -> "RankDied":
        """``rank 1 was killed by SIGKILL (last phase: ...)``; ``label`` names another kind of process."""
        where = f" (last phase: {phase})" if phase else ""
        return cls(f"{label or f'rank {rank}'} {what or how_it_ended(exitcode)}{where}", rank, exitcode)


class PhaseLog:
    """One rank's current phase, in ``FOLDER/phase-RANK``, and its process id in ``FOLDER/pid-RANK``
    (for whoever has to stop it); a no-op without a folder. ``rank`` may be any name."""

    def __init__(self, folder: str | os.PathLike | None, rank):
        self.path = Path(folder, f"phase-{rank}") if folder else None
        if self.path is not None:
            try:
                Path(folder, f"pid-{rank}").write_text(str(os.getpid()))
            except OSError:
                self.path = None

    @classmethod
    def from_env(cls, rank) -> "PhaseLog":
        folder = os.environ.get(PHASE_DIR_ENV)
        return cls(folder if folder and os.path.isdir(folder) else None, rank)

    def set(self, phase: str) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(phase)
            os.replace(tmp, self.path)  # a reader never sees half a line
        except OSError:
            pass


def read_phase(folder: str | os.PathLike | None, rank) -> str | None:
    if not folder:
        return None
    try:
        return Path(folder, f"phase-{rank}").read_text().strip() or None
    except OSError:
        return None


def read_pid(folder: str | os.PathLike | None, rank) -> int | None:
    if not folder:
        return None
    try:
        return int(Path(folder, f"pid-{rank}").read_text())
    except (OSError, ValueError):
        return None


def kill_all(processes) -> None:
    """SIGKILL every process still alive and reap it (no zombie left)."""
    for p in processes:
        if p.is_alive():
            p.kill()
    for p in processes:
        p.join(5)


def join_ranks(ctx, timeout: float, folder: str | os.PathLike | None = None, grace_s: float = 2.0) -> None:
    """Wait for ``torch.multiprocessing``'s ``ProcessContext`` ``ctx`` to finish.

    A rank that dies or raises ends the wait at once (``ProcessContext.join`` stops the others:
    SIGTERM after ``grace_s``, SIGKILL after as long again) with ``RankDied`` naming it, its exit
    signal or code and its last phase (from ``folder``'s ``PhaseLog``); after ``timeout`` seconds
    every rank is killed and ``RankDied`` names each one's phase.
    """
    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=min(1.0, max(0.0, deadline - time.monotonic())), grace_period=grace_s):
            if time.monotonic() >= deadline:
                phases = "; ".join(f"rank {r}: {read_phase(folder, r) or 'unknown'}" for r in range(len(ctx.processes)))
                raise RankDied(f"the ranks did not finish within {timeout:.0f} s ({phases})")
    except ProcessExitedException as e:
        raise RankDied.of(e.error_index, e.exit_code, read_phase(folder, e.error_index)) from None
    except ProcessRaisedException as e:
        last = next((line for line in reversed(str(e).strip().splitlines()) if line.strip()), "an exception")
        err = RankDied.of(e.error_index, 1, read_phase(folder, e.error_index), what=f"raised {last.strip()}")
        err.details = str(e)
        raise err from None
    finally:
        kill_all(ctx.processes)


_LOG: PhaseLog | None = None


def note(phase: str) -> None:
    """In a rank of a group mindiesd-tune launched: note this rank's phase (and pid) where the
    launcher and the driver look; elsewhere nothing."""
    global _LOG
    if os.environ.get("MINDIESD_TUNE_RANK_GROUP") != "1":  # launch.GROUP_ENV (launch imports this module)
        return
    if _LOG is None:
        _LOG = PhaseLog.from_env(int(os.environ.get("RANK", "0")))
    _LOG.set(phase)
