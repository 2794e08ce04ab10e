"""The demo trainers' shared loop resumes exactly, and the Flux trainer's outline weighting marks outlines."""

import pytest
import torch

from mindiesd_tune.models import shapes
from mindiesd_tune.training.common import LoopConfig, train
from mindiesd_tune.training.flux import edge_band


class Crash(Exception):
    pass


def _run(workdir, crash_at=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)

    def step_fn(step, gen):
        if step == crash_at:
            raise Crash
        x = torch.randn(8, 4, generator=gen)
        return {"loss": (model(x).squeeze(1) - x.sum(1)).square().mean()}

    cfg = LoopConfig(steps=10, lr=1e-2, warmup=2, ema=0.9, log_every=1, ckpt_every=3)
    return train("toy", model, step_fn, cfg, workdir=workdir)


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    whole, info = _run(tmp_path / "whole")
    with pytest.raises(Crash):  # dies in step 5; the last checkpoint is step 3's
        _run(tmp_path / "split", crash_at=4)
    resumed, info2 = _run(tmp_path / "split")
    assert info2["steps_done"] == 10
    assert [r["loss"] for r in info2["log"]] == [r["loss"] for r in info["log"]]
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_the_loop_reports_progress_through_its_module_logger_not_stdout(tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="mindiesd_tune.training.common")
    _run(tmp_path / "run")
    assert capsys.readouterr().out == ""  # a library caller decides where progress goes
    lines = [r.getMessage() for r in caplog.records if r.name == "mindiesd_tune.training.common"]
    assert len(lines) >= 10 and all(m.startswith("[toy] ") for m in lines)


def test_edge_band_covers_the_outline_and_nothing_far_from_it():
    scene = shapes.Scene("square", "red", "blue", "large", "center", x=0.5, y=0.5)
    band = edge_band([scene], 64, 16)[0, 0]
    # The large square spans latent pixels 4..11; its outline runs along rows and columns 4 and 11.
    assert band[4, 4:12].all() and band[11, 4:12].all() and band[4:12, 4].all() and band[4:12, 11].all()
    assert not band[7:9, 7:9].any()  # the middle of the square
    assert not band[:2].any() and not band[:, 14:].any()  # far background
    small = edge_band([shapes.Scene("circle", "red", "blue", "small", "center", x=0.5, y=0.5)], 64, 16)
    assert 0 < small.sum() < band.sum()


@pytest.mark.slow
def test_a_finetune_is_a_second_demo_flux_checkpoint_beside_the_shipped_one(tmp_path):
    """``training.flux.finetune``: a pipeline folder of the same family with other weights, the
    shipped weights untouched and the caller's thread count kept."""
    from mindiesd_tune.models.registry import load
    from mindiesd_tune.models.weights import weights_path
    from mindiesd_tune.profile import model_fingerprint
    from mindiesd_tune.training.flux import finetune

    shipped = weights_path("demo-flux").read_bytes()
    threads = torch.get_num_threads()
    info = finetune(tmp_path, steps=1, batch=2, threads=1)
    assert torch.get_num_threads() == threads and info["steps_done"] == 1 and info["relative_change"] > 0
    second, first = load(str(tmp_path / "pipeline"), device="cpu"), load("demo-flux", device="cpu")
    assert second.family == first.family and model_fingerprint(second.pipe) != model_fingerprint(first.pipe)
    assert weights_path("demo-flux").read_bytes() == shipped
