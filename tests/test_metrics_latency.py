import mmap

import pytest
import torch

from mindiesd_tune.metrics import StageTimer, compare_interleaved, measure_stages, peak_memory_bytes, reset_peak_memory
from mindiesd_tune.metrics.latency import DeviceClock, measure


class FakeClock:
    """Time moves only when the code under test says a piece of work took so long."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def work(self, seconds):
        self.t += seconds


def test_baseline_and_candidate_are_interleaved_and_the_speedup_is_a_ratio():
    clock, calls = FakeClock(), []

    def side(name, cost):
        def fn():
            calls.append(name)
            clock.work(cost)
            return name

        return fn

    cmp, b, c = compare_interleaved(side("b", 4.0), side("c", 2.0), warmup=1, repeats=4, clock=clock)
    assert calls == ["b", "c", "b", "c", "c", "b", "b", "c", "c", "b"]  # warm-up, then AB BA AB BA
    assert (b, c) == ("b", "c")
    assert cmp.baseline.median_s == 4.0 and cmp.candidate.median_s == 2.0
    assert cmp.speedup == 2.0 and cmp.speedup_iqr == 0.0
    assert cmp.baseline.samples == [4.0] * 4


def test_candidate_setup_and_teardown_stay_out_of_the_timing():
    clock, state = FakeClock(), {"on": False, "log": []}

    def setup():
        clock.work(100.0)  # applying a config is slow, and must not count
        state["on"] = True
        state["log"].append("apply")

        def teardown():
            clock.work(100.0)
            state["on"] = False
            state["log"].append("remove")

        return teardown

    def call():
        clock.work(1.0 if state["on"] else 3.0)
        return state["on"]

    cmp, b, c = compare_interleaved(call, call, warmup=1, repeats=3, clock=clock, candidate_setup=setup)
    assert (b, c) == (False, True) and not state["on"]
    assert state["log"] == ["apply", "remove"] * 4
    assert cmp.baseline.samples == [3.0] * 3 and cmp.candidate.samples == [1.0] * 3 and cmp.speedup == 3.0


def test_drift_shared_by_both_sides_leaves_the_ratio_alone():
    clock, n = FakeClock(), [0]

    def slowing(cost):
        def fn():
            n[0] += 1
            clock.work(cost * (1 + 0.05 * n[0]))  # the machine slows down over the run

        return fn

    cmp, *_ = compare_interleaved(slowing(3.0), slowing(1.0), warmup=0, repeats=6, clock=clock)
    assert cmp.speedup == pytest.approx(3.0, rel=0.02)


def test_median_and_iqr_are_robust_to_one_outlier():
    clock, costs = FakeClock(), iter([1.0, 1.1, 0.9, 1.0, 9.0])
    stats, _ = measure(lambda: clock.work(next(costs)), warmup=0, repeats=5, clock=clock)
    assert stats.median_s == pytest.approx(1.0) and stats.min_s == pytest.approx(0.9)
    assert stats.iqr_s == pytest.approx(0.1)


class FakePipe:
    """A pipeline-shaped object whose parts take known times on the fake clock."""

    def __init__(self, clock, steps=3):
        self.clock, self.steps = clock, steps
        self.text_encoder = Work(clock, 1.0)
        self.transformer = Work(clock, 2.0)
        self.vae = FakeVae(clock)

    def __call__(self):
        self.text_encoder(torch.zeros(1))
        for _ in range(self.steps):
            self.transformer(torch.zeros(1), timestep=torch.zeros(1))
            self.clock.work(0.1)  # scheduler step
        return self.vae.decode(torch.zeros(1))


class Work(torch.nn.Module):
    def __init__(self, clock, cost):
        super().__init__()
        self.clock, self.cost = clock, cost

    def forward(self, x, timestep=None):
        self.clock.work(self.cost)
        return x


class FakeVae(torch.nn.Module):
    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def decode(self, z):
        self.clock.work(4.0)
        return z


def test_stage_split_separates_text_encoding_denoising_and_decoding():
    clock = FakeClock()
    pipe = FakePipe(clock)
    with StageTimer(pipe, clock=clock) as st:
        pipe()
    t = st.times
    assert (t.text_encode_s, t.denoise_s, t.decode_s, t.denoiser_calls) == (1.0, 6.0, 4.0, 3)
    assert t.total_s == pytest.approx(11.3) and t.other_s == pytest.approx(0.3)
    # the hooks and the decode wrapper are gone afterwards
    assert not pipe.transformer._forward_hooks and not pipe.transformer._forward_pre_hooks
    assert "decode" not in vars(pipe.vae)


def test_measure_stages_gives_medians_per_stage():
    clock = FakeClock()
    pipe = FakePipe(clock, steps=2)
    stats, _ = measure_stages(pipe, pipe, warmup=1, repeats=3, clock=clock)
    assert stats["denoise_s"].median_s == 4.0 and stats["denoise_s"].repeats == 3
    assert stats["total_s"].median_s == pytest.approx(9.2)


def test_stage_split_on_a_real_pipeline(tiny_flux):
    steps = tiny_flux.generation["num_inference_steps"]
    with StageTimer(tiny_flux.pipe) as st:
        tiny_flux.pipe(prompt="a red circle", output_type="np", **tiny_flux.generation)
    t = st.times
    assert t.denoiser_calls == steps
    assert t.denoise_s > 0 and t.decode_s > 0 and t.text_encode_s > 0
    assert t.text_encode_s + t.denoise_s + t.decode_s <= t.total_s


def test_cpu_peak_memory_is_the_process_rss_and_can_be_reset():
    size = 64 * 2**20
    reset_peak_memory("cpu")
    before = peak_memory_bytes("cpu")
    block = mmap.mmap(-1, size)  # fresh pages, so the allocator cannot hand back resident memory
    block.write(b"\1" * size)
    grown = peak_memory_bytes("cpu")
    block.close()
    reset_peak_memory("cpu")
    after = peak_memory_bytes("cpu")
    assert grown - before > 48 * 2**20
    assert after < grown - 32 * 2**20


def test_cpu_clock_does_not_synchronise_anything(monkeypatch):
    import mindiesd_tune.metrics.latency as lat

    seen = []
    monkeypatch.setattr(lat, "synchronize", lambda d: seen.append(torch.device(d).type))
    dc = DeviceClock("cpu")
    assert not dc.events and dc.seconds(dc.mark(), dc.mark()) >= 0
    assert seen == ["cpu", "cpu"]  # kernels.synchronize is a no-op on the CPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_is_timed_with_events():
    dc = DeviceClock("cuda")
    assert dc.events
    x = torch.randn(2048, 2048, device="cuda")
    stats, _ = measure(lambda: x @ x, device="cuda", warmup=2, repeats=5)
    assert 0 < stats.median_s < 1
