"""Reading Linux's /proc: a process's state, parent and start time, and marker scans.

Shared by ``leashed run``, ``leashed doctor``, the tests, the benchmarks and the stress
harness, so /proc/PID/stat is parsed in one place.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from ._plan import SIGKILL

T = TypeVar("T")


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat that leashed uses."""

    state: str  # R, S, D, T, t, Z, X, ...
    ppid: int
    pgid: int
    start_time: int  # clock ticks after boot: with the pid, names one process
    cpu_ticks: int = 0  # user + system time, in clock ticks

    @property
    def exited(self) -> bool:
        """A zombie (or dead) process: it has exited, only its status is left."""
        return self.state in ("Z", "X")


def read_stat(pid: int) -> ProcStat | None:
    """The stat of ``pid``, or None once it is gone (or /proc is not there)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = raw.rpartition(b")")[2].split()
    if len(fields) < 20:
        return None
    cpu = int(fields[11]) + int(fields[12])  # utime + stime
    return ProcStat(fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[19]), cpu)


def is_running(pid: int) -> bool:
    """True while ``pid`` names a process that has not exited (a zombie has)."""
    stat = read_stat(pid)
    return stat is not None and not stat.exited


def all_pids() -> Iterator[int]:
    """Every pid in /proc, in no particular order."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def environ_has(pid: int, needle: bytes) -> bool:
    """True if ``needle`` (``b"VAR=value"``) is one entry of the process's environment."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return needle in f.read().split(b"\0")
    except OSError:
        return False


def pids_with_env(
    var: str, value: str, *, exclude: set[int] | frozenset[int] = frozenset()
) -> list[int]:
    """Live (not exited) processes whose environment holds ``var=value``; not this one."""
    needle = f"{var}={value}".encode()
    skip = {os.getpid(), *exclude}
    return [
        pid
        for pid in all_pids()
        if pid not in skip and environ_has(pid, needle) and is_running(pid)
    ]


def kill_if_marked(pid: int, needle: bytes, sig: int = SIGKILL) -> bool:
    """Send ``sig`` to ``pid`` only if it still carries ``needle`` in its environment.

    With a pidfd the process is pinned before the marker is read, so the signal reaches
    the process that was checked; without one, the check just before the kill is all.
    """
    try:
        pidfd: int | None = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    except ProcessLookupError:
        return False
    except OSError:
        pidfd = None
    try:
        if not environ_has(pid, needle):
            return False
        if pidfd is not None and sys.platform == "linux":
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


def kill_marked(var: str, value: str, sig: int = SIGKILL, rounds: int = 20) -> list[int]:
    """Send ``sig``, by pid, to every process still carrying ``var=value``."""
    killed: list[int] = []
    needle = f"{var}={value}".encode()
    for _ in range(rounds):
        pids = pids_with_env(var, value)
        if not pids:
            break
        killed += [pid for pid in pids if kill_if_marked(pid, needle, sig)]
        time.sleep(0.05)
    return killed


def command_name(pid: int) -> str:
    """The process's command name (/proc/PID/comm), or "" once it is gone."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def poll_until(condition: Callable[[], T], timeout: float, interval: float = 0.01) -> T:
    """Call ``condition`` until it returns something true or ``timeout`` seconds pass;
    return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
