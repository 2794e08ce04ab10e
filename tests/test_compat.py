"""The compatibility modules: every private name of diffusers and torchao the package reaches is
in one module per library, and a release that drops one fails with one line naming it.

``test_*_has_every_private_name`` fails on an upgrade that renames one, with the names listed;
the other tests take a name away and check the refusal names it and the installed version.
"""

import pytest

from mindiesd_tune.compat import CompatError
from mindiesd_tune.compat import _version as version
from mindiesd_tune.compat import diffusers as compat


def test_diffusers_has_every_private_name():
    assert compat.missing() == [], f"diffusers lacks private names mindiesd-tune uses: {compat.missing()}"


def test_torchao_has_every_private_name():
    pytest.importorskip("torchao")
    from mindiesd_tune.compat import torchao as compat_torchao

    assert compat_torchao.missing() == [], f"torchao lacks private names mindiesd-tune uses: {compat_torchao.missing()}"


def test_a_missing_diffusers_class_is_named_with_the_version(monkeypatch):
    import diffusers
    from diffusers.models import _modeling_parallel

    monkeypatch.delattr(_modeling_parallel, "ContextParallelConfig")
    monkeypatch.setattr(diffusers, "__version__", "9.9.9")
    assert "diffusers.models._modeling_parallel.ContextParallelConfig" in compat.missing()
    with pytest.raises(CompatError, match=r"^diffusers 9\.9\.9: diffusers\.models\._modeling_parallel\.ContextParallelConfig is gone"):
        compat.parallel_config_classes()


def test_a_missing_class_attribute_is_named(monkeypatch):
    from diffusers import ModelMixin

    monkeypatch.delattr(ModelMixin, "_tp_plan")
    with pytest.raises(CompatError, match=r"ModelMixin\._tp_plan is gone, which mindiesd-tune uses for tensor parallelism"):
        compat.tp_plan(object())


def test_an_attribute_whose_default_is_none_is_there():
    from diffusers import ModelMixin

    assert ModelMixin._tp_plan is None and compat.tp_plan(ModelMixin) is None


def test_a_missing_torchao_name_is_named(monkeypatch):
    pytest.importorskip("torchao")
    from torchao.quantization.quantize_.workflows.int4 import int4_packing_format

    from mindiesd_tune.compat import torchao as compat_torchao

    monkeypatch.delattr(int4_packing_format, "Int4PackingFormat")
    assert compat_torchao.missing() == [f"{compat_torchao._INT4}.Int4PackingFormat.TILE_PACKED_TO_4D"]
    with pytest.raises(CompatError, match=r"Int4PackingFormat\.TILE_PACKED_TO_4D is gone, which mindiesd-tune uses for quant\.scheme w4a16"):
        compat_torchao.int4_tile_packed_to_4d()


def test_versions_compare_by_release_numbers():
    assert version.at_least("0.42.1", "0.42") and version.at_least("0.18.0+cu130", "0.18")
    assert version.at_least("1.0.0.dev0", "0.42") and not version.at_least("0.41.9", "0.42")


def test_the_handle_attribute_is_named_in_one_place():
    import pathlib

    import mindiesd_tune
    from mindiesd_tune.accel import attached

    root = pathlib.Path(mindiesd_tune.__file__).parent
    users = [p.relative_to(root).as_posix() for p in root.rglob("*.py") if attached.ATTR in p.read_text()]
    assert users == ["accel/attached.py"]


PRIVATE = {"_modeling_parallel", "_parallel_config", "_tp_plan", "_cp_plan", "_diffusers_hook", "_get_qkv_projections",
           "_pack_latents", "_prepare_latent_image_ids", "_keep_in_fp32_modules", "_reset_stateful_cache", "quantize_"}


def _private_uses(tree) -> set[str]:
    """The private names a module's code reaches: attributes, imported modules and string constants
    (``getattr(m, "_tp_plan")``), docstrings left out."""
    import ast

    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            words = {node.attr}
        elif isinstance(node, ast.Import):
            words = {part for alias in node.names for part in alias.name.split(".")}
        elif isinstance(node, ast.ImportFrom):  # the module path: a public function may end in "_" (quantize_)
            words = set((node.module or "").split("."))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words = set(node.value.replace(":", ".").split("."))
        else:
            continue
        found |= words & PRIVATE
    return found


def test_private_names_of_outside_libraries_are_reached_only_through_compat():
    import ast
    import pathlib

    import mindiesd_tune

    root = pathlib.Path(mindiesd_tune.__file__).parent
    uses = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if not rel.startswith("compat/"):
            names = _private_uses(ast.parse(path.read_text()))
            if names:
                uses[rel] = sorted(names)
    assert uses == {}, f"private names of diffusers/torchao used outside mindiesd_tune/compat: {uses}"


def test_the_private_name_check_sees_a_getattr_and_an_import():
    import ast

    code = 'import diffusers.models._modeling_parallel\nplan = getattr(m, "_tp_plan", None)\n"""_cp_plan in a docstring"""\n'
    assert _private_uses(ast.parse(code)) == {"_modeling_parallel", "_tp_plan"}
