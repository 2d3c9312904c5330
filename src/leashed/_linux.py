"""Linux without the helper: the preexec_fn fallback, and the pidfd parent watch."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import select
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


@functools.cache
def has_pidfd() -> bool:
    """Whether this kernel has pidfd_open (Linux 5.3+) and we may use it (no seccomp ban)."""
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    return True


@functools.cache
def _prctl() -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def arm_death_signal(death_signal: int, parent_pid: int) -> None:
    """In a forked child: die by ``death_signal`` with the forking thread; exit if it is gone.

    The ppid recheck closes the race where the parent died between fork() and prctl().
    """
    if _prctl()(PR_SET_PDEATHSIG, death_signal, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if os.getppid() != parent_pid:
        os._exit(1)


def fallback_preexec_fn(
    user_preexec_fn: Callable[[], object] | None, death_signal: int
) -> Callable[[], None]:
    """A preexec_fn that arms PR_SET_PDEATHSIG and rechecks the parent (no helper).

    libc's prctl is loaded here, before the fork, so the child does no dlopen.
    """
    _prctl()
    parent_pid = os.getpid()

    def arm() -> None:
        arm_death_signal(death_signal, parent_pid)
        if user_preexec_fn is not None:
            user_preexec_fn()

    return arm


def open_parent_handle(
    pid: int | None = None, still_there: Callable[[], bool] | None = None
) -> tuple[int, int] | None:
    """(pid, pidfd) for ``pid`` (default: this process's parent), or None without pidfd_open.

    The pidfd names the process itself, so a reused pid can never be mistaken for it once
    ``still_there()`` (default: we were not re-parented), asked after the open, says the
    pid still named the process meant. Raises ProcessLookupError if it is already gone.
    """
    if not hasattr(os, "pidfd_open"):
        return None
    parent = os.getppid() if pid is None else pid
    if still_there is None:
        still_there = lambda: os.getppid() == parent  # noqa: E731
    try:
        pidfd = os.pidfd_open(parent)
    except ProcessLookupError:
        raise ProcessLookupError(f"process {parent} has already exited") from None
    except OSError as exc:
        if exc.errno in (38, 1):  # ENOSYS, EPERM (seccomp): no pidfd here
            return None
        raise
    if not still_there():  # it died (and we were re-parented, or its pid reused) meanwhile
        os.close(pidfd)
        raise ProcessLookupError(f"process {parent} has already exited")
    return parent, pidfd


def wait_for_exit(pidfd: int, stop_fd: int) -> bool:
    """Block until the process behind ``pidfd`` exits (True) or ``stop_fd`` is readable."""
    readable, _, _ = select.select([pidfd, stop_fd], [], [])
    return pidfd in readable


__all__ = [
    "arm_death_signal",
    "fallback_preexec_fn",
    "has_pidfd",
    "open_parent_handle",
    "wait_for_exit",
]
