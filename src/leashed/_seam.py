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
import operator
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


_SYS_WITHOUT_POPEN_AUDIT = _SysWithoutPopenAudit()
_NO_POSIX_SPAWN = {"_USE_POSIX_SPAWN": False}


def _fork_exec_name(code: types.CodeType) -> str | None:
    """The global through which this CPython's _execute_child calls fork_exec."""
    if "_fork_exec" in code.co_names:  # 3.11+: from _posixsubprocess import fork_exec
        return "_fork_exec"
    if "_posixsubprocess" in code.co_names:  # 3.10: _posixsubprocess.fork_exec(...)
        return "_posixsubprocess"
    return None


#: A wrapper of this CPython's fork_exec: given the one a call would use, the one to use.
WrapForkExec = Callable[[Callable[..., int]], Callable[..., int]]

_SUBPROCESS_GLOBALS: dict[str, Any] = vars(subprocess)


class _UnauditedExecuteChild:
    """The stdlib's own _execute_child code, run with subprocess's globals but for ``sys``
    (unaudited) and, where asked, for fork_exec.

    The function and its globals (a plain dict copied from subprocess's: the interpreter
    reads an exact dict at full speed) are built once per kind of call and reused while
    the subprocess globals the code reads are the same objects: a test that patches one
    of subprocess's flags (``_USE_VFORK``, ``_USE_POSIX_SPAWN``) gets a fresh copy at its
    next call. ``wrap_fork_exec``, if given, gets the fork_exec this call would use and
    returns the one to use instead (and the posix_spawn path, which forks elsewhere, is
    off). Wrappers are cache keys: pass the same object for the same kind of call.
    """

    def __init__(self, function: Callable[..., None], code: types.CodeType) -> None:
        self._code = code
        self._name = function.__name__
        self._defaults = function.__defaults__
        self._kwdefaults = function.__kwdefaults__
        self._fork_exec_name = _fork_exec_name(code)
        names = tuple(name for name in code.co_names if name in _SUBPROCESS_GLOBALS)
        self._read_globals = operator.itemgetter(*names, "__builtins__")
        self._built: dict[tuple[bool, Any], tuple[Any, Callable[..., None]]] = {}

    @property
    def can_replace_fork_exec(self) -> bool:
        return self._fork_exec_name is not None

    def function(
        self, *, audited: bool = False, wrap_fork_exec: WrapForkExec | None = None
    ) -> Callable[..., None]:
        """The stdlib's _execute_child for this kind of call, rebuilt only when one of
        the subprocess globals it reads has changed since it was built."""
        try:
            now = self._read_globals(_SUBPROCESS_GLOBALS)
        except KeyError:  # a global of subprocess was deleted: build it for this call only
            return self._build(audited, wrap_fork_exec)
        if self._fork_exec_name == "_posixsubprocess":  # 3.10: patched on the module
            now = (now, getattr(_SUBPROCESS_GLOBALS["_posixsubprocess"], "fork_exec", None))
        key = (audited, wrap_fork_exec)
        built = self._built.get(key)
        if built is not None and built[0] == now:
            return built[1]
        function = self._build(audited, wrap_fork_exec)
        if len(self._built) >= 64:
            self._built.clear()
        self._built[key] = (now, function)
        return function

    def _build(self, audited: bool, wrap_fork_exec: WrapForkExec | None) -> Callable[..., None]:
        namespace = dict(_SUBPROCESS_GLOBALS)
        if not audited:
            namespace["sys"] = _SYS_WITHOUT_POPEN_AUDIT
        if wrap_fork_exec is not None:
            name = self._fork_exec_name
            if name is None:
                raise RuntimeError("this CPython's _execute_child calls no fork_exec")
            namespace.update(_NO_POSIX_SPAWN)
            if name == "_fork_exec":
                namespace[name] = wrap_fork_exec(namespace[name])
            else:
                module = namespace[name]
                namespace[name] = types.SimpleNamespace(fork_exec=wrap_fork_exec(module.fork_exec))
        function = types.FunctionType(self._code, namespace, self._name, self._defaults)
        function.__kwdefaults__ = self._kwdefaults
        return function

    def __call__(
        self, *args: Any, wrap_fork_exec: WrapForkExec | None = None, **kwargs: Any
    ) -> None:
        self.function(wrap_fork_exec=wrap_fork_exec)(*args, **kwargs)


def _unaudited_copy(function: Callable[..., None]) -> _UnauditedExecuteChild | None:
    code = getattr(function, "__code__", None)
    if code is None or code.co_freevars:
        return None
    return _UnauditedExecuteChild(function, code)


#: The stdlib's own _execute_child, minus its "subprocess.Popen" audit event (or, through
#: ``function(audited=True, ...)``, with it: the in-process spawn execs the user's argv).
spawn_unaudited: _UnauditedExecuteChild | None = _unaudited_copy(STDLIB_EXECUTE_CHILD)


def reap_failed_start(popen: subprocess.Popen[Any]) -> None:
    """Collect a child that never ran its target, so nothing half-started remains."""
    try:
        popen.wait(timeout=30)
    except Exception:
        popen.returncode = sys.maxsize


class UnleashedPopen(subprocess.Popen[Any]):
    """subprocess.Popen with the stdlib's own ``_execute_child``, whatever install() put on
    the class: for leashed's own processes (the cgroup watcher's launcher), which must
    never go through a leash themselves."""

    _execute_child = STDLIB_EXECUTE_CHILD
