"""Size limits of the package: no file over 600 lines, no function over 60 lines (tests aside).

A function's length runs from its ``def`` line to its last line (docstring and nested
functions included, decorators not). cli.py and tuner/ are being thinned in main: their checks
are expected to fail until then, the rest of the package must pass now.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import mindiesd_tune

MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 60
ROOT = pathlib.Path(mindiesd_tune.__file__).parent
THINNED_IN_MAIN = ("cli.py", "tuner/")


def too_long(path: pathlib.Path, root: pathlib.Path = ROOT) -> list[str]:
    """What in ``path`` is over the limits, one line each, named relative to ``root``."""
    text = path.read_text()
    rel = path.relative_to(root).as_posix()
    out = []
    lines = len(text.splitlines())
    if lines > MAX_FILE_LINES:
        out.append(f"{rel}: {lines} lines (at most {MAX_FILE_LINES})")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                out.append(f"{rel}:{node.lineno} {node.name}: {length} lines (at most {MAX_FUNCTION_LINES})")
    return out


def _files(thinned: bool) -> list[pathlib.Path]:
    return [p for p in sorted(ROOT.rglob("*.py")) if p.relative_to(ROOT).as_posix().startswith(THINNED_IN_MAIN) == thinned]


def test_the_package_keeps_files_and_functions_short():
    problems = [line for path in _files(thinned=False) for line in too_long(path)]
    assert not problems, "\n".join(problems)


@pytest.mark.xfail(strict=False, reason="cli/tuner being thinned in main")
def test_cli_and_tuner_keep_files_and_functions_short():
    problems = [line for path in _files(thinned=True) for line in too_long(path)]
    assert not problems, "\n".join(problems)


def test_the_check_finds_a_long_function_and_a_long_file(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))  # def + 60 lines: one too many
    probe = tmp_path / "probe.py"
    probe.write_text(f"def long():\n{body}\n\n\ndef short():\n    pass\n" + "\n" * MAX_FILE_LINES)
    n = len(probe.read_text().splitlines())
    assert too_long(probe, tmp_path) == [f"probe.py: {n} lines (at most {MAX_FILE_LINES})",
                                         f"probe.py:1 long: {MAX_FUNCTION_LINES + 1} lines (at most {MAX_FUNCTION_LINES})"]
