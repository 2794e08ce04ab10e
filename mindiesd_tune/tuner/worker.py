"""Evaluator workers: the loaded pipeline lives in a child process that survives failing trials.

An exception, an out-of-memory error or NaN output comes back as a failed result with its
reason; a child that dies (segfault, kill, OOM killer) is noticed, the trial fails with
that reason and the next trial starts a fresh child. ``InProcessWorker`` offers the same
interface without a child, for tests, benchmarks and debuggers.

``abort()`` (a second Ctrl-C) ends the running trial from another thread: the in-process
evaluator stops at its next denoising step, the child process is killed. The trial comes back
as an ``interrupted`` TrialOutcome and the worker evaluates nothing more.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

from .outcome import OK, PRUNED, TrialOutcome
from .quiet import quiet_process_when_asked

_START_LOCK = threading.Lock()  # children inherit os.environ at start; set it one child at a time


@dataclass
class WorkerSpec:
    """Everything a worker needs to build its evaluator, picklable for a spawned child."""

    model: str
    device: str | None = None
    dtype: str | None = None
    allow_download: bool = False
    prompts: list[str] | None = None
    seed: int = 0
    warmup: int = 1
    repeats: int = 3
    env: dict[str, str] = field(default_factory=dict)  # e.g. CUDA_VISIBLE_DEVICES for this worker
    threads: int | None = None  # torch CPU threads for this worker
    factory: str | None = None  # "module:callable" (spec) -> (evaluator, info); default: build_evaluator
    metrics: tuple = ("psnr", "ssim")  # what every trial reports (objective and floors included)
    clip_model: str | None = None  # open_clip spec for the clip metric (demo-clip for demo models)
    fvd_weights: str | None = None  # a local TorchScript I3D for the kvd_i3d / fvd set distances
    holdout: Any = 0  # held-out prompts: a count, or the prompts (models.prompts.split_prompts)
    interleave: bool = True  # time the baseline alternately with every trial
    baseline_cache: str | None = None  # folder of the on-disk baseline store; None: compute per study
    generation: dict[str, Any] = field(default_factory=dict)  # the user's call settings over the model's
    seeds: list[int] | None = None  # one per prompt, or each prompt with every seed (workload.pair)

    @classmethod
    def from_options(cls, model: str, opts, metrics: tuple) -> "WorkerSpec":
        """The spec of a study's workers: every field a ``TuneOptions`` shares by name, with the
        options' factory and a copy of their lists, so an option added to both reaches the worker
        without being copied here by hand."""
        from dataclasses import fields

        mine = {f.name for f in fields(cls)} - {"model", "env", "threads", "metrics", "factory"}
        given = {name: getattr(opts, name) for name in mine if hasattr(opts, name)}
        given["generation"] = dict(given.get("generation") or {})
        given["seeds"] = list(given["seeds"]) if given.get("seeds") else None
        given["prompts"] = list(given["prompts"]) if given.get("prompts") else None
        if isinstance(given.get("holdout"), tuple):
            given["holdout"] = list(given["holdout"])
        return cls(model=model, factory=opts.worker_factory, metrics=tuple(metrics), **given)


def build_evaluator(spec: WorkerSpec):
    """Load the model and its workload -> (Evaluator, info about the model and machine)."""
    import torch

    from ..kernels import hardware_info
    from ..models import load
    from ..models.prompts import HOLDOUT_SEED, split_prompts
    from ..profile import model_fingerprint, pipeline_dtype
    from ..workload import pair, resolve
    from .evaluator import Evaluator, Workload

    loaded = load(spec.model, device=spec.device, dtype=spec.dtype, allow_download=spec.allow_download, seed=0)
    loaded_at = time.perf_counter()  # the study's budget counts from here (``ready_seconds``)
    generation = resolve(loaded.pipe, loaded.generation, spec.generation)  # a size it cannot take stops here
    prompts, held = split_prompts(loaded.source == "builtin", loaded.is_video, spec.prompts, spec.holdout)
    workload = Workload(*pair(prompts, spec.seeds, spec.seed), generation)
    holdout = Workload(held, [HOLDOUT_SEED + i for i in range(len(held))], generation) if held else None
    store = None
    if spec.baseline_cache:
        from ..metrics import BaselineStore

        store = BaselineStore(spec.baseline_cache)
    ev = Evaluator(loaded, workload, warmup=spec.warmup, repeats=spec.repeats, baseline_store=store,
                   metrics=tuple(spec.metrics), clip_model=spec.clip_model, interleave=spec.interleave,
                   fvd_weights=spec.fvd_weights, holdout=holdout)
    t0 = time.perf_counter()
    baseline_metrics = ev.baseline_metrics  # computes the baseline outputs once
    info = {
        "model": {
            "name": loaded.name,
            "family": loaded.family,
            "pipeline": type(loaded.pipe).__name__,
            "fingerprint": model_fingerprint(loaded.pipe),
            "dtype": pipeline_dtype(loaded.pipe),
        },
        "workload": {"prompts": workload.prompts, "seeds": workload.seeds, "generation": workload.generation},
        "holdout": {"prompts": holdout.prompts, "seeds": holdout.seeds} if holdout else None,
        "set_labels": ev.set_metrics.labels(len(workload.prompts)) if ev.set_metrics else {},
        "hardware": hardware_info(ev.device),
        "baseline_metrics": baseline_metrics,
        "baseline_seconds": time.perf_counter() - t0,
        "is_video": loaded.is_video,
    }
    info["space"] = _space(loaded, workload)
    # the plan's price: one plain baseline call, warm (the statistics call above records every
    # step's residuals and is far slower; the baseline outputs may have come from the store)
    t_call = time.perf_counter()
    with torch.inference_mode():
        ev.generate(workload.prompts[0], workload.seeds[0])
    info["call_seconds"] = time.perf_counter() - t_call
    info["ready_seconds"] = time.perf_counter() - loaded_at  # the baseline and the plan's call, after loading
    return ev, info


def _space(loaded, workload) -> dict:
    """What the search space needs beyond the family: block and step counts, the schedulers the
    pipeline takes, and thresholds centred on the model's own per-step change (one baseline call)."""
    from ..accel import step_statistics
    from ..search_spaces import describe

    try:
        stats = step_statistics(loaded.pipe, workload.prompts[0], seed=workload.seeds[0], **workload.generation)
    except Exception:  # statistics are a prior, not a requirement: fixed ranges then
        stats = None
    return describe(loaded.pipe, workload.generation, stats).to_dict()


