"""leashed.wrap: an argv that leashes the child of a spawner we do not control."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from . import _helper
from ._plan import LeashPlan
from ._platform import plan_for_wrap
from ._protocol import HelperCommand

__all__ = ["wrap"]


def wrap(
    argv: Sequence[str | bytes | os.PathLike[str] | os.PathLike[bytes]],
    *,
    tree: bool = False,
    grace: float | None = None,
    death_signal: int | None = None,
    mechanism: str | None = None,
    keep_leftovers: bool = False,
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

    - **direct** (``prctl(PR_SET_PDEATHSIG)`` + a check that the helper's
      parent is ``os.getpid()``): when ``wrap`` is called on the main thread, with
      no ``tree``/``grace``, outside a trio run. The spawned process *is* the target (same
      pid). Two conditions: the argv must be executed by a direct child of this process
      (a spawner that forks and execs it, as subprocess, asyncio, anyio and trio do — not
      through a shell), else the helper exits 1 at once; and the thread that forks must live
      as long as the child, because the kernel's parent-death signal follows the forking
      *thread*. So spawn on the thread that called ``wrap``.
    - **guardian** (``-w os.getpid()``): when ``wrap`` is called off
      the main thread, or inside a trio run (trio forks on a worker thread that exits when
      idle). A detached guardian watches this *process* through a pidfd, whatever thread
      spawned the child and however deep below this process the argv is executed. The
      spawned process is still the target (same pid).
    - **supervisor** (``-w os.getpid()``): with ``tree=True`` or
      ``grace``. The spawned process is the supervisor's front; it passes on signals sent
      to it and exits with the target's status. With ``tree=True`` every descendant ends
      (when the target exits, unless ``keep_leftovers=True``: then when this process
      dies). A SIGKILL of the spawned process (a spawner's ``kill()``) ends them too, as
      this process's death would. Its pidfd watch is on this process, so any thread may
      spawn it.

    ``mechanism=`` (``"direct"``, ``"guardian"``, ``"supervisor"``) forces one, as for
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
    plan = plan_for_wrap(
        tree=tree,
        grace=grace,
        death_signal=death_signal,
        mechanism=mechanism,
        keep_leftovers=keep_leftovers,
    )
    return _as_str(helper_argv(plan, target[0], target))


def helper_argv(plan: LeashPlan, program: Any, argv: Sequence[Any]) -> list[Any]:
    """The helper's argv that runs ``program`` with ``argv``, leashed to this process
    (direct: to this process as its parent; else watched by pidfd or kqueue)."""
    if plan.mechanism == "direct":
        command = HelperCommand(plan, parent_pid=os.getpid())
    else:
        command = HelperCommand(plan, watch_pid=os.getpid())
    helper = _helper.helper_path()
    assert helper is not None
    return command.argv(helper, program, list(argv))


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
