"""Trials that span several ranks: a group of rank processes per evaluator, the model loaded in each.

``RankGroupWorker`` serves the worker protocol (``tuner.protocol.Worker``) as ``ProcessWorker`` does.
It launches N ranks through ``torch.distributed.run`` (the launcher in
its own session), and rank 0 connects back to the driver (``multiprocessing.connection``, with
a random authkey) and runs the usual evaluator (``worker.build_evaluator`` and the messages of
``worker._child_main``). The other ranks follow: rank 0 broadcasts each meshed install, call
and removal to them (``Leader``), and they repeat it in step (``follow``), so every trial and
every metric is computed once, on rank 0.

Latency is rank 0's wall time for the whole call. The baseline it is compared against uses
the same total hardware: on the CPU, rank 0 runs every single-device call (the baseline, a
trial without a mesh) alone with the threads of the whole group while the other ranks wait,
and each meshed call with its own share; on accelerators the single-device call has one
device, as a deployment without a mesh would.

A rank that dies (the launcher then stops the others) or a trial that does not answer within
``trial_timeout`` fails that trial only: the group is stopped, nothing is left behind, and the
next trial starts a new group.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, replace
from datetime import timedelta
from multiprocessing.connection import Client, Listener

from ..accel.parallel.watch import PHASE_DIR_ENV, note, read_phase, read_pid
from .outcome import FAILED, INTERRUPTED, OK, PRUNED, TrialOutcome
from .quiet import quiet_process_when_asked
from .worker import INTERRUPTED as INTERRUPTED_REASON
from .worker import WorkerDied, WorkerSpec, WorkerStartError

logger = logging.getLogger(__name__)

ADDRESS_ENV = "MINDIESD_TUNE_LEADER_ADDRESS"
AUTHKEY_ENV = "MINDIESD_TUNE_LEADER_AUTHKEY"
WORLD_ENV = "MINDIESD_TUNE_GROUP_THREADS"  # CPU threads of the whole group: rank 0's when alone
# collectives wait this long: the other ranks wait on rank 0 between trials and while it loads
# and computes the baseline; a hang is the driver's ``trial_timeout`` to catch
_COLLECTIVE_TIMEOUT = timedelta(days=7)


# --------------------------------------------------------------------------- inside the ranks


def _broadcast(obj=None):
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class Leader:
    """Rank 0: mirrors every meshed install, call and removal on the other ranks.

    ``lead(evaluator)`` makes it the evaluator's ``mirror``: ``accel.apply`` announces each mesh
    installed and removed through it (``installing``, ``removing``), and each call while a mesh
    is installed is broadcast first and runs with this rank's thread share (``call``); any other
    call (the baseline) runs here alone with the whole group's threads.
    """

    def __init__(self, threads_alone: int | None, threads_each: int | None):
        self.threads_alone, self.threads_each = threads_alone, threads_each
        self.meshed = False
        self.led = None  # the evaluator led, once ``lead`` ran

    def send(self, *cmd) -> None:
        _broadcast(cmd)

    # the parallel method's installer calls these (``Handle.mirror``)
    def installing(self, accel_config: dict) -> None:
        self.send("apply", accel_config)
        self.meshed = True

    def removing(self) -> None:
        self.send("remove")
        self.meshed = False

    @contextlib.contextmanager
    def call(self, prompt, seed, overrides=None):
        """Around one of the evaluator's pipeline calls: a meshed one is repeated by the other ranks."""
        if not self.meshed:
            yield
            return
        import torch

        self.send("call", prompt, seed, overrides)
        note("meshed call")
        if self.threads_each:
            torch.set_num_threads(self.threads_each)
        try:
            yield
        finally:
            note("between meshed calls")
            if self.threads_alone:
                torch.set_num_threads(self.threads_alone)

    def lead(self, evaluator) -> None:
        evaluator.mirror = self
        self.led = evaluator

    def stop(self) -> None:
        """Release the following ranks (they return from ``follow``); nothing before ``lead``."""
        if self.led is None:
            return
        self.led.mirror, self.led = None, None
        self.send("stop")