def _factory(spec: WorkerSpec):
    if not spec.factory:
        return build_evaluator
    module, _, name = spec.factory.partition(":")
    return getattr(importlib.import_module(module), name)


INTERRUPTED = "interrupted: the trial was aborted (a second Ctrl-C)"


def evaluate_message(evaluator, config_dict: dict, constraints_spec: dict | None, margin: float | None,
                     stage: str = "full", rounds: int | None = None) -> TrialOutcome:
    """Run one trial -> ``ok`` with the result, ``pruned`` with its reason and the partial result
    (metrics and sample, no latency), or ``failed`` / ``interrupted`` with the reason.
    ``stage``: ``full`` (``Evaluator.evaluate``) or ``screen`` (``Evaluator.screen``, the cheap
    first look; an evaluator without one is evaluated in full). ``rounds``: the interleaved rounds
    of a full evaluation, where the plan sets them (the unaccelerated trial's)."""
    import torch

    from ..accel.config import AccelConfig
    from .evaluator import TrialAborted, TrialPrunedEarly
    from .objectives import Constraints

    try:
        config = AccelConfig.from_dict(config_dict)
        constraints = Constraints.from_spec(constraints_spec) if constraints_spec else None
        if stage == "screen" and hasattr(evaluator, "screen"):
            result = evaluator.screen(config, constraints, margin)
        else:
            result = evaluator.evaluate(config, constraints, margin, **({"rounds": rounds} if rounds else {}))
        if result.has_nan:
            return TrialOutcome.failed("FloatingPointError: the output contains NaN or inf")
        return TrialOutcome(OK, result=result.to_message())
    except TrialPrunedEarly as e:
        return TrialOutcome(PRUNED, e.reason, e.partial)
    except TrialAborted:
        return TrialOutcome.interrupted(INTERRUPTED)
    except Exception as e:  # noqa: BLE001  (any failure of one trial is that trial's result)
        oom = isinstance(e, getattr(torch.cuda, "OutOfMemoryError", ())) or "out of memory" in str(e).lower()
        if oom:
            _free_device_memory()
            return TrialOutcome.failed(f"out of memory: {_first_line(e)}")
        return TrialOutcome.failed(f"{type(e).__name__}: {_first_line(e)}")


