"""Acceptance test of the method registry: a third-party method in one file (tests/toy_method_plugin.py).

Named in MINDIESD_TUNE_PLUGINS and touching no other file, it is sampled by the tuner with trial
isolation on (the spawned worker imports it too), round-trips through a profile's YAML and
``validate``, ``show`` prints it, ``apply_profile`` installs it and ``remove()`` undoes it.
"""

import sys

import numpy as np
import optuna
import pytest

from conftest import cli, generate
from mindiesd_tune import plugins

PLUGIN = "toy_method_plugin"


@pytest.fixture
def toy_plugin(monkeypatch):
    """The plugin named in the environment (as a user would), taken out again afterwards."""
    from mindiesd_tune.accel.methods import unregister_method

    monkeypatch.setenv(plugins.ENV_VAR, PLUGIN)
    monkeypatch.setattr(plugins, "_loaded", set())
    yield
    monkeypatch.delenv(plugins.ENV_VAR)
    unregister_method("cache", "toy_gain")
    sys.modules.pop(PLUGIN, None)


def test_the_plugin_is_not_there_unless_named():
    from mindiesd_tune.accel.methods import cache_methods

    assert "toy_gain" not in cache_methods()


def test_a_failing_plugin_is_one_line_naming_it(monkeypatch):
    monkeypatch.setenv(plugins.ENV_VAR, "no_such_plugin_module")
    monkeypatch.setattr(plugins, "_loaded", set())
    with pytest.raises(plugins.PluginError, match=r"^MINDIESD_TUNE_PLUGINS: cannot import 'no_such_plugin_module'"):
        plugins.load_plugins()


@pytest.mark.slow
def test_a_method_from_one_plugin_file_goes_through_tuner_profile_cli_and_apply(toy_plugin, tmp_path, capsys, tiny_flux):
    from mindiesd_tune import apply_profile, load_profile
    from mindiesd_tune.tuner import parse_budget, run_study

    # the tuner: its preset runs right after the baseline, in a spawned worker that has to find the plugin itself
    outcome = run_study("fake", parse_budget("4t"), tmp_path / "run", worker_factory="fakes:make_fake", log=lambda s: None,
                        isolate=True)
    toy = [t for t in outcome.study.trials if t.params.get("cache.method") == "toy_gain"]
    assert toy and all(t.state == optuna.trial.TrialState.COMPLETE for t in toy), [t.user_attrs for t in toy]

    # a profile carrying it: YAML round trip, validate, show
    profile = load_profile(outcome.profile_path)
    profile.model.update(name=tiny_flux.name, pipeline=type(tiny_flux.pipe).__name__, fingerprint=None, dtype=None)
    profile.accel = profile.accel.from_dict({"cache": {"method": "toy_gain", "gain": 0.05}})
    profile.hardware = {}
    path = profile.save(tmp_path / "toy.yaml")
    assert "method: toy_gain" in path.read_text()
    assert load_profile(path).accel == profile.accel
    code, out, err = cli(capsys, "validate", str(path))
    assert code == 0 and "OK" in out, err
    code, out, _ = cli(capsys, "show", str(path))
    assert "cache        toy_gain: output x1.05" in out

    # deployed on a real pipeline and taken off again
    base = generate(tiny_flux)
    handle = apply_profile(tiny_flux.pipe, path)
    assert not np.array_equal(generate(tiny_flux), base)
    handle.remove()
    assert np.array_equal(generate(tiny_flux), base)


# A toy method of each kind, each in one file of its own (tests/toy_*_plugin.py), added from
# outside the package through the plugin entry: a cache method, a sparse mask, a quant scheme.
TOYS = [
    ("toy_method_plugin", "cache", "toy_gain", {"method": "toy_gain", "gain": 0.05}),
    ("toy_sparse_plugin", "sparse", "toy_prefix", {"method": "toy_prefix", "ratio": 0.5, "block_size": 16}),
    ("toy_quant_plugin", "quant", "toy_int8", {"scheme": "toy_int8", "components": ["denoiser"]}),
]


@pytest.fixture
def named_plugin(monkeypatch, request):
    """``request.param``'s plugin named in the environment, taken out again afterwards."""
    from mindiesd_tune.accel.methods import unregister_method

    module, section, name, _ = request.param
    monkeypatch.setenv(plugins.ENV_VAR, module)
    monkeypatch.setattr(plugins, "_loaded", set())
    yield request.param
    monkeypatch.delenv(plugins.ENV_VAR)
    unregister_method(section, name)
    sys.modules.pop(module, None)


@pytest.mark.parametrize("named_plugin", TOYS, indirect=True, ids=[t[2] for t in TOYS])
def test_a_toy_method_of_each_section_is_one_plugin_file(named_plugin, tiny_flux):
    from mindiesd_tune import accel
    from mindiesd_tune.accel.methods import method_names
    from mindiesd_tune.search_spaces import searched_sections

    if named_plugin[1] == "quant":
        pytest.importorskip("torchao")
    module, section, name, mapping = named_plugin
    assert name not in method_names(section)

    # a profile's section names it: read, validated, written and read back
    cfg = accel.AccelConfig.from_dict({section: mapping})
    assert name in method_names(section) and accel.AccelConfig.from_yaml(cfg.to_yaml()) == cfg
    assert dict(cfg.summary())[section] != "off"

    # a study on this model offers it
    offered = {sec.name: [m.name for m in entries] for sec, entries in searched_sections("dit-image")}
    assert name in offered[section], offered

    # installed on a real pipeline, changing its output, and taken off bit for bit
    base = generate(tiny_flux)
    with accel.apply(tiny_flux.pipe, cfg):
        assert not np.array_equal(generate(tiny_flux), base)
    assert np.array_equal(generate(tiny_flux), base)
