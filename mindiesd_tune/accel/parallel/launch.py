"""Starting a rank group through torch.distributed.run's launcher, and stopping all of it.

``mindiesd-tune run`` and ``bench`` start their own rank group when a profile's mesh spans
several ranks, and ``tune --devices`` one per evaluator; each is
``python -m torch.distributed.run --standalone --nproc-per-node N -m MODULE ...`` (run by
``_launcher``, which keeps the launcher's failure report off stderr: rank 0 says what went
wrong) with ``MINDIESD_TUNE_RANK_GROUP=1`` in the ranks, so that they do not launch again.

torchrun starts every rank in its own session, so stopping the launcher's process group does
not reach them: the launcher is asked to stop them (SIGTERM, which it forwards), and each rank
also dies with its launcher (``die_with_parent``), so that nothing is left behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .watch import PHASE_DIR_ENV

GROUP_ENV = "MINDIESD_TUNE_RANK_GROUP"
# where each rank of a CLI group writes the exit code it ended with, so the launching command
# exits with rank 0's code (torchrun itself only says that a rank failed)
EXIT_DIR_ENV = "MINDIESD_TUNE_RANK_EXIT_DIR"


def in_rank_group() -> bool:
    """Whether this process is a rank of a group mindiesd-tune launched."""
    return os.environ.get(GROUP_ENV) == "1"


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def rank_device(device: str | None) -> str | None:
    """In a rank group mindiesd-tune launched, this rank's own device (``local_device``); else ``device``."""
    return local_device(device) if in_rank_group() else device


def local_device(device: str | None) -> str | None:
    """This rank's own device on an accelerator (torchrun's LOCAL_RANK); the CPU is shared."""
    import torch

    kind = torch.device(device).type if device else ("cuda" if torch.cuda.is_available() else "cpu")
    return f"{kind}:{os.environ.get('LOCAL_RANK', '0')}" if kind in ("cuda", "npu") else device


def die_with_parent() -> None:
    """Linux: have the kernel kill this process when its launcher dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def threads_per_rank(nproc: int) -> int:
    """CPU threads each rank gets when the group shares this machine's cores."""
    return max(1, (os.cpu_count() or 1) // nproc)


def torchrun_command(nproc: int, module: str, *args: str) -> list[str]:
    # torch.distributed.run's launcher, through a module that drops its failure report (``_launcher``)
    return [sys.executable, "-m", f"{__package__}._launcher", "--standalone", f"--nproc-per-node={nproc}",
            "--max-restarts=0", "-m", module, *args]


def group_env(nproc: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {}), GROUP_ENV: "1"}
    env.setdefault("OMP_NUM_THREADS", str(threads_per_rank(nproc)))
    return env