def confirm_message(evaluator, config_dict: dict, repeats: int, precision: float | None = None,
                    max_s: float | None = None, prior_ratios: list[float] | None = None) -> TrialOutcome:
    """Re-measure one point in full -> ``ok`` with the comparison (``Comparison.as_dict()``), or
    ``failed`` / ``interrupted`` with the reason. ``precision`` / ``max_s``: go on until the
    interval is that narrow, within that time; ``prior_ratios``: a top-up (``Evaluator.confirm``)."""
    from ..accel.config import AccelConfig

    if not hasattr(evaluator, "confirm"):
        return TrialOutcome.failed(f"{type(evaluator).__name__} cannot re-measure a point")
    # only what was asked for: an evaluator may not take the sequential arguments
    more = {k: v for k, v in (("precision", precision), ("max_s", max_s), ("prior_ratios", prior_ratios)) if v is not None}
    return _measured(lambda: evaluator.confirm(AccelConfig.from_dict(config_dict), repeats, **more))


def versus_message(evaluator, reference_dict: dict, config_dict: dict, repeats: int, precision: float | None = None,
                   max_s: float | None = None) -> TrialOutcome:
    """One point timed against another (``Evaluator.versus``) -> ``ok`` with the comparison, whose
    baseline side is the reference; ``failed`` where the evaluator cannot."""
    from ..accel.config import AccelConfig

    if not hasattr(evaluator, "versus"):
        return TrialOutcome.failed(f"{type(evaluator).__name__} cannot time one point against another")
    more = {k: v for k, v in (("precision", precision), ("max_s", max_s)) if v is not None}
    return _measured(lambda: evaluator.versus(AccelConfig.from_dict(reference_dict), AccelConfig.from_dict(config_dict),
                                              repeats, **more))


def heldout_message(evaluator, config_dict: dict) -> TrialOutcome:
    """Quality on the held-out prompts the search never saw (``Evaluator.heldout``) -> ``ok``
    with ``{"prompts", "per_prompt", "metrics"}``; ``failed`` where the evaluator has none."""
    from ..accel.config import AccelConfig

    if not getattr(evaluator, "holdout", None):
        return TrialOutcome.failed(f"{type(evaluator).__name__} has no held-out prompts")
    return _measured(lambda: evaluator.heldout(AccelConfig.from_dict(config_dict)))


def _measured(call) -> TrialOutcome:
    from .evaluator import TrialAborted

    try:
        result = call()
        return TrialOutcome(OK, result=result if isinstance(result, dict) else result.as_dict())
    except TrialAborted:
        return TrialOutcome.interrupted(INTERRUPTED)
    except Exception as e:  # noqa: BLE001  (a point that cannot be re-measured stays unconfirmed)
        return TrialOutcome.failed(f"{type(e).__name__}: {_first_line(e)}")


# the child's answers to the driver's re-measurements, by message name
MEASURES = {"confirm": confirm_message, "versus": versus_message, "heldout": heldout_message}


def _free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