def follow(loaded, workload) -> None:
    """Ranks 1..N-1: repeat rank 0's meshed installs, calls and removals until it says stop."""
    from ..accel import apply
    from ..accel.config import AccelConfig
    from .evaluator import Evaluator

    ev = Evaluator(loaded, workload, warmup=0, repeats=1)
    handle = None
    while True:
        note("waiting for rank 0")
        cmd = _broadcast()
        note(f"following rank 0: {cmd[0]}")
        try:
            if cmd[0] == "stop":
                return
            if cmd[0] == "apply":
                handle = apply(loaded.pipe, AccelConfig.from_dict(cmd[1]))
            elif cmd[0] == "remove" and handle is not None:
                handle.remove()
                handle = None
            elif cmd[0] == "call":
                import torch

                with torch.inference_mode():
                    ev.generate(cmd[1], cmd[2], cmd[3])
        except Exception:  # noqa: BLE001  (rank 0 fails the same way, or times out and restarts the group)
            logger.exception("rank follower: %s failed", cmd[0])
            if cmd[0] == "apply":
                handle = None


def build_leader(leader: Leader, spec: WorkerSpec):
    """Rank 0's evaluator factory: the usual evaluator, its meshed calls mirrored on the other ranks
    by ``leader``."""
    import torch
    import torch.distributed as dist

    from ..accel.parallel import valid_meshes
    from .worker import build_evaluator

    world = dist.get_world_size()
    if leader.threads_alone:
        torch.set_num_threads(leader.threads_alone)
    ev, info = build_evaluator(spec)  # the baseline runs here, alone: the other ranks wait below
    _broadcast({"prompts": ev.workload.prompts, "seeds": ev.workload.seeds, "generation": ev.workload.generation})
    pids = [None] * world
    dist.all_gather_object(pids, os.getpid())
    leader.lead(ev)
    meshes = valid_meshes(ev.pipe, ev.workload.generation, world, ev.device)
    info["space"] = {**info["space"], "world_size": world,
                     "meshes": [m.describe() for m in meshes if m.world_size in (1, world)]}
    info["rank_group"] = {"world_size": world, "pids": pids, "threads_alone": leader.threads_alone,
                          "threads_each": leader.threads_each}
    return ev, info


def join_group(device) -> None:
    """Join the process group torchrun describes, collectives waiting as long as rank 0 may work alone."""
    import torch
    import torch.distributed as dist

    from ..accel.parallel.mesh import backend_for

    if not dist.is_initialized():
        dist.init_process_group(backend_for(torch.device(device)), timeout=_COLLECTIVE_TIMEOUT)


def lead_or_follow(evaluator) -> Leader | None:
    """In a rank group a CLI command launched: rank 0 leads ``evaluator`` (its Leader, to ``stop()``
    when done); the other ranks repeat its meshed calls until it stops them (None, once stopped)."""
    import torch
    import torch.distributed as dist

    join_group(evaluator.device)
    if dist.get_rank() != 0:
        follow(evaluator.loaded, evaluator.workload)
        return None
    each = torch.get_num_threads()
    leader = Leader(each * dist.get_world_size(), each)
    torch.set_num_threads(leader.threads_alone)  # the baseline uses the whole group's threads
    leader.lead(evaluator)
    return leader


def _device(spec: WorkerSpec) -> str | None:
    from ..accel.parallel.launch import local_device

    return local_device(spec.device)


def _rank_main() -> None:
    import torch
    import torch.distributed as dist

    from ..accel.parallel.launch import die_with_parent
    from .worker import _child_main

    die_with_parent()
    quiet_process_when_asked()
    note("joining the group")
    rank = int(os.environ["RANK"])
    kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    join_group(kind)
    try:
        if rank == 0:
            host, _, port = os.environ[ADDRESS_ENV].rpartition(":")
            conn = Client((host, int(port)), authkey=bytes.fromhex(os.environ[AUTHKEY_ENV]))
            spec_dict = _broadcast(conn.recv())
            spec = replace(WorkerSpec(**spec_dict), device=_device(WorkerSpec(**spec_dict)))
            leader = Leader(int(os.environ.get(WORLD_ENV, "0")) or None, spec.threads)
            try:
                # builds the evaluator (build_leader) and answers the driver
                _child_main(conn, asdict(spec), factory=functools.partial(build_leader, leader))
            finally:
                if leader.led is None:
                    _broadcast(None)  # the evaluator was not built: the other ranks stop
                leader.stop()  # nothing when it was not built
        else:
            spec = WorkerSpec(**_broadcast())
            spec = replace(spec, device=_device(spec))
            if spec.threads:
                torch.set_num_threads(spec.threads)
            from ..models import load
            from .evaluator import Workload

            note(f"loading {spec.model}")
            loaded = load(spec.model, device=spec.device, dtype=spec.dtype, allow_download=spec.allow_download, seed=0)
            w = _broadcast()
            if w is None:
                return
            pids = [None] * dist.get_world_size()
            dist.all_gather_object(pids, os.getpid())
            follow(loaded, Workload(w["prompts"], w["seeds"], w["generation"]))
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------- the driver's side


