"""watch_parent's waiter on Linux: a pidfd on the parent (getppid() polling without one)."""

from __future__ import annotations

import errno
import os
import select
from collections.abc import Callable

from ._parent import Expected

__all__ = ["open_parent_wait"]


def open_parent_handle(expected: Expected) -> tuple[int, int] | None:
    """(pid, pidfd) for the expected parent, or None without pidfd_open.

    The pidfd names the process itself, so a reused pid can never be mistaken for it once
    ``expected.still_there()``, asked after the open, says the pid still named it (and,
    for our parent, that we were not re-parented). Raises ProcessLookupError if it is gone.
    """
    if not hasattr(os, "pidfd_open"):
        return None
    parent = expected.pid
    try:
        pidfd = os.pidfd_open(parent)
    except ProcessLookupError:
        raise ProcessLookupError(f"process {parent} has already exited") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EPERM):  # EPERM: seccomp; no pidfd here
            return None
        raise
    if not expected.still_there():  # it died (re-parented, or its pid reused) meanwhile
        os.close(pidfd)
        raise ProcessLookupError(f"process {parent} has already exited")
    return parent, pidfd


def open_parent_wait(stop_fd: int, expected: Expected) -> tuple[int, Callable[[], bool], str]:
    """(parent pid, wait, method): ``wait()`` blocks until the parent exits (True) or
    ``stop_fd`` is readable (False)."""
    handle = open_parent_handle(expected)
    if handle is None:
        return _polling_wait(stop_fd, expected)
    parent, pidfd = handle

    def wait() -> bool:
        try:
            readable, _, _ = select.select([pidfd, stop_fd], [], [])
            return pidfd in readable
        finally:
            os.close(pidfd)

    return parent, wait, "pidfd"


def _polling_wait(stop_fd: int, expected: Expected) -> tuple[int, Callable[[], bool], str]:
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
