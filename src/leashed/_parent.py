"""The process watch_parent() and ``leashed run`` tie to: this process's parent, checked
against LEASHED_PARENT, or a pid the caller names; never init or a reaper taken for a
parent that died. Shared by every platform's waiter and the CLI."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from . import _procfs
from ._system import IS_LINUX

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
