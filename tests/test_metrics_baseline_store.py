import numpy as np
import pytest

from mindiesd_tune.metrics import BaselineKey, BaselineStore

GEN = {"height": 64, "width": 64, "num_inference_steps": 4, "guidance_scale": 3.5}


def _key(**over):
    args = dict(fingerprint="abc123", prompts=["a red circle", "a blue square"], seeds=[0, 1], generation=GEN, device="cpu")
    args.update(over)
    return BaselineKey.for_workload(**args)


def _outputs(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((8, 8, 3), dtype=np.float32), rng.random((3, 8, 8, 3), dtype=np.float32)]


def test_outputs_come_back_bit_for_bit(tmp_path):
    store, outs = BaselineStore(tmp_path), _outputs()
    store.put(_key(), outs, {"clip": 31.5})
    entry = BaselineStore(tmp_path).get(_key())
    assert all(np.array_equal(a, b) and a.dtype == np.float32 for a, b in zip(entry.outputs, outs))
    assert entry.figures == {"clip": 31.5} and entry.key["num_inference_steps"] == 4


@pytest.mark.parametrize(
    "change",
    [
        {"fingerprint": "other"},
        {"prompts": ["a red circle", "a green square"]},
        {"seeds": [0, 2]},
        {"generation": {**GEN, "height": 32}},
        {"generation": {**GEN, "num_inference_steps": 8}},
        {"generation": {**GEN, "num_frames": 9}},
        {"generation": {**GEN, "guidance_scale": 5.0}},
        {"device": "cuda:0"},
    ],
)
def test_anything_that_changes_the_outputs_changes_the_key(tmp_path, change):
    store = BaselineStore(tmp_path)
    store.put(_key(), _outputs())
    assert _key(**change).digest != _key().digest
    assert store.get(_key(**change)) is None


def test_a_second_study_reuses_the_stored_baseline(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return _outputs()

    first = BaselineStore(tmp_path).get_or_compute(_key(), compute)
    second = BaselineStore(tmp_path).get_or_compute(_key(), compute)
    assert len(calls) == 1
    assert all(np.array_equal(a, b) for a, b in zip(first.outputs, second.outputs))
    assert len(BaselineStore(tmp_path).entries()) == 1


def test_figures_are_merged_and_a_broken_entry_is_recomputed(tmp_path):
    store = BaselineStore(tmp_path)
    store.put(_key(), _outputs(), {"clip": 30.0})
    assert store.update_figures(_key(), psnr_self="inf", fd_clip=0.0) == {"clip": 30.0, "psnr_self": "inf", "fd_clip": 0.0}
    (store.path(_key()) / "outputs.npz").write_bytes(b"truncated")
    assert store.get(_key()) is None
    entry = store.get_or_compute(_key(), lambda: _outputs(1))
    assert np.array_equal(entry.outputs[0], _outputs(1)[0])


def test_one_seed_per_prompt(tmp_path):
    with pytest.raises(ValueError, match="one seed per prompt"):
        _key(seeds=[0])
    with pytest.raises(ValueError, match="3 outputs for 2 prompts"):
        BaselineStore(tmp_path).put(_key(), _outputs() + _outputs()[:1])


@pytest.mark.slow
def test_the_evaluator_reads_the_baseline_from_the_store(tiny_flux, tmp_path, monkeypatch):
    from mindiesd_tune.tuner.evaluator import Evaluator, Workload

    workload = Workload(["a red circle on a blue background"], [0], dict(tiny_flux.generation))
    store = BaselineStore(tmp_path)
    first = Evaluator(tiny_flux, workload, baseline_store=store)
    computed = first.baseline
    assert store.get(first.baseline_key()) is not None

    second = Evaluator(tiny_flux, workload, baseline_store=store)
    monkeypatch.setattr(second, "generate", lambda *a: pytest.fail("the stored baseline should have been used"))
    assert np.array_equal(second.baseline[0], computed[0])


def test_the_key_names_the_library_versions_so_an_upgrade_recomputes_the_baseline(tmp_path, monkeypatch):
    import numpy as np

    from mindiesd_tune.metrics import BaselineKey, BaselineStore
    from mindiesd_tune.metrics import baseline_store as module

    store = BaselineStore(tmp_path)
    key = BaselineKey.for_workload("f" * 16, ["a"], [0], {"height": 8})
    assert dict(key.versions).get("torch") and dict(key.versions).get("diffusers")
    store.put(key, [np.zeros((2, 2, 3))])
    assert key in store
    monkeypatch.setattr(module, "_versions", lambda: (("diffusers", "99.0"), ("torch", "99.0")))
    upgraded = BaselineKey.for_workload("f" * 16, ["a"], [0], {"height": 8})
    assert upgraded.digest != key.digest and upgraded not in store
