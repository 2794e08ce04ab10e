"""Size limits of the package: no file over 600 lines, no function over 60 lines (tests aside).

A function's length runs from its ``def`` line to its last line (docstring and nested
functions included, decorators not). The command line is held tighter: cli.py under 450 lines,
no function in it over 40, since each command only parses, calls one library function and prints.
"""

from __future__ import annotations

import ast
import pathlib

import mindiesd_tune

MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 60
ROOT = pathlib.Path(mindiesd_tune.__file__).parent
CLI_FILE_LINES = 449  # under 450
CLI_FUNCTION_LINES = 40


def too_long(path: pathlib.Path, root: pathlib.Path = ROOT, max_file: int = MAX_FILE_LINES,
             max_function: int = MAX_FUNCTION_LINES) -> list[str]:
    """What in ``path`` is over the limits, one line each, named relative to ``root``."""
    text = path.read_text()
    rel = path.relative_to(root).as_posix()
    out = []
    lines = len(text.splitlines())
    if lines > max_file:
        out.append(f"{rel}: {lines} lines (at most {max_file})")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > max_function:
                out.append(f"{rel}:{node.lineno} {node.name}: {length} lines (at most {max_function})")
    return out


def test_the_package_keeps_files_and_functions_short():
    problems = [line for path in sorted(ROOT.rglob("*.py")) for line in too_long(path)]
    assert not problems, "\n".join(problems)


def test_the_command_line_only_parses_calls_and_prints():
    problems = too_long(ROOT / "cli.py", max_file=CLI_FILE_LINES, max_function=CLI_FUNCTION_LINES)
    assert not problems, "\n".join(problems)


def test_the_check_finds_a_long_function_and_a_long_file(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))  # def + 60 lines: one too many
    probe = tmp_path / "probe.py"
    probe.write_text(f"def long():\n{body}\n\n\ndef short():\n    pass\n" + "\n" * MAX_FILE_LINES)
    n = len(probe.read_text().splitlines())
    assert too_long(probe, tmp_path) == [f"probe.py: {n} lines (at most {MAX_FILE_LINES})",
                                         f"probe.py:1 long: {MAX_FUNCTION_LINES + 1} lines (at most {MAX_FUNCTION_LINES})"]
