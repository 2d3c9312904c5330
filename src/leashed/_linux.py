"""Linux without the helper: the preexec_fn fallback; and whether the kernel has pidfds."""

from __future__ import annotations

import ctypes
import functools
import os
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
    # The process's own symbols (libc's among them), not ctypes.util.find_library: that
    # runs ldconfig through subprocess.Popen, which may be leashed.Popen itself.
    libc = ctypes.CDLL(None, use_errno=True)
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


__all__ = [
    "arm_death_signal",
    "fallback_preexec_fn",
    "has_pidfd",
]
