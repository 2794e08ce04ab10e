"""The package's import graph has no cycle, and no module imports from a layer above its own.

The layers are the fenced block under "## Layers" in docs/architecture.md, read from there, top
layer first: one line per layer, comma-separated units. A unit (``accel.cache``) is a module or
package with everything under it, unless a more specific unit is listed (``accel.sparse.masks``
inside ``accel.sparse``). A module may import its own unit and units of lower layers; two units
of one layer may not import each other. The package itself (``mindiesd_tune``) holds only its
``__init__``, so every other module must be in a listed unit.

How the graph is read (``ast``, no import is executed):

* a module-level import is an edge, and so is an import inside a function: a lazy import only
  defers when the module loads, not whether the importer needs it;
* ``from pkg import name`` is an edge to ``pkg.name`` when that is a module of the package, else
  to ``pkg``; relative imports are resolved against the importing module;
* imports under ``if TYPE_CHECKING:`` are edges too (they name what the annotations depend on);
* importing ``a.b`` also runs ``a/__init__.py``; that implicit edge is not counted (every
  package's ``__init__`` imports its own modules, so counting it would make every package a
  cycle by construction);
* imports by name at run time (``importlib.import_module``: the plugins and the built-in model
  specs) are not seen: they are the registries' way of finding entries without importing them.
"""

from __future__ import annotations

import ast
import pathlib
import re
import textwrap

import pytest

import mindiesd_tune

PACKAGE = "mindiesd_tune"
ROOT = pathlib.Path(mindiesd_tune.__file__).parent.parent
DOC = ROOT / "docs" / "architecture.md"


# ---- the graph
def modules(root: pathlib.Path, package: str) -> dict[str, pathlib.Path]:
    """Dotted name -> file of every module of ``package`` under ``root`` (a package is its ``__init__``)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _targets(node: ast.AST, module: str, is_package: bool, known: dict) -> list[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        names = [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source for a in node.names]
    else:
        return []
    out = []
    for name in names:
        while name not in known and "." in name:  # ``import a.b.func`` style: the module that holds it
            name = name.rpartition(".")[0]
        if name in known and name != module:
            out.append(name)
    return out


def import_graph(root: pathlib.Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports, module-level and function-level alike."""
    known = modules(root, package)
    graph: dict[str, set[str]] = {m: set() for m in known}
    for module, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            graph[module].update(_targets(node, module, is_package, known))
    return graph


# ---- the checks
def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (or a module importing itself), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the package's graph is shallow enough to recurse
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def cycle_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One cycle through the component's first module, for the failure message."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return component


def read_layers(text: str) -> list[list[str]]:
    """The units of each layer, top first, from the fenced block under "## Layers"."""
    section = text.split("## Layers", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block, "docs/architecture.md: no fenced layer list under '## Layers'"
    return [[u.strip() for u in line.split(",")] for line in block.group(1).splitlines() if line.strip()]


def layer_violations(graph: dict[str, set[str]], layers: list[list[str]], package: str) -> list[str]:
    """Edges from a module to a unit of its own layer or one above, and modules in no unit."""
    units = {(f"{package}.{u}" if u != package else u): i for i, layer in enumerate(layers) for u in layer}

    def unit_of(module: str) -> str | None:
        best = None
        for u in units:
            if (module == u or module.startswith(u + ".")) and (best is None or len(u) > len(best)):
                best = u
        return best

    problems = []
    for module in sorted(graph):
        u = unit_of(module)
        if u is None or (u == package and module != package):
            problems.append(f"{module} is in no layer (list it in docs/architecture.md)")
    for module in sorted(graph):
        a = unit_of(module)
        for target in sorted(graph[module]):
            b = unit_of(target)
            if a is None or b is None or a == b:
                continue
            if units[b] < units[a]:
                problems.append(f"{module} imports {target}: layer {units[a]} ({a}) imports layer {units[b]} ({b}) above it")
            elif units[b] == units[a]:
                problems.append(f"{module} imports {target}: {a} and {b} share layer {units[a]}")
    return problems


# ---- the package
@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT, PACKAGE)


def test_the_package_has_no_import_cycle(graph):
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(cycle_path(graph, c)) for c in found)


def test_no_module_imports_from_a_layer_above_its_own(graph):
    problems = layer_violations(graph, read_layers(DOC.read_text()), PACKAGE)
    assert not problems, "\n".join(problems)


def test_the_graph_sees_function_level_and_relative_imports(graph):
    # accel.methods.first_block imports its hooks inside its installer
    assert "mindiesd_tune.accel.cache.residual" in graph["mindiesd_tune.accel.methods.first_block"]
    assert "mindiesd_tune.accel.registry" in graph["mindiesd_tune.accel.config"]


# ---- the checks fail where they should
def _write_package(root: pathlib.Path, files: dict[str, str]) -> None:
    for name, code in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(code))


def test_a_planted_cycle_through_a_function_level_import_is_found(tmp_path):
    _write_package(tmp_path, {
        "planted/__init__.py": "",
        "planted/hooks.py": "def install():\n    from .methods import Config\n",
        "planted/methods.py": "from . import hooks\n\nclass Config: ...\n",
        "planted/clean.py": "from .hooks import install\n",
    })
    graph = import_graph(tmp_path, "planted")
    assert cycles(graph) == [["planted.hooks", "planted.methods"]]
    assert cycle_path(graph, cycles(graph)[0]) == ["planted.hooks", "planted.methods", "planted.hooks"]


def test_a_planted_cycle_in_a_synthetic_graph_is_found():
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}, "p.e": {"p.e"}}
    assert cycles(graph) == [["p.a", "p.b", "p.c"], ["p.e"]]


def test_an_import_from_a_lower_layer_to_a_higher_one_is_refused():
    layers = read_layers("## Layers\n\n```\ntop\nmiddle, side\nlow\n```\n")
    assert layers == [["top"], ["middle", "side"], ["low"]]
    graph = {"p.top": {"p.middle"}, "p.middle": {"p.low", "p.side"}, "p.low": {"p.top"}, "p.side": set(), "p.stray": set()}
    assert layer_violations(graph, layers, "p") == [
        "p.stray is in no layer (list it in docs/architecture.md)",
        "p.low imports p.top: layer 2 (p.low) imports layer 0 (p.top) above it",
        "p.middle imports p.side: p.middle and p.side share layer 1",
    ]


def test_the_facades_export_every_registered_config_class():
    from mindiesd_tune import accel
    from mindiesd_tune.accel import methods

    for entry in methods.methods():
        name = entry.config.__name__
        assert getattr(accel, name) is getattr(methods, name) is entry.config, name
        assert name in accel.__all__ and name in methods.__all__, name
