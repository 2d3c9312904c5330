"""leashed.wrap: an argv that leashes the child of a spawner we do not control."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from . import _helper
from ._capabilities import _linux_kernel_has_pidfd
from ._options import IS_LINUX, IS_WINDOWS, LeashPlan

__all__ = ["wrap"]


def wrap(
    argv: Sequence[str | bytes | os.PathLike[str] | os.PathLike[bytes]],
    *,
    tree: bool = False,
    grace: float | None = None,
    death_signal: int | None = None,
    mechanism: str | None = None,
) -> list[str]:
    """Return an argv that runs ``argv`` leashed to *this* process, for any spawner.

    For spawners that take an argv but are not ``leashed.Popen``: ``anyio.open_process``,
    ``trio.run_process``, ``asyncio.create_subprocess_exec``, a command line handed to
    another tool. The returned list starts with the path of ``leashed-helper``; the target
    runs with ``argv[0]`` as its program (searched in the ``PATH`` of the environment the
    spawner gives it) and as its own ``argv[0]``::

        await trio.run_process(leashed.wrap(["my-server", "--port", "0"]))
        proc = await anyio.open_process(leashed.wrap(["sleep", "300"], tree=True))

    Which mechanism is used (Linux):

    - **direct** (``exec`` helper mode, ``prctl(PR_SET_PDEATHSIG)`` + a check that the
      helper's parent is ``os.getpid()``): when ``wrap`` is called on the main thread, with
      no ``tree``/``grace``, outside a trio run. The spawned process *is* the target (same
      pid). Two conditions: the argv must be executed by a direct child of this process
      (a spawner that forks and execs it, as subprocess, asyncio, anyio and trio do — not
      through a shell), else the helper exits 1 at once; and the thread that forks must live
      as long as the child, because the kernel's parent-death signal follows the forking
      *thread*. So spawn on the thread that called ``wrap``.
    - **guardian** (``guard`` helper mode, ``-w os.getpid()``): when ``wrap`` is called off
      the main thread, or inside a trio run (trio forks on a worker thread that exits when
      idle). A detached guardian watches this *process* through a pidfd, whatever thread
      spawned the child and however deep below this process the argv is executed. The
      spawned process is still the target (same pid).
    - **supervisor** (``supervise`` helper mode, ``-w os.getpid()``): with ``tree=True`` or
      ``grace``. The spawned process is the supervisor; it passes on signals sent to it
      and exits with the target's status. With ``tree=True`` it ends every descendant.
      Its pidfd watch is on this process, so any thread may spawn it.

    ``mechanism=`` (``"pdeathsig"``, ``"guardian"``, ``"supervisor"``) forces one, as for
    ``leashed.Popen``. On macOS and the BSDs the default is the guardian (kqueue).

    There is no report pipe: if the target cannot be executed (not found, not executable),
    the spawner sees the process exit with status 127 (126 if the leash could not be
    armed) instead of an exception — check the program exists first if that matters
    (``shutil.which``). Exit status 1 with no output means this process was already gone
    (or, in direct mode, the argv was not executed by a direct child of this process).

    Raises TypeError/ValueError naming the bad argument, as ``leashed.Popen`` does, and
    RuntimeError when ``leashed-helper`` is not installed or this platform cannot leash a
    foreign spawner (Windows: use ``leashed.Popen``, whose job object needs the handle).
    """
    target = _checked_argv(argv)
    plan = _plan(tree=tree, grace=grace, death_signal=death_signal, mechanism=mechanism)
    if plan.mechanism == "pdeathsig":
        return _as_str(_helper.helper_argv(plan, target[0], target, parent_pid=os.getpid()))
    return _as_str(_helper.helper_argv(plan, target[0], target, watch_pid=os.getpid()))


def direct_mode_is_safe() -> bool:
    """True when a child spawned from this thread, right now, may rely on PDEATHSIG."""
    if threading.current_thread() is not threading.main_thread():
        return False
    return not _in_trio()


def _in_trio() -> bool:
    """Inside trio.run (also anyio on trio): trio forks on short-lived worker threads."""
    sniffio = sys.modules.get("sniffio")
    if sniffio is None:
        return False
    try:
        return bool(sniffio.current_async_library() == "trio")
    except Exception:
        return False


def _plan(*, tree: Any, grace: Any, death_signal: Any, mechanism: Any) -> LeashPlan:
    from ._popen import make_plan

    if IS_WINDOWS:
        raise RuntimeError(
            "leashed.wrap is not available on Windows: the kill-on-close job object needs "
            "the child's process handle; use leashed.Popen or leashed.asyncio"
        )
    plan = make_plan(tree=tree, grace=grace, death_signal=death_signal, mechanism=mechanism)
    if _helper.helper_path() is None:
        raise RuntimeError(
            f"leashed.wrap needs leashed-helper, which is not installed (looked in the "
            f"leashed package and ${_helper.HELPER_ENV}); reinstall leashed"
        )
    if plan.mechanism == "pdeathsig" and mechanism is None and not direct_mode_is_safe():
        plan = plan.with_mechanism("guardian")
    if IS_LINUX and plan.mechanism != "pdeathsig" and not _linux_kernel_has_pidfd():
        raise RuntimeError(
            f"leashed.wrap with the {plan.mechanism} watches this process with a pidfd, and "
            "this kernel has no pidfd_open (Linux 5.3+); call wrap() on the main thread "
            "without tree/grace, or use leashed.Popen"
        )
    return plan


def _checked_argv(argv: object) -> list[str]:
    """argv as a list of str, or TypeError/ValueError naming ``argv``."""
    if isinstance(argv, (str, bytes, os.PathLike)):
        raise TypeError(
            f"argv must be a sequence of program arguments (a list), not a single "
            f"{type(argv).__name__}; use shlex.split() for a command string"
        )
    if not isinstance(argv, Sequence):
        raise TypeError(f"argv must be a sequence of strings, not {type(argv).__name__}")
    if not argv:
        raise ValueError("argv must not be empty: argv[0] names the program")
    out: list[str] = []
    for index, item in enumerate(argv):
        if not isinstance(item, (str, bytes, os.PathLike)):
            raise TypeError(
                f"argv[{index}] must be str, bytes or os.PathLike, not {type(item).__name__}"
            )
        text = os.fsdecode(os.fspath(item))
        if "\0" in text:
            raise ValueError(f"argv[{index}] contains an embedded null byte")
        out.append(text)
    if not out[0]:
        raise ValueError("argv[0] must not be empty: it names the program")
    return out


def _as_str(cmd: list[Any]) -> list[str]:
    return [os.fsdecode(os.fspath(item)) for item in cmd]
