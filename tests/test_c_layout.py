"""The C sources' shape: every function fits a screen (at most 60 lines, signature to
closing brace), and main.c stays the helper's outline (at most 150 lines)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
C_DIRS = ("src/helper", "src/ext")  # src/ext: compiled extensions, when there are any
MAX_FUNCTION_LINES = 60
MAX_MAIN_LINES = 150


def c_sources() -> list[Path]:
    return sorted(p for d in C_DIRS for p in (ROOT / d).glob("*.c"))


def functions(path: Path) -> dict[str, int]:
    """Each function defined in ``path`` and its length in lines, signature included.

    The sources are in kernel style: a definition's ``{`` and ``}`` stand alone at
    column 0 (a one-line function has both on its signature's line).
    """
    lines = path.read_text().splitlines()
    found: dict[str, int] = {}
    for i, line in enumerate(lines):
        if line == "{":
            start = i - 1
            while start > 0 and lines[start][:1] in (" ", "\t"):  # a signature's wrapped lines
                start -= 1
            end = lines.index("}", i)
            signature = " ".join(lines[start:i])
        elif re.match(r"^\w.*\)\s*\{.*\}\s*$", line) and "=" not in line.split("(")[0]:
            start = end = i
            signature = line
        else:
            continue
        name = re.search(r"(\w+)\s*\(", signature)
        assert name, f"{path.name}:{start + 1}: no function name in {signature!r}"
        found[f"{path.name}:{name.group(1)}"] = end - start + 1
    return found


def test_c_sources_are_found() -> None:
    names = {p.name for p in c_sources()}
    assert {"main.c", "options.c", "supervisor.c", "linux.c"} <= names
    # the parser sees the functions it must (a change of style would hide them all)
    found = functions(ROOT / "src/helper/options.c")
    assert "options.c:parse_args" in found and "options.c:find_option" in found


@pytest.mark.parametrize("path", c_sources(), ids=lambda p: p.name)
def test_no_c_function_over_60_lines(path: Path) -> None:
    found = functions(path)
    too_long = {name: n for name, n in found.items() if n > MAX_FUNCTION_LINES}
    assert too_long == {}


def test_main_c_is_an_outline() -> None:
    main = ROOT / "src/helper/main.c"
    assert len(main.read_text().splitlines()) <= MAX_MAIN_LINES
