"""watch_parent's waiter on Linux: a pidfd on the parent (getppid() polling without one)."""

from __future__ import annotations

import errno
import os
import select
from collections.abc import Callable

__all__ = ["open_parent_wait"]


def open_parent_handle() -> tuple[int, int] | None:
    """(parent pid, pidfd) for this process's parent, or None without pidfd_open.

    The pidfd names the process itself, so a reused pid can never be mistaken for it.
    Raises ProcessLookupError if the parent is already gone.
    """
    if not hasattr(os, "pidfd_open"):
        return None
    parent = os.getppid()
    try:
        pidfd = os.pidfd_open(parent)
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EPERM):  # EPERM: seccomp; no pidfd here
            return None
        raise
    if os.getppid() != parent:  # it died and we were re-parented while opening
        os.close(pidfd)
        raise ProcessLookupError(f"parent process {parent} has already exited")
    return parent, pidfd


def open_parent_wait(stop_fd: int) -> tuple[int, Callable[[], bool], str]:
    """(parent pid, wait, method): ``wait()`` blocks until the parent exits (True) or
    ``stop_fd`` is readable (False)."""
    handle = open_parent_handle()
    if handle is None:
        return _polling_wait(stop_fd)
    parent, pidfd = handle

    def wait() -> bool:
        try:
            readable, _, _ = select.select([pidfd, stop_fd], [], [])
            return pidfd in readable
        finally:
            os.close(pidfd)

    return parent, wait, "pidfd"


def _polling_wait(stop_fd: int) -> tuple[int, Callable[[], bool], str]:
    """Kernels without pidfd: notice re-parenting within half a second."""
    parent = os.getppid()

    def wait() -> bool:
        while os.getppid() == parent:
            readable, _, _ = select.select([stop_fd], [], [], 0.5)
            if readable:
                return False
        return True

    return parent, wait, "getppid polling (no pidfd_open on this kernel)"
