"""leashed.watch_parent: end this process when the process that started it dies."""

from __future__ import annotations

import os
import select
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from . import _procfs, _windows
from ._linux import open_parent_handle, wait_for_exit
from ._platform import IS_LINUX, IS_WINDOWS

#: Exit status of a process ended by watch_parent's default action.
EXIT_PARENT_DIED = 1

#: "PID" or "PID:START" (START: field 22 of /proc/PID/stat): the parent a child's
#: watch_parent() and ``leashed run`` expect. Set by a parent for its child (a shell:
#: ``export LEASHED_PARENT=$$``); see parent_env().
PARENT_ENV = "LEASHED_PARENT"


@dataclass(frozen=True)
class Expected:
    """The process to watch: its pid, and what pins its identity."""

    pid: int
    start_time: int | None  # None: not known
    is_parent: bool  # our parent when resolved: our re-parenting means its death
    ancestor: bool  # started before us (a pin from the environment names an ancestor)

    def still_there(self) -> bool:
        """Whether ``pid`` still names the process meant, alive."""
        if self.is_parent and os.getppid() != self.pid:
            return False
        return _is_running_as(self.pid, self.start_time, self.ancestor)


def _is_running_as(pid: int, start_time: int | None, ancestor: bool) -> bool:
    stat = _procfs.read_stat(pid)
    if stat is None and not IS_LINUX:  # no /proc: the pid is all there is
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    if stat is None or stat.exited:
        return False
    if start_time is not None:
        return stat.start_time == start_time
    own = _procfs.read_stat(os.getpid())
    # An ancestor started before us: a process of that pid that started later reused it.
    return not ancestor or own is None or stat.start_time <= own.start_time


def parent_env() -> dict[str, str]:
    """``{"LEASHED_PARENT": "PID:START"}`` naming this process: add it to a child's
    environment so that its watch_parent() (or ``leashed run``) knows its parent exactly."""
    stat = _procfs.read_stat(os.getpid())
    pid = str(os.getpid())
    return {PARENT_ENV: pid if stat is None else f"{pid}:{stat.start_time}"}


