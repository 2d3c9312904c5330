"""leashed.watch_parent: end this process when the process that started it dies."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable

from . import _windows
from ._linux import open_parent_handle, wait_for_exit
from ._platform import IS_LINUX, IS_WINDOWS

#: Exit status of a process ended by watch_parent's default action.
EXIT_PARENT_DIED = 1


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


def watch_parent(on_death: Callable[[], object] | None = None) -> ParentWatch:
    """Watch the parent process (not thread) of this process and act when it dies.

    For a program started by a parent it does not control (Node, Rust, a shell). By
    default the process ends at once with ``os._exit(1)`` so nothing keeps running after
    its parent; give ``on_death`` for a graceful exit instead (it runs on the watcher
    thread). Linux uses a pidfd, macOS/BSD kqueue, Windows a process handle: each names
    the parent process itself, so a reused pid is never mistaken for it. Raises
    ProcessLookupError if the parent is already gone.
    """
    action: Callable[[], object] = on_death if on_death is not None else _default_on_death
    stop_read, stop_write = os.pipe()
    if IS_WINDOWS:
        parent, waiter, mechanism = _windows.open_parent_wait(stop_read)
    elif IS_LINUX:
        parent, waiter, mechanism = _linux_waiter(stop_read)
    else:
        parent, waiter, mechanism = _kqueue_waiter(stop_read)

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


def _linux_waiter(stop_fd: int) -> tuple[int, Callable[[], bool], str]:
    handle = open_parent_handle()
    if handle is None:
        return _polling_waiter(stop_fd)
    parent, pidfd = handle

    def wait() -> bool:
        try:
            return wait_for_exit(pidfd, stop_fd)
        finally:
            os.close(pidfd)

    return parent, wait, "pidfd"


def _kqueue_waiter(stop_fd: int) -> tuple[int, Callable[[], bool], str]:
    parent = os.getppid()
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
    if os.getppid() != parent:
        kq.close()
        raise ProcessLookupError(f"parent process {parent} has already exited")

    def wait() -> bool:
        try:
            events = kq.control(None, 1)
            return bool(events) and events[0].ident == parent
        finally:
            kq.close()

    return parent, wait, "kqueue"


def _polling_waiter(stop_fd: int) -> tuple[int, Callable[[], bool], str]:
    """Kernels without pidfd: notice re-parenting within half a second."""
    parent = os.getppid()

    def wait() -> bool:
        while os.getppid() == parent:
            readable, _, _ = select.select([stop_fd], [], [], 0.5)
            if readable:
                return False
        return True

    return parent, wait, "getppid polling (no pidfd_open on this kernel)"
