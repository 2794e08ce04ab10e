"""Every worker kind serves the one worker protocol (``tuner.protocol.Worker``), with the same
parameters for each method, so the search, the confirmation and the held-out check can talk to
any of them alike."""

import ast
import inspect
import pathlib

import pytest

import mindiesd_tune
from mindiesd_tune.tuner.protocol import Worker
from mindiesd_tune.tuner.rankgroup import RankGroupWorker
from mindiesd_tune.tuner.worker import InProcessWorker, ProcessWorker

METHODS = ("start", "evaluate", "confirm", "versus", "heldout", "abort", "close")


@pytest.mark.parametrize("kind", [InProcessWorker, ProcessWorker, RankGroupWorker])
def test_every_worker_kind_serves_the_protocol(kind):
    assert isinstance(kind.screens, property)
    for name in METHODS:
        want = list(inspect.signature(getattr(Worker, name)).parameters)
        have = list(inspect.signature(getattr(kind, name)).parameters)
        assert have == want, f"{kind.__name__}.{name}{have} differs from the protocol's {want}"


def test_a_class_missing_a_method_is_not_a_worker():
    class Half:
        screens = False

        def start(self):
            return {}

    assert not isinstance(Half(), Worker)


# --------------------------------------------------------------- no class swapped, no global set


def _tree(path: str) -> ast.AST:
    return ast.parse((pathlib.Path(mindiesd_tune.__file__).parent / path).read_text())


@pytest.mark.parametrize("path", ["tuner/rankgroup.py", "tuner/worker.py", "tuner/evaluator.py", "bench.py"])
def test_no_worker_swaps_a_class_at_run_time(path):
    swaps = [n.lineno for n in ast.walk(_tree(path)) if isinstance(n, ast.Attribute) and n.attr == "__class__"
             and isinstance(n.ctx, ast.Store)]
    assert swaps == [], f"{path} assigns __class__ at lines {swaps}"


@pytest.mark.parametrize("path", ["tuner/rankgroup.py", "tuner/worker.py", "accel/methods/parallel.py"])
def test_no_module_global_is_set_at_run_time(path):
    assert [n.lineno for n in ast.walk(_tree(path)) if isinstance(n, ast.Global)] == []


class _Recorder:
    """Stands for rank 0's Leader: records what a mesh's install and removal announce."""

    def __init__(self):
        self.sent, self.meshed = [], False

    def installing(self, config):
        self.sent.append(("apply", config))
        self.meshed = True

    def removing(self):
        self.sent.append(("remove",))
        self.meshed = False


def test_a_mesh_announces_its_install_and_removal_to_its_own_handles_mirror(monkeypatch):
    """Two meshes installed side by side, each with its own mirror: each announces to its own and
    none to the other (a mirror kept in a module global would be shared)."""
    from types import SimpleNamespace

    import torch

    import mindiesd_tune.accel.parallel as parallel
    from mindiesd_tune.accel.methods.parallel import install
    from mindiesd_tune.accel.parallel.config import ParallelConfig

    undone = []
    monkeypatch.setattr(parallel, "ensure_process_group", lambda device: None)
    monkeypatch.setattr(parallel, "install_parallel", lambda pipe, cfg: lambda: undone.append(cfg))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    a, b = _Recorder(), _Recorder()
    handles = [SimpleNamespace(pipe=object(), mirror=m, config=SimpleNamespace(to_dict=lambda m=m: {"of": id(m)}))
               for m in (a, b, None)]
    removes = [install(torch.nn.Linear(2, 2), ParallelConfig(cfg=2), h) for h in handles]
    assert a.sent == [("apply", {"of": id(a)})] and b.sent == [("apply", {"of": id(b)})]
    removes[0]()
    assert a.sent[-1] == ("remove",) and not a.meshed and b.meshed and len(b.sent) == 1
    removes[1]()
    removes[2]()  # no mirror: a deployment under torchrun announces nothing
    assert len(undone) == 3 and len(a.sent) == 2 and len(b.sent) == 2


def test_the_leader_leads_an_evaluator_without_changing_its_class(tiny_flux):
    """Rank 0's Leader is the evaluator's mirror: what the evaluator applies announces to it, a
    call while a mesh is installed is broadcast first and any other call is not; the evaluator
    stays an Evaluator, and ``stop`` lets it go."""
    from mindiesd_tune.accel import AccelConfig
    from mindiesd_tune.tuner.evaluator import Evaluator, Workload
    from mindiesd_tune.tuner.rankgroup import Leader

    ev = Evaluator(tiny_flux, Workload(["a red circle"], [0], dict(tiny_flux.generation)), warmup=0, repeats=1)
    leader = Leader(None, None)
    sent = []
    leader.send = lambda *cmd: sent.append(cmd)
    leader.lead(ev)
    assert type(ev) is Evaluator and ev.mirror is leader
    with ev.apply(AccelConfig()) as handle:
        assert handle.mirror is leader
    ev.generate("a red circle", 0)
    assert sent == []  # the baseline: not meshed, not broadcast
    leader.meshed = True
    ev.generate("a red circle", 0, {"num_inference_steps": 2})
    assert sent == [("call", "a red circle", 0, {"num_inference_steps": 2})]
    leader.stop()
    assert sent[-1] == ("stop",) and ev.mirror is None and type(ev) is Evaluator