def env_pin() -> tuple[int, int | None] | None:
    """LEASHED_PARENT as (pid, start time or None); None if unset, malformed or not to be
    read (``python -I``/``-E``, a setuid process: what the stdlib would not trust either)."""
    if sys.flags.isolated or sys.flags.ignore_environment:
        return None
    if sys.platform != "win32" and (os.getuid() != os.geteuid() or os.getgid() != os.getegid()):
        return None
    pid_text, _, start_text = os.environ.get(PARENT_ENV, "").partition(":")
    if (
        not _is_number(pid_text)
        or int(pid_text) == 0
        or not (_is_number(start_text) or not start_text)
    ):
        return None
    return int(pid_text), int(start_text) if start_text else None


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def expected_parent(pid: int | None = None, start_time: int | None = None) -> Expected:
    """What watch_parent() watches: ``pid`` if given, else this process's parent, checked
    against LEASHED_PARENT. Never init or a reaper taken for the parent that died:
    ProcessLookupError then. The environment only narrows: the result is always the
    parent, or the ``pid`` given."""
    for name, value in (("pid", pid), ("start_time", start_time)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if pid is not None:
        if pid <= 0:
            raise ValueError(f"pid must be a positive process id, got {pid}")
        expected = Expected(pid, start_time, pid == os.getppid(), False)
        if not expected.still_there():
            raise ProcessLookupError(f"process {pid} has already exited")
        return expected
    if start_time is not None:
        raise ValueError("start_time is given without pid")
    parent = os.getppid()
    pin = env_pin()
    if pin is not None and not _pin_allows(parent, *pin):
        raise ProcessLookupError(
            f"parent process {pin[0]} ({PARENT_ENV}) has exited or is no longer an "
            f"ancestor of this process (now a child of {parent})"
        )
    if parent == 1 and (pin is None or pin[0] != 1):
        raise ProcessLookupError("parent process has already exited (adopted by init)")
    start = pin[1] if pin is not None and pin[0] == parent else None
    return Expected(parent, start, True, True)


def _pin_allows(parent: int, pin_pid: int, pin_start: int | None) -> bool:
    """The parent is the pinned process, or (the pin inherited from further up: a
    grandchild) a live descendant of the pinned process, which still runs."""
    if not _is_running_as(pin_pid, pin_start, ancestor=True):
        return False
    if parent == pin_pid:
        return True
    seen = parent
    for _ in range(64):  # ancestry through /proc; no /proc: the pid check above is all
        stat = _procfs.read_stat(seen)
        if stat is None:
            return not IS_LINUX
        if stat.ppid == pin_pid:
            return True
        if stat.ppid <= 1:
            return False
        seen = stat.ppid
    return False


class ParentWatch:
    """A running watch on this process's parent; ``stop()`` ends the watch, not the process."""

    def __init__(self, parent_pid: int, mechanism: str, thread: threading.Thread, stop_fd: int):
        self.parent_pid = parent_pid
        self.mechanism = mechanism
        self._thread = thread
        self._stop_fd = stop_fd

    def stop(self) -> None:
        """Stop watching; the callback will not run."""
        if self._stop_fd >= 0:
            os.write(self._stop_fd, b"x")
            self._thread.join()
            os.close(self._stop_fd)
            self._stop_fd = -1

    def __repr__(self) -> str:
        return f"<ParentWatch parent_pid={self.parent_pid} mechanism={self.mechanism}>"


def _default_on_death() -> None:
    os._exit(EXIT_PARENT_DIED)


def watch_parent(
    on_death: Callable[[], object] | None = None,
    *,
    pid: int | None = None,
    start_time: int | None = None,
) -> ParentWatch:
    """Watch the parent process (not thread) of this process and act when it dies.

    For a program started by a parent it does not control (Node, Rust, a shell). By
    default the process ends at once with ``os._exit(1)`` so nothing keeps running after
    its parent; give ``on_death`` for a graceful exit instead (it runs on the watcher
    thread). Linux uses a pidfd, macOS/BSD kqueue, Windows a process handle: each names
    the parent process itself, so a reused pid is never mistaken for it. Raises
    ProcessLookupError if the parent is already gone: a parent of pid 1 is taken as
    gone (init adopted us), and LEASHED_PARENT ("PID" or "PID:START", see parent_env)
    names the expected parent exactly, so a subreaper is not taken for it either.
    ``pid`` (and ``start_time``, field 22 of /proc/PID/stat) watches that process
    instead (POSIX only). Watching only: nothing is ever signalled.
    """
    action: Callable[[], object] = on_death if on_death is not None else _default_on_death
    if IS_WINDOWS:
        if pid is not None or start_time is not None:
            raise ValueError("watch_parent(pid=, start_time=) is not available on Windows")
        expected = None
    else:
        expected = expected_parent(pid, start_time)
    stop_read, stop_write = os.pipe()
    if expected is None:
        parent, waiter, mechanism = _windows.open_parent_wait(stop_read)
    elif IS_LINUX:
        parent, waiter, mechanism = _linux_waiter(stop_read, expected)
    else:
        parent, waiter, mechanism = _kqueue_waiter(stop_read, expected)

    def run() -> None:
        try:
            died = waiter()
        finally:
            os.close(stop_read)
        if died:
            action()

    thread = threading.Thread(target=run, name="leashed-watch-parent", daemon=True)
    thread.start()
    return ParentWatch(parent, mechanism, thread, stop_write)


def _linux_waiter(stop_fd: int, expected: Expected) -> tuple[int, Callable[[], bool], str]:
    handle = open_parent_handle(expected.pid, expected.still_there)
    if handle is None:
        return _polling_waiter(stop_fd, expected)
    parent, pidfd = handle

    def wait() -> bool:
        try:
            return wait_for_exit(pidfd, stop_fd)
        finally:
            os.close(pidfd)

    return parent, wait, "pidfd"


def _kqueue_waiter(stop_fd: int, expected: Expected) -> tuple[int, Callable[[], bool], str]:
    parent = expected.pid
    kq = select.kqueue()  # type: ignore[attr-defined,unused-ignore]
    try:
        kq.control(
            [
                select.kevent(  # type: ignore[attr-defined,unused-ignore]
                    parent,
                    filter=select.KQ_FILTER_PROC,  # type: ignore[attr-defined,unused-ignore]
                    flags=select.KQ_EV_ADD,  # type: ignore[attr-defined,unused-ignore]
                    fflags=select.KQ_NOTE_EXIT,  # type: ignore[attr-defined,unused-ignore]
                ),
                select.kevent(  # type: ignore[attr-defined,unused-ignore]
                    stop_fd,
                    filter=select.KQ_FILTER_READ,  # type: ignore[attr-defined,unused-ignore]
                    flags=select.KQ_EV_ADD,  # type: ignore[attr-defined,unused-ignore]
                ),
            ],
            0,
            0,
        )
    except OSError:
        kq.close()
        raise ProcessLookupError(f"parent process {parent} has already exited") from None
    if not expected.still_there():
        kq.close()
        raise ProcessLookupError(f"parent process {parent} has already exited")

    def wait() -> bool:
        try:
            events = kq.control(None, 1)
            return bool(events) and events[0].ident == parent
        finally:
            kq.close()

    return parent, wait, "kqueue"


def _polling_waiter(stop_fd: int, expected: Expected) -> tuple[int, Callable[[], bool], str]:
    """Kernels without pidfd: notice re-parenting (or the process's end) within half a
    second."""
    parent = expected.pid

    def wait() -> bool:
        while expected.still_there():
            readable, _, _ = select.select([stop_fd], [], [], 0.5)
            if readable:
                return False
        return True

    return parent, wait, "getppid polling (no pidfd_open on this kernel)"