def stop(proc: subprocess.Popen, pids: list[int] = (), timeout: float = 30.0) -> None:
    """Stop a launcher and its ranks: SIGTERM (torchrun stops the ranks), then SIGKILL whatever is left."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def run_cli_group(nproc: int, argv: list[str]) -> int:
    """Run ``mindiesd-tune ARGV`` in ``nproc`` ranks and wait -> rank 0's exit code (any
    failing rank's when rank 0's is 0). The codes the ranks record when their command ends
    decide: a rank that recorded 0 and then died while the interpreter shut down (a C++
    library's teardown aborting) finished its work. Ctrl-C stops the whole group.

    A rank killed by a signal is named by the launcher in one line (with its last phase); the
    ranks it left with a broken collective say nothing more (``broken_group``), and their line
    is printed only when no rank was named. The ranks note their pids and phases in
    ``MINDIESD_TUNE_PHASE_DIR`` when the caller sets it (else in the group's own folder)."""
    with tempfile.TemporaryDirectory(prefix="mindiesd-ranks-") as folder:
        phases = os.environ.get(PHASE_DIR_ENV) or folder
        env = group_env(nproc, {EXIT_DIR_ENV: folder, PHASE_DIR_ENV: phases})
        proc = subprocess.Popen(torchrun_command(nproc, "mindiesd_tune.cli", *argv), env=env)
        try:
            code = wait_group(proc, phases)
        except BaseException:
            stop(proc, rank_pids(phases))
            raise
        codes = {int(p.stem.removeprefix("exit-")): int(p.read_text() or 1) for p in Path(folder).glob("exit-*")}
        broken = sorted(Path(folder).glob("broken-*"))
        if broken and not Path(phases, "failure").exists():
            sys.stderr.write(f"mindiesd-tune: error: {broken[0].read_text().strip()}\n")
        if codes.get(0):
            return codes[0]
        failing = [(r, c) for r, c in sorted(codes.items()) if c]
        if not failing and len(codes) == nproc:
            return 0
        if failing:
            err = Path(folder, f"stderr-{failing[0][0]}")
            if err.is_file():
                sys.stderr.write(err.read_text())
    return failing[0][1] if failing else (1 if code else 0)


def rank_pids(folder: str | os.PathLike) -> list[int]:
    """The pids the ranks noted in their phase folder (``watch.PhaseLog``)."""
    pids = []
    for path in Path(folder).glob("pid-*"):
        try:
            pids.append(int(path.read_text()))
        except (OSError, ValueError):
            pass
    return pids


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead, only not yet reaped
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False


def wait_group(proc: subprocess.Popen, phases: str | os.PathLike, grace_s: float = 10.0) -> int:
    """Wait for a launcher -> its exit code, never on a group that lost a rank: torchrun stops the
    others within a second of a rank's death; should it not within ``grace_s``, the group is
    stopped here. Ranks still alive once the launcher has gone are killed."""
    dead_since = None
    while True:
        try:
            code = proc.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            pass
        pids = rank_pids(phases)
        if dead_since is None and pids and not all(pid_alive(p) for p in pids):
            dead_since = time.monotonic()
        if dead_since is not None and time.monotonic() - dead_since > grace_s:
            stop(proc, pids, timeout=5)
            code = proc.returncode
            break
    for pid in rank_pids(phases):
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    return code


def broken_group(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because a peer rank went away (gloo: "Connection
    closed by peer"; NCCL/HCCL: a DistError): the rank that died is named by the launcher."""
    try:
        from torch.distributed import DistError
    except ImportError:  # torch without distributed
        DistError = ()  # noqa: N806
    text = str(exc)
    return isinstance(exc, DistError) or (isinstance(exc, RuntimeError) and any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe")))


def record_broken(exc: BaseException) -> None:
    """In a rank of a CLI group whose collective broke: keep its one line for the launching command."""
    folder = os.environ.get(EXIT_DIR_ENV)
    if folder and os.path.isdir(folder):
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        Path(folder, f"broken-{rank()}").write_text(f"rank {rank()}: a collective failed ({first})")


def run_as_rank(command, argv) -> None:
    """Run the CLI's ``command(argv)`` as a rank of a group ``run`` or ``bench`` launched: rank 0
    speaks, another rank's errors are kept for when only that rank failed, every rank's exit code
    is noted, and a rank whose collective broke because a peer died exits 1 quietly (the launcher
    names the peer; a traceback here would bury that line, and tearing down a process group with
    a dead peer can block)."""
    from .watch import note

    die_with_parent()
    if rank() != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (for the life of the process)
        sys.stderr = rank_stderr()
    note("starting")
    try:
        command(argv)
    except SystemExit as e:
        record_exit(e.code if isinstance(e.code, int) else (0 if e.code is None else 1))
        raise
    except BaseException as e:
        record_exit(1)
        if broken_group(e):
            record_broken(e)
            sys.stdout.flush()
            os._exit(1)
        raise


def rank_stderr():
    """In a rank other than 0 of a CLI group: a file for its stderr, printed by the launching
    command only when that rank failed and rank 0 did not (rank 0 says the same otherwise)."""
    folder = os.environ.get(EXIT_DIR_ENV)
    if not folder or not os.path.isdir(folder):
        return sys.stderr
    return open(Path(folder, f"stderr-{rank()}"), "w", buffering=1)  # noqa: SIM115  (for the life of the process)


def record_exit(code: int) -> None:
    """In a rank of a CLI group: note this rank's exit code for the launching command."""
    folder = os.environ.get(EXIT_DIR_ENV)
    if folder and os.path.isdir(folder):
        Path(folder, f"exit-{rank()}").write_text(str(code))