class InProcessWorker:
    """Evaluates in this process. No isolation: a crash takes the study with it."""

    @property
    def screens(self) -> bool:
        """Whether ``evaluate(stage="screen")`` is the cheap first look (``Evaluator.screen``)."""
        return hasattr(self._ev, "screen")

    def __init__(self, spec: WorkerSpec, evaluator=None, info: dict | None = None):
        self.spec = spec
        self._ev, self._info = evaluator, info
        self._aborted = False

    def start(self) -> dict:
        if self._ev is None:
            if self.spec.threads:
                import torch

                torch.set_num_threads(self.spec.threads)
            self._ev, self._info = _factory(self.spec)(self.spec)
        return self._info

    def evaluate(self, config_dict: dict, constraints_spec: dict | None = None,
                 margin: float | None = None, stage: str = "full", rounds: int | None = None) -> TrialOutcome:
        if self._aborted:
            return TrialOutcome.interrupted(INTERRUPTED)
        self.start()
        ev = self._ev  # close() may drop it from another thread while this trial runs
        self._arm(ev)  # an abort that came while the evaluator was loading
        return evaluate_message(ev, config_dict, constraints_spec, margin, stage, rounds)

    def confirm(self, config_dict: dict, repeats: int, precision: float | None = None,
                max_s: float | None = None, prior_ratios: list[float] | None = None) -> TrialOutcome:
        if self._aborted:
            return TrialOutcome.interrupted(INTERRUPTED)
        self.start()
        return confirm_message(self._ev, config_dict, repeats, precision, max_s, prior_ratios)

    def versus(self, reference_dict: dict, config_dict: dict, repeats: int, precision: float | None = None,
               max_s: float | None = None) -> TrialOutcome:
        if self._aborted:
            return TrialOutcome.interrupted(INTERRUPTED)
        self.start()
        return versus_message(self._ev, reference_dict, config_dict, repeats, precision, max_s)

    def heldout(self, config_dict: dict) -> TrialOutcome:
        if self._aborted:
            return TrialOutcome.interrupted(INTERRUPTED)
        self.start()
        return heldout_message(self._ev, config_dict)

    def abort(self) -> None:
        """Stop the running trial at its next denoising step (an evaluator without an ``abort``
        event, such as a test fake, finishes its call). Safe from a signal handler."""
        self._aborted = True
        self._arm(self._ev)

    def _arm(self, ev) -> None:
        flag = getattr(ev, "abort", None)
        if self._aborted and flag is not None:
            flag.set()

    def close(self) -> None:
        self._ev = None


