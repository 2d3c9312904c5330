"""The helper protocol is written three times: in C (src/helper/), in words
(docs/helper-protocol.md) and in Python (leashed._protocol). These tests read each and
fail when they disagree: options (letter, kind, modes), stages, control ops, sizes."""

from __future__ import annotations

import re
from pathlib import Path

from leashed import _protocol

ROOT = Path(__file__).resolve().parent.parent
HELPER = ROOT / "src" / "helper"
DOC = ROOT / "docs" / "helper-protocol.md"

#: The C option table's kinds and the docs' words for them, as _protocol spells them.
C_KINDS = {"FLAG": "flag", "NUMBER": "number", "LIST": "list"}
C_MODES = {"MODE_DIRECT": "direct", "MODE_SUPERVISOR": "supervisor", "MODE_GUARDIAN": "guardian"}
ALL_MODES = frozenset(C_MODES.values())

Options = dict[str, tuple[str, frozenset[str]]]  # flag -> (kind, modes)


def _c(name: str) -> str:
    """A C source without its comments."""
    text = (HELPER / name).read_text()
    return re.sub(r"/\*.*?\*/", " ", text, flags=re.S)


def _c_modes(source: str, expression: str) -> frozenset[str]:
    """The modes a table entry's mode expression names (MODE_X | MODE_Y, or a macro)."""
    macros = dict(re.findall(r"#define\s+(\w+)\s+\(([^)]*)\)", source))
    names = [n.strip() for n in macros.get(expression, expression).split("|")]
    return frozenset(C_MODES[n] for n in names)


def c_options() -> Options:
    source = _c("options.c")
    table = re.search(r"option_specs\[\]\s*=\s*\{(.*?)\};", source, re.S)
    assert table, "the option table of options.c was not found"
    rows = re.findall(r"\{\s*'(\w)'\s*,\s*([\w| ()]+?)\s*,\s*(\w+)\s*,", table.group(1))
    assert rows, "no rows in the option table of options.c"
    return {f"-{letter}": (C_KINDS[kind], _c_modes(source, modes)) for letter, modes, kind in rows}


def c_enum(source: str, name: str) -> dict[str, int]:
    body = re.search(rf"enum\s+{name}\s*\{{(.*?)\}};", source, re.S)
    assert body, f"enum {name} not found"
    return {k: int(v) for k, v in re.findall(r"(\w+)\s*=\s*(\d+)", body.group(1))}


def c_struct_size(source: str, name: str) -> int:
    """The size of a struct made of int32_t members only (the protocol's messages)."""
    body = re.search(rf"struct\s+{name}\s*\{{(.*?)\}};", source, re.S)
    assert body, f"struct {name} not found"
    size = 0
    for decl in filter(None, (d.strip() for d in body.group(1).split(";"))):
        kind, names = decl.split(None, 1)
        assert kind == "int32_t", f"struct {name}: {decl!r} is not int32_t"
        size += 4 * len(names.split(","))
    return size


def _doc_rows(first_header: str) -> list[list[str]]:
    """The cells of the docs' table whose header row starts with ``| first_header |``."""
    lines = DOC.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _doc_modes(cell: str) -> frozenset[str]:
    if cell == "all":
        return ALL_MODES
    words = {w.strip() for w in cell.split(",")} - {"Linux"}  # an OS note, not a mode
    return frozenset(words)


def doc_options() -> Options:
    found: Options = {}
    for option, kind, _range, modes, *_ in _doc_rows("option"):
        found[option.strip("`")] = (kind, _doc_modes(modes))
    return found


def py_options() -> Options:
    return {o.flag: (o.kind, o.modes) for o in _protocol.OPTIONS.values()}


def test_options_agree() -> None:
    c = c_options()
    assert py_options() == c, "src/leashed/_protocol.py OPTIONS != the table of options.c"
    assert doc_options() == c, "docs/helper-protocol.md's option table != options.c"


def test_docs_name_no_unknown_option() -> None:
    """Every option the docs (or a C comment) mention as `-x` is one the helper takes."""
    known = set(c_options())
    in_docs = set(re.findall(r"`(-[A-Za-z])`", DOC.read_text()))
    assert in_docs - known == set()
    for path in sorted(HELPER.glob("*.[ch]")):
        comments = " ".join(re.findall(r"/\*(.*?)\*/", path.read_text(), re.S))
        # "unknown option -Z" is the example of a refusal
        named = set(re.findall(r"(?<![\w-])(?<!unknown option )(-[A-Za-z])(?![\w-])", comments))
        assert named - known == set(), f"{path.name} names an option the helper rejects"


def test_stages_agree() -> None:
    c = {k.removeprefix("STAGE_"): v for k, v in c_enum(_c("helper.h"), "lh_stage").items()}
    assert {s.name: s.value for s in _protocol.Stage} == c
    doc = {name: int(number) for number, name, _ in _doc_rows("stage")}
    assert doc == c


def test_control_ops_agree() -> None:
    c = {k.removeprefix("CTL_"): v for k, v in c_enum(_c("helper.h"), "lh_control_op").items()}
    assert {op.name: op.value for op in _protocol.ControlOp} == c
    doc = {}
    for op, *_ in _doc_rows("op"):
        if op != "other":
            number, name = op.split()
            doc[name] = int(number)
    assert doc == c


def test_message_sizes_agree() -> None:
    header = _c("helper.h")
    assert _protocol._REPORT.size == c_struct_size(header, "lh_report")
    assert _protocol.CONTROL_REQUEST.size == c_struct_size(header, "lh_control")
    assert _protocol.CONTROL_ANSWER.size == c_struct_size(header, "lh_answer")
    text = DOC.read_text()
    assert f"Otherwise {_protocol._REPORT.size} bytes," in text
    assert "A request is two native-endian int32" in text
    assert "reply (one native int32 errno)" in text


def test_forwarded_signals_agree() -> None:
    """The signals the front passes on: LH_FORWARDED in helper.h, listed in the docs."""
    macro = re.search(r"#define\s+LH_FORWARDED\s*\\?\s*\{(.*?)\}", _c("helper.h"), re.S)
    assert macro, "LH_FORWARDED not found in helper.h"
    c = [name.strip().removeprefix("SIG") for name in macro.group(1).replace("\\", "").split(",")]
    listed = re.search(r"every forwarded signal sent to its pid: ([A-Z0-9,\s]+)\.", DOC.read_text())
    assert listed, "the docs' list of forwarded signals was not found"
    assert [name.strip() for name in listed.group(1).split(",")] == c
