import numpy as np
import pytest

from conftest import generate
from mindiesd_tune import models
from mindiesd_tune.errors import UserError


def test_builtins_include_the_demo_and_test_models():
    names = models.builtin_names()
    assert {"demo-flux", "demo-wan", "tiny-flux-random", "tiny-wan-random"} <= set(names)


def test_load_builtin_returns_pipeline_and_family(tiny_flux, tiny_wan):
    pipe, family = tiny_flux
    assert type(pipe).__name__ == "FluxPipeline" and family == "dit-image"
    assert tiny_wan.family == "dit-video" and tiny_wan.is_video


def test_builtins_are_deterministic(tiny_flux):
    again = models.load("tiny-flux-random", device="cpu")
    assert np.array_equal(generate(again), generate(tiny_flux))


def test_unknown_name_lists_the_builtins():
    with pytest.raises(UserError) as e:
        models.load("no-such-model")
    msg = str(e.value)
    assert "\n" not in msg and "demo-flux" in msg and "demo-wan" in msg


def test_folder_without_model_index_is_refused(tmp_path):
    with pytest.raises(UserError, match="model_index.json"):
        models.load(str(tmp_path))


def test_local_diffusers_folder_loads(tiny_flux, tmp_path):
    tiny_flux.pipe.save_pretrained(tmp_path / "pipe")
    loaded = models.load(str(tmp_path / "pipe"), device="cpu")
    assert loaded.source == "local" and loaded.family == "dit-image"
    out = generate(loaded, **tiny_flux.generation)
    # same weights; reloaded tensors may differ in memory layout, hence float-level noise
    assert np.allclose(out, generate(tiny_flux), atol=1e-5)


def test_hub_id_resolves_from_the_local_cache_only(tiny_flux, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    with pytest.raises(UserError, match="--allow-download"):
        models.load("someorg/tiny-flux")
    # lay out the cache as huggingface_hub does: refs/main -> snapshots/<commit>/
    repo = cache / "models--someorg--tiny-flux"
    commit = "0" * 40
    tiny_flux.pipe.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    loaded = models.load("someorg/tiny-flux", device="cpu")
    assert loaded.source == "hub" and loaded.family == "dit-image"


def test_bad_dtype_is_a_user_error():
    with pytest.raises(UserError, match="dtype"):
        models.load("tiny-flux-random", dtype="fp12")
