"""The one seam into CPython's subprocess: ``Popen._execute_child``, by parameter name.

leashed.Popen overrides only ``_execute_child``. Its parameters are bound by the names of
the running interpreter's own signature (not by position: 3.11 added ``process_group``
in the middle, and the next change would otherwise put a uid where a gid goes), and the
parameters leashed rewrites must all be there, or spawning fails loudly.

On POSIX the stdlib's ``_execute_child`` audits the argv it executes, which for leashed is
the helper's. ``spawn_unaudited`` runs the stdlib's own code with only that one audit
event silenced; leashed raises the event itself, once, with the user's program and argv,
exactly as subprocess would report them.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import types
from collections.abc import Callable
from typing import Any

#: The parameters leashed reads or rewrites; a CPython without one of them is unsupported.
NEEDED = frozenset(
    {"args", "executable", "preexec_fn", "pass_fds", "cwd", "env", "creationflags", "shell"}
)
NEEDED_POSIX = frozenset({"gid", "gids", "uid"})

STDLIB_EXECUTE_CHILD: Callable[..., None] = subprocess.Popen._execute_child  # type: ignore[attr-defined]
PARAMETERS: tuple[str, ...] = tuple(inspect.signature(STDLIB_EXECUTE_CHILD).parameters)[1:]


def check_parameters(parameters: tuple[str, ...] = PARAMETERS) -> None:
    """RuntimeError naming what is missing if this CPython's seam is not the expected one."""
    needed = NEEDED | (NEEDED_POSIX if sys.platform != "win32" else frozenset())
    missing = sorted(needed - set(parameters))
    if missing:
        raise RuntimeError(
            f"this Python's subprocess.Popen._execute_child has no parameter(s) "
            f"{', '.join(missing)}; leashed does not support Python {sys.version.split()[0]} yet"
        )


check_parameters()


def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by name, as the running CPython's signature names them."""
    if len(args) > len(PARAMETERS):
        raise TypeError(
            f"_execute_child() takes {len(PARAMETERS)} arguments, {len(args)} were given"
        )
    call = dict(zip(PARAMETERS, args, strict=False))
    call.update(kwargs)
    return call


class _SysWithoutPopenAudit:
    """``sys`` as seen by the stdlib's _execute_child: the Popen audit event is ours."""

    def __getattr__(self, name: str) -> Any:
        return getattr(sys, name)

    @staticmethod
    def audit(event: str, *args: Any) -> None:
        if event != "subprocess.Popen":
            sys.audit(event, *args)


class _SubprocessGlobals(dict):  # type: ignore[type-arg]
    """subprocess's module globals, live (tests patch its flags), but for ``sys``."""

    def __missing__(self, name: str) -> Any:
        return vars(subprocess)[name]


def _unaudited_copy(function: Callable[..., None]) -> Callable[..., None] | None:
    code = getattr(function, "__code__", None)
    if code is None or code.co_freevars:
        return None
    unaudited = types.FunctionType(
        code,
        _SubprocessGlobals(sys=_SysWithoutPopenAudit()),
        function.__name__,
        function.__defaults__,
    )
    unaudited.__kwdefaults__ = function.__kwdefaults__
    return unaudited


#: The stdlib's own _execute_child, minus its "subprocess.Popen" audit event.
spawn_unaudited: Callable[..., None] | None = _unaudited_copy(STDLIB_EXECUTE_CHILD)


def reap_failed_start(popen: subprocess.Popen[Any]) -> None:
    """Collect a child that never ran its target, so nothing half-started remains."""
    try:
        popen.wait(timeout=30)
    except Exception:
        popen.returncode = sys.maxsize