class RankGroupWorker:
    """An evaluator spanning ``world_size`` rank processes; restarted after a failed trial.

    ``spec.threads``: CPU threads of each rank (the baseline gets ``world_size`` times as many);
    ``trial_timeout``: seconds a trial may take before the group is taken for hung.
    """

    def __init__(self, spec: WorkerSpec, world_size: int, start_timeout: float = 3600.0, trial_timeout: float = 3600.0):
        if world_size < 2:
            raise ValueError("a rank group has at least 2 ranks")
        self.spec, self.world_size = spec, world_size
        self.start_timeout, self.trial_timeout = start_timeout, trial_timeout
        self._proc: subprocess.Popen | None = None
        self._conn = None
        self._info: dict | None = None
        self._pids: list[int] = []
        self._phases: str | None = None  # where the ranks note their pids and phases (watch.PhaseLog)
        self.restarts = 0
        self._started = False
        self._aborted = False

    @property
    def screens(self) -> bool:
        """A rank group times every trial in full: the screen's single timing pair has not been
        checked against a mesh's collective calls."""
        return False

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pids(self) -> list[int]:
        """The launcher's and every rank's process id (empty before the group started)."""
        return ([self._proc.pid] if self._proc is not None else []) + list(self._pids)

    def start(self) -> dict:
        if self.alive and self._conn is not None:
            return self._info
        if self._started:
            self.restarts += 1
        self.close()
        self._started = True
        from ..accel.parallel.launch import group_env, threads_per_rank, torchrun_command

        threads = self.spec.threads or threads_per_rank(self.world_size)
        spec = replace(self.spec, threads=threads)
        key = secrets.token_bytes(32)
        listener = Listener(("127.0.0.1", 0), authkey=key)
        host, port = listener.address
        self._phases = tempfile.mkdtemp(prefix="mindiesd-group-")
        env = group_env(self.world_size, {**spec.env, ADDRESS_ENV: f"{host}:{port}", AUTHKEY_ENV: key.hex(),
                                          WORLD_ENV: str(threads * self.world_size), "OMP_NUM_THREADS": str(threads),
                                          PHASE_DIR_ENV: self._phases})
        self._proc = subprocess.Popen(torchrun_command(self.world_size, __name__), env=env, start_new_session=True,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        if self._aborted:
            self._kill()
        accepted: list = []
        waiter = threading.Thread(target=lambda: accepted.append(_accept(listener)), daemon=True)
        waiter.start()
        deadline = time.monotonic() + self.start_timeout
        while waiter.is_alive() and self._proc.poll() is None and time.monotonic() < deadline:
            waiter.join(0.2)
        listener.close()
        waiter.join(5)
        if not accepted or accepted[0] is None:
            code = self._proc.poll()
            self.close()
            raise WorkerStartError(f"the rank group did not start (launcher exit code {code})")
        self._conn = accepted[0]
        self._conn.send(asdict(spec))
        try:
            msg = self._recv(self.start_timeout)
        except WorkerDied as e:
            self.close()
            raise WorkerStartError(str(e)) from None
        if msg[0] != "ready":
            self.close()
            raise WorkerStartError(msg[1])
        self._info = msg[1]
        self._pids = list(self._info.get("rank_group", {}).get("pids", []))
        return self._info

    def _recv(self, timeout: float | None):
        """Rank 0's next message; ``WorkerDied`` as soon as a rank is gone (or after ``timeout``)."""
        from ..accel.parallel.launch import pid_alive, rank_pids

        deadline = None if timeout is None else time.monotonic() + timeout
        conn, proc = self._conn, self._proc
        dead_since = None
        while True:
            try:
                if conn.poll(0.2):
                    return conn.recv()
            except (EOFError, OSError):
                pass
            if proc.poll() is not None:
                raise WorkerDied(self._death())
            # torchrun stops the group within a second of a rank's death; this is in case it does not
            if dead_since is None and not all(pid_alive(p) for p in rank_pids(self._phases)):
                dead_since = time.monotonic()
            if dead_since is not None and time.monotonic() - dead_since > 10:
                raise WorkerDied(self._death())
            if deadline is not None and time.monotonic() > deadline:
                raise WorkerDied(f"the rank group did not answer within {timeout:.0f}s")

    def _death(self, wait_s: float = 5.0) -> str:
        """One line on the rank that died: the launcher's (rank, exit signal, last phase) once it has
        stopped the group, else the first rank found dead, with its last phase."""
        from ..accel.parallel.launch import pid_alive

        try:
            self._proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            pass
        failure = os.path.join(self._phases or "", "failure")
        if self._phases and os.path.isfile(failure):
            with open(failure) as f:
                return f.read().strip()
        for rank in range(self.world_size):
            pid = read_pid(self._phases, rank)
            if pid is not None and not pid_alive(pid):
                return f"rank {rank} died (last phase: {read_phase(self._phases, rank) or 'unknown'})"
        return f"a rank of the group died (launcher exit code {self._proc.returncode})"

    def _call(self, message: tuple) -> TrialOutcome:
        if self._aborted:
            return TrialOutcome.interrupted(INTERRUPTED_REASON)
        try:
            self.start()
            self._conn.send(message)
            outcome = _outcome(self._recv(self.trial_timeout))
        except (WorkerDied, OSError) as e:
            if self._aborted:
                return TrialOutcome.interrupted(INTERRUPTED_REASON)
            # dead or hung: a rank stuck in a collective would not read a polite stop
            self._kill()
            outcome = TrialOutcome.failed(f"WorkerDied: {e}; the group will be restarted")
        if outcome.kind == FAILED:
            if not outcome.reason.startswith("WorkerDied") and not self._whole():
                # rank 0 saw the collective break (a peer died) before the launcher noticed
                outcome = TrialOutcome.failed(f"WorkerDied: {self._death()} ({outcome.reason}); "
                                              "the group will be restarted")
            # a rank may be stuck inside the failed call: the next trial starts from a new group
            self.close()
        return outcome

    def _whole(self, wait_s: float = 2.0) -> bool:
        """Whether the launcher and every rank are still alive (a dying peer gets ``wait_s`` to show)."""
        deadline = time.monotonic() + wait_s
        while True:
            whole = self._proc is not None and self._proc.poll() is None and all(_pid_alive(p) for p in self._pids)
            if not whole or time.monotonic() > deadline:
                return whole
            time.sleep(0.1)

    def evaluate(self, config_dict: dict, constraints_spec: dict | None = None, margin: float | None = None,
                 stage: str = "full", rounds: int | None = None) -> TrialOutcome:
        return self._call(("eval", config_dict, constraints_spec, margin, stage, rounds))

    def confirm(self, config_dict: dict, repeats: int, precision: float | None = None,
                max_s: float | None = None, prior_ratios: list[float] | None = None) -> TrialOutcome:
        return self._call(("confirm", config_dict, repeats, precision, max_s, prior_ratios))

    def versus(self, reference_dict: dict, config_dict: dict, repeats: int, precision: float | None = None,
               max_s: float | None = None) -> TrialOutcome:
        return self._call(("versus", reference_dict, config_dict, repeats, precision, max_s))

    def heldout(self, config_dict: dict) -> TrialOutcome:
        return self._call(("heldout", config_dict))

    def abort(self) -> None:
        """Kill the group and with it the running trial; does not wait (safe from a signal handler)."""
        self._aborted = True
        self._kill()

    def _kill(self) -> None:
        import signal

        from ..accel.parallel.launch import rank_pids

        for pid in self.pids + (rank_pids(self._phases) if self._phases else []):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def close(self) -> None:
        from ..accel.parallel.launch import rank_pids, stop

        if self._proc is None:
            return
        if self._conn is not None:
            try:
                if self._proc.poll() is None:
                    self._conn.send(("stop",))
                    self._proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._conn.close()
        stop(self._proc, self._pids + (rank_pids(self._phases) if self._phases else []), timeout=10)
        if self._phases:
            shutil.rmtree(self._phases, ignore_errors=True)
        self._proc, self._conn, self._pids, self._phases = None, None, [], None


def _pid_alive(pid: int) -> bool:
    from ..accel.parallel.launch import pid_alive

    return pid_alive(pid)


def _accept(listener):
    try:
        return listener.accept()
    except OSError:  # closed: the group did not connect in time
        return None


def _outcome(msg) -> TrialOutcome:
    if isinstance(msg, TrialOutcome):  # the evaluator child's own answer (worker._child_main)
        return msg
    kind = msg[0]
    if kind == OK:
        return TrialOutcome(OK, result=msg[1])
    if kind == PRUNED:
        return TrialOutcome(PRUNED, msg[1], msg[2])
    if kind == INTERRUPTED:
        return TrialOutcome.interrupted(msg[1])
    return TrialOutcome.failed(msg[1])


if __name__ == "__main__":
    _rank_main()