def _exit_with_parent() -> None:
    """End this process when the driver dies, however it died (a ``kill -9`` runs no atexit that
    would stop a daemon child): an orphan would hold the model, the CPU and the driver's pipes."""
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # returns when the parent's sentinel closes: the parent is gone
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _child_main(conn, spec_dict: dict, factory=None) -> None:
    """The evaluator's process: build it (``factory(spec)``, default the spec's), then answer the
    driver's messages until it says stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's: it finishes the current trial
    _exit_with_parent()
    _thread_lock_for_progress_bars()
    quiet_process_when_asked()
    spec = WorkerSpec(**spec_dict)
    try:
        if spec.threads:
            import torch

            torch.set_num_threads(spec.threads)
        evaluator, info = (factory or _factory(spec))(spec)
    except BaseException as e:  # noqa: BLE001
        from ..errors import UserError

        msg = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {_first_line(e)}"
        conn.send(("error", msg, traceback.format_exc()))
        return
    conn.send(("ready", {**info, "screens": hasattr(evaluator, "screen")}))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg[0] == "stop":
            return
        if msg[0] in MEASURES:
            conn.send(MEASURES[msg[0]](evaluator, *msg[1:]))
            continue
        _, config_dict, constraints_spec, margin, *how = msg  # how: stage, rounds
        conn.send(evaluate_message(evaluator, config_dict, constraints_spec, margin, *how))


def _thread_lock_for_progress_bars() -> None:
    """tqdm (the pipelines' progress bars) makes a multiprocessing semaphore by default; a child
    killed by ``abort()`` would leave it behind and the resource tracker warn about it at exit."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    tqdm.set_lock(threading.RLock())


class WorkerDied(RuntimeError):
    pass


class WorkerStartError(RuntimeError):
    pass


class ProcessWorker:
    """The evaluator in a spawned child process; restarted when it dies."""

    @property
    def screens(self) -> bool:
        return bool(self._info and self._info.get("screens"))

    def __init__(self, spec: WorkerSpec, start_timeout: float = 3600.0):
        self.spec = spec
        self.start_timeout = start_timeout
        self._proc = None
        self._conn = None
        self._info: dict | None = None
        self.restarts = 0
        self._aborted = False

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def start(self) -> dict:
        if self.alive:
            return self._info
        if self._proc is not None:
            self.restarts += 1
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        with _START_LOCK:
            saved = {k: os.environ.get(k) for k in self.spec.env}
            os.environ.update(self.spec.env)
            try:
                proc = ctx.Process(target=_child_main, args=(child, asdict(self.spec)), daemon=True)
                proc.start()
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        child.close()
        self._proc, self._conn = proc, parent
        if self._aborted:  # abort() came while the child was being started
            proc.kill()
        msg = self._recv(self.start_timeout)
        if msg[0] != "ready":
            self.close()
            raise WorkerStartError(msg[1])
        self._info = msg[1]
        return self._info

    def _recv(self, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        # close() from another thread drops the attributes: keep reading what this call started with
        conn, proc = self._conn, self._proc
        while True:
            try:
                if conn.poll(0.2):
                    return conn.recv()
            except (EOFError, OSError):  # the child died or the connection was closed
                pass
            if not proc.is_alive():
                code = proc.exitcode
                proc.join()
                raise WorkerDied(f"the evaluator process died (exit code {code})")
            if deadline is not None and time.monotonic() > deadline:
                self.close()
                raise WorkerDied(f"the evaluator process did not answer within {timeout:.0f}s")

    def evaluate(self, config_dict: dict, constraints_spec: dict | None = None,
                 margin: float | None = None, stage: str = "full", rounds: int | None = None) -> TrialOutcome:
        if self._aborted:
            return TrialOutcome.interrupted(INTERRUPTED)
        try:
            self.start()
            self._conn.send(("eval", config_dict, constraints_spec, margin, stage, rounds))
            return self._recv()
        except (WorkerDied, OSError) as e:
            if self._aborted:  # killed on purpose: neither a failure of the point nor a reason to restart
                return TrialOutcome.interrupted(INTERRUPTED)
            if isinstance(e, OSError):
                raise
            return TrialOutcome.failed(f"WorkerDied: {e}; it will be restarted")

    def confirm(self, config_dict: dict, repeats: int, precision: float | None = None,
                max_s: float | None = None, prior_ratios: list[float] | None = None) -> TrialOutcome:
        return self._measure(("confirm", config_dict, repeats, precision, max_s, prior_ratios))

    def versus(self, reference_dict: dict, config_dict: dict, repeats: int, precision: float | None = None,
               max_s: float | None = None) -> TrialOutcome:
        return self._measure(("versus", reference_dict, config_dict, repeats, precision, max_s))

    def heldout(self, config_dict: dict) -> TrialOutcome:
        return self._measure(("heldout", config_dict))

    def _measure(self, msg: tuple) -> TrialOutcome:
        if self._aborted:
            return TrialOutcome.interrupted(INTERRUPTED)
        try:
            self.start()
            self._conn.send(msg)
            return self._recv()
        except (WorkerDied, OSError) as e:
            if self._aborted:
                return TrialOutcome.interrupted(INTERRUPTED)
            return TrialOutcome.failed(f"{type(e).__name__}: {e}")

    def abort(self) -> None:
        """Kill the child and with it the running trial; the thread in ``evaluate`` sees it die
        and returns. Does not wait and touches no connection, so it is safe from a signal handler."""
        self._aborted = True
        proc = self._proc
        if proc is not None:
            proc.kill()

    def close(self) -> None:
        if self._proc is None:
            return
        try:
            if self._proc.is_alive():
                self._conn.send(("stop",))
                self._proc.join(timeout=10)
        except (OSError, BrokenPipeError):
            pass
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()
        self._proc = None
