"""The parallel section's registry entry: one config, offered only to rank groups, one categorical
over the meshes that can run, and a one-line refusal outside a rank group."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from mindiesd_tune.accel import AccelConfig, ConfigError, apply
from mindiesd_tune.accel.methods import get_method, method_of
from mindiesd_tune.accel.parallel import ParallelConfig, ParallelError
from mindiesd_tune.search_spaces import SpaceContext, config_from_params, describe, neutral_params, offered, suggest

TWO = ("single", "cfg2", "cfg2xvae2", "ulysses2", "ulysses2xvae2")


def test_one_config_for_the_registry_and_the_meshes():
    import mindiesd_tune.accel as accel

    assert accel.ParallelConfig is ParallelConfig
    assert method_of(ParallelConfig(cfg=2)).key == "parallel.mesh"
    assert issubclass(ParallelError, ConfigError)  # the CLI prints it as one line
    cfg = AccelConfig.from_dict({"parallel": {"cfg": 2, "ulysses": 2, "vae": 4}})
    assert cfg.parallel == ParallelConfig(cfg=2, ulysses=2, vae=4) and cfg.parallel.world_size == 4
    assert AccelConfig.from_yaml(cfg.to_yaml()) == cfg
    assert dict(cfg.summary())["parallel"] == "cfg2xulysses2xvae4 (4 ranks, vae_halo=2)"
    for name in ("single", "cfg2", "cfg2xulysses2xvae4", "ring2xtensor2"):
        assert ParallelConfig.parse(name).describe() == name
    with pytest.raises(ParallelError, match="not a mesh name"):
        ParallelConfig.parse("cfg2xwarp2")


def test_offered_only_when_the_trials_span_several_ranks():
    entry = get_method("parallel", "mesh")
    assert not entry.applies(SpaceContext())
    assert not entry.applies(SpaceContext(world_size=1, meshes=("single",)))
    assert not entry.applies(SpaceContext(world_size=2, meshes=("single",)))  # nothing but the baseline runs
    assert entry.applies(SpaceContext(world_size=2, meshes=TWO))
    assert "parallel.mesh" not in neutral_params("dit-image", SpaceContext())


def test_describe_lists_the_meshes_the_group_can_run(demo_flux):
    ctx = describe(demo_flux.pipe, demo_flux.generation, world_size=2)
    assert ctx.world_size == 2 and set(ctx.meshes) == set(TWO) and ctx.meshes[0] == "single"
    assert SpaceContext.from_dict(ctx.to_dict()) == ctx
    four = describe(demo_flux.pipe, demo_flux.generation, world_size=4).meshes
    assert four[0] == "single" and "cfg2xulysses2" in four
    assert all(ParallelConfig.parse(m).world_size == 4 for m in four[1:])  # a group of 4 runs meshes of 4
    assert describe(demo_flux.pipe, demo_flux.generation).meshes is None


def test_a_study_samples_one_categorical_over_the_meshes():
    ctx = SpaceContext(world_size=2, meshes=TWO)
    assert offered("parallel", "dit-image", ctx) == ["mesh"]
    base = neutral_params("dit-image", ctx)
    assert base["parallel.mesh"] == "single" and config_from_params(base).is_neutral
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        cfg = suggest(trial, "dit-image", ctx)
        assert trial.params["parallel.mesh"] == cfg.parallel.describe()
        assert config_from_params(trial.params) == cfg  # the study rebuilds it from the trial's parameters
        seen.add(cfg.parallel.describe())
        study.tell(trial, 1.0)
    assert seen == set(TWO)
    assert isinstance(study.trials[0].distributions["parallel.mesh"], optuna.distributions.CategoricalDistribution)
    from mindiesd_tune.search_spaces import presets

    assert {"parallel.mesh": "cfg2"} in [{k: v for k, v in p.items() if k == "parallel.mesh" and v != "single"}
                                         for p in presets("dit-image", ctx)]


def test_a_mesh_outside_a_rank_group_is_refused_in_one_line(demo_flux, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ParallelError) as err:
        apply(demo_flux.pipe, AccelConfig(parallel=ParallelConfig(cfg=2)))
    assert str(err.value) == ("parallel mesh cfg2 needs 2 ranks, this job has one process; "
                              "launch with torchrun --nproc-per-node 2, or mindiesd-tune run which launches them")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ParallelError, match="needs 2 ranks, this job has 4 ranks; launch with torchrun --nproc-per-node 2"):
        apply(demo_flux.pipe, AccelConfig(parallel=ParallelConfig(cfg=2)))
    assert not hasattr(demo_flux.pipe, "_mindiesd_accel_handle")  # nothing left installed
    # the neutral mesh installs anywhere
    apply(demo_flux.pipe, AccelConfig(parallel=dataclasses.replace(ParallelConfig()))).remove()
