"""The package's shape: no import cycle, and the CPython seam bound by name."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import leashed
from leashed import _seam

PACKAGE = Path(leashed.__file__).resolve().parent


def _own_imports(path: Path) -> set[str]:
    """The leashed modules ``path`` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module)
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                a.name.split(".", 1)[1] for a in node.names if a.name.startswith("leashed.")
            )
    return found


#: Every module of the package, subpackages included.
MODULES = sorted(PACKAGE.rglob("*.py"))
#: The longest a function of src/ may be, in lines (its docstring not counted).
MAX_FUNCTION_LINES = 60


def _graph() -> dict[str, set[str]]:
    return {path.stem: _own_imports(path) for path in MODULES}


def test_no_import_cycle() -> None:
    graph = _graph()
    graph.pop("__init__", None)  # the public face imports everything; nothing imports it back
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        if state.get(module) == 2:
            return
        assert state.get(module) != 1, "import cycle: " + " -> ".join([*path, module])
        state[module] = 1
        for imported in sorted(graph.get(module, ())):
            visit(imported, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        visit(module, [])


def test_no_function_local_imports_between_our_modules() -> None:
    for path in MODULES:
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                own = isinstance(node, ast.ImportFrom) and node.level >= 1
                assert not own, f"{path.name}:{node.lineno} imports one of ours in a function"


def _code_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """The function's lines from ``def`` to its end, less its docstring's."""
    length = (function.end_lineno or function.lineno) - function.lineno + 1
    first = function.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        length -= (first.end_lineno or first.lineno) - first.lineno + 1
    return length


def test_no_function_over_60_lines() -> None:
    assert len(MODULES) > 20  # the package was found
    too_long = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = _code_lines(node)
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"


@pytest.mark.skipif(sys.platform == "win32", reason="the POSIX backend imports on POSIX only")
def test_both_backends_offer_the_same_names() -> None:
    from leashed import _platform, _posix, _windows

    for backend in (_posix, _windows):
        missing = [name for name in _platform.BACKEND_NAMES if not hasattr(backend, name)]
        assert not missing, f"{backend.__name__} lacks {missing}"
    for waiter in ("_watch_pidfd", "_watch_kqueue", "_windows"):
        module = __import__(f"leashed.{waiter}", fromlist=["open_parent_wait"])
        assert callable(module.open_parent_wait)


def test_execute_child_is_bound_by_name_on_this_cpython() -> None:
    stdlib = inspect.signature(subprocess.Popen._execute_child)  # type: ignore[attr-defined]
    names = tuple(stdlib.parameters)[1:]
    assert names == _seam.PARAMETERS
    _seam.check_parameters()
    values = tuple(range(len(names)))
    call = _seam.bind(values, {})
    assert [call[name] for name in names] == list(values)
    assert _seam.spawn_unaudited is not None  # the stdlib's own code, run unaudited


def test_a_renamed_parameter_fails_loudly() -> None:
    renamed = tuple("argv" if n == "args" else n for n in _seam.PARAMETERS)
    with pytest.raises(RuntimeError, match=r"no parameter.*args"):
        _seam.check_parameters(renamed)


def test_one_audit_event_per_spawn_with_the_users_program(tmp_path: Path) -> None:
    if sys.platform == "win32":  # the stdlib's own event is the only one: nothing is rewritten
        options, argv, expected = "({},)", "[sys.executable, '-c', 'pass']", "1"
    else:
        options = "({}, {'tree': True}, {'mechanism': 'guardian'})"
        argv, expected = "['true', 'x']", "[('true', ['true', 'x'])]"
    code = (
        "import sys, leashed\n"
        "seen = []\n"
        "sys.addaudithook(lambda e, a: seen.append(a[:2]) if e == 'subprocess.Popen' else None)\n"
        f"for options in {options}:\n"
        "    seen.clear()\n"
        f"    leashed.Popen({argv}, **options).wait()\n"
        f"    print(len(seen) if sys.platform == 'win32' else seen)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout.splitlines()
    assert out and out == [expected] * len(out)
    assert len(out) == (1 if sys.platform == "win32" else 3)
