"""The in-process spawn (Linux): the stdlib's own ``_execute_child`` with its fork_exec
replaced by ``leashed._inproc.fork_exec``, which arms the leash in the vfork child and
execs the user's program in place (no helper in the argv, so the stdlib's own audit event
is the right one).

Used for the direct mechanism when the extension is built, ``LEASHED_HELPER`` (the
development override) is not in force, the call has no ``preexec_fn`` (Python code in
the child needs the stdlib's fork), and subprocess's fork_exec is the stdlib's own (a
patched one is honoured on the helper path). Otherwise the helper path runs.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from . import _helper, _seam

_inproc: ModuleType | None
try:
    if sys.platform != "linux":
        raise ImportError("the in-process spawn is Linux's")
    from . import _inproc  # type: ignore[attr-defined, no-redef]
except ImportError:
    _inproc = None

#: What ``capabilities()`` and the doctor call the two ways of the direct mechanism.
IN_PROCESS = "in-process"
HELPER = "helper"

try:
    import _posixsubprocess

    _STDLIB_FORK_EXEC: Any = getattr(_posixsubprocess, "fork_exec", None)
except ImportError:  # Windows
    _STDLIB_FORK_EXEC = None


def built() -> bool:
    """Whether the extension is importable here."""
    return _inproc is not None


def spawner_threads() -> int:
    """How many native spawner threads the extension runs now (0: none yet, or no
    extension): they fork the children of threads other than the main one."""
    return int(_inproc.spawner_count()) if _inproc is not None else 0


def direct_path() -> str:
    """Which way the direct mechanism spawns: IN_PROCESS, or HELPER (the fallback)."""
    if _inproc is None or _helper.override_in_force():
        return HELPER
    return IN_PROCESS


def _stdlib_fork_exec_in_use() -> bool:
    current = getattr(subprocess, "_fork_exec", None)
    if current is None:  # 3.10 calls _posixsubprocess.fork_exec through the module
        current = getattr(getattr(subprocess, "_posixsubprocess", None), "fork_exec", None)
    return current is _STDLIB_FORK_EXEC


def usable(call: dict[str, Any]) -> bool:
    """Whether this call of the direct mechanism takes the in-process spawn."""
    return (
        _inproc is not None
        and call["preexec_fn"] is None
        and not _helper.override_in_force()
        and _stdlib_fork_exec_in_use()
    )


@functools.lru_cache(maxsize=64)
def _replacing(death_signal: int, cgroup_procs_fd: int) -> Callable[[Any], Any]:
    """The seam's wrapper that puts the extension's fork_exec in the stdlib's place (one
    object per leash, so the seam's built function is reused)."""
    assert _inproc is not None
    fork_exec = functools.partial(_inproc.fork_exec, death_signal, cgroup_procs_fd)
    return lambda _stdlib_fork_exec: fork_exec


def execute_child(
    popen: Any, call: dict[str, Any], death_signal: int, cgroup_procs_fd: int = -1
) -> None:
    """Spawn ``popen``'s child in process: the stdlib's _execute_child, leashed fork_exec.

    ``death_signal`` 0 arms no PR_SET_PDEATHSIG; ``cgroup_procs_fd`` (-1: none) is a
    close-on-exec fd on a cgroup v2 ``cgroup.procs`` the child joins before exec.
    """
    spawn = _seam.spawn_unaudited
    assert spawn is not None and spawn.can_replace_fork_exec
    wrap = _replacing(death_signal, cgroup_procs_fd)
    spawn.function(audited=True, wrap_fork_exec=wrap)(popen, **call)


def _main_thread_is_this_one() -> None:
    """In the child of os.fork(): the forking thread is the process's only, long-lived one."""
    if _inproc is not None:
        _inproc.set_main_thread(threading.get_ident())


if _inproc is not None:
    _inproc.set_main_thread(threading.main_thread().ident)
    os.register_at_fork(after_in_child=_main_thread_is_this_one)
