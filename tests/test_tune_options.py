"""run_study's options: one TuneOptions object, fields laid over it, checked before any work."""

import dataclasses
import inspect

import pytest

from conftest import cli
from mindiesd_tune.errors import UserError
from mindiesd_tune.tuner import TuneOptions, parse_budget, parse_floor, run_study


@pytest.mark.parametrize("bad, needle", [
    ({"objective": "sharpness"}, "unknown objective 'sharpness'"),
    ({"sampler": "cmaes"}, "unknown sampler 'cmaes'"),
    ({"workers": 0}, "--workers 0"),
])
def test_validate_names_the_bad_option(bad, needle):
    with pytest.raises(UserError, match=needle):
        TuneOptions(**bad).validate()
    TuneOptions().validate()  # the defaults run


def test_an_unknown_field_is_a_type_error_naming_it(tmp_path):
    with pytest.raises(TypeError, match="wokers"):
        run_study("fake", parse_budget("1t"), tmp_path, wokers=2)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_a_bad_option_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(UserError, match="unknown sampler"):
        run_study("fake", parse_budget("1t"), tmp_path / "run", TuneOptions(sampler="cmaes"), worker_factory="fakes:make_fake")
    assert not (tmp_path / "run").exists()


def test_fields_are_laid_over_the_options(tmp_path):
    base_lines, lines = [], []
    options = TuneOptions(worker_factory="fakes:make_fake", isolate=False, floors=[parse_floor("psnr>=40")],
                          sampler="random", log=base_lines.append, progress=False)
    outcome = run_study("fake", parse_budget("3t"), tmp_path, options, log=lines.append, study_name="laid-over")
    assert outcome.study.study_name == "laid-over"
    assert outcome.study.user_attrs["sampler"] == "random"  # from the options object
    assert outcome.study.user_attrs["floors"] == ["psnr>=40"]
    assert lines and not base_lines  # the field replaced the options' log
    assert options.log == base_lines.append and options.study_name is None  # the caller's object is untouched


def test_every_option_is_documented():
    doc = inspect.getdoc(TuneOptions)
    missing = [f.name for f in dataclasses.fields(TuneOptions) if f.name not in doc]
    assert not missing, missing


def test_the_cli_hands_run_study_one_options_object(capsys, tmp_path, monkeypatch):
    import mindiesd_tune.tuner

    seen = {}

    def fake_run_study(model, budget, out_dir=None, options=None, **fields):
        seen.update(model=model, budget=budget, out_dir=out_dir, options=options, fields=fields)
        raise UserError("stop here")

    monkeypatch.setattr(mindiesd_tune.tuner, "run_study", fake_run_study)
    code, _, err = cli(capsys, "tune", "tiny-flux-random", "--out", str(tmp_path / "run"), "--workers", "2",
                       "--sampler", "random", "--prune-margin", "0", "--no-baseline-cache", "--quiet")
    assert code == 2 and "stop here" in err
    opts = seen["options"]
    assert isinstance(opts, TuneOptions) and seen["fields"] == {}
    assert (opts.workers, opts.sampler, opts.prune_margin, opts.quiet, opts.baseline_cache) == (2, "random", None, True, None)
    opts.validate()
