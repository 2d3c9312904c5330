"""Real-process helpers for the test suite: markers, survivors, clean-up by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

#: Every process the suite starts inherits this variable; the session fixture counts them.
SUITE_VAR = "LEASHED_TEST_SUITE"
#: Per-test marker, for counting the survivors of one scenario.
CASE_VAR = "LEASHED_TEST_CASE"
#: SIGKILL's number; Windows' signal module has no SIGKILL (this module is imported there).
SIGKILL = getattr(signal, "SIGKILL", 9)


def new_marker() -> str:
    return uuid.uuid4().hex


def _environ_has(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def pids_with(var: str, value: str, *, exclude: Iterable[int] = ()) -> list[int]:
    """Live (non-zombie) processes whose environment holds var=value."""
    needle = f"{var}={value}".encode()
    skip = {os.getpid(), *exclude}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in skip:
            continue
        if _environ_has(pid, needle) and not _is_zombie(pid):
            found.append(pid)
    return found


def marked(marker: str) -> list[int]:
    return pids_with(CASE_VAR, marker)


def wait_until_gone(marker: str, timeout: float = 1.0) -> list[int]:
    """Poll until no process carries ``marker``; return the survivors at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        left = marked(marker)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.01)


def wait_for_count(marker: str, count: int, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        found = marked(marker)
        if len(found) >= count or time.monotonic() >= deadline:
            return found
        time.sleep(0.01)


def kill_marked(var: str, value: str) -> list[int]:
    """SIGKILL, by pid, every process still carrying var=value (re-checked before the kill)."""
    killed = []
    needle = f"{var}={value}".encode()
    for _round in range(20):
        pids = pids_with(var, value)
        if not pids:
            break
        for pid in pids:
            if _environ_has(pid, needle):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
        time.sleep(0.05)
    return killed


def alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}") and not _is_zombie(pid)


class Parent:
    """A real Python parent process running ``code``; children inherit the case marker."""

    def __init__(self, code: str, marker: str, *, env: dict[str, str] | None = None) -> None:
        self.marker = marker
        full_env = dict(os.environ if env is None else env)
        full_env[CASE_VAR] = marker
        src = Path(__file__).resolve().parent
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(src), full_env.get("PYTHONPATH", "")) if p
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def read_line(self, timeout: float = 20.0) -> str:
        """Next line of the parent's stdout (its "ready" report)."""
        import selectors

        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                self.kill()
                raise AssertionError(f"parent printed nothing in {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"parent exited early ({self.proc.wait()}): {err}")
        return line.strip()

    def kill(self, sig: int = SIGKILL) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        self.proc.wait()

    def finish(self) -> None:
        """End the parent and every straggler of its marker, by pid."""
        self.kill()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        kill_marked(CASE_VAR, self.marker)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def descendants(root: int) -> dict[int, int]:
    """{pid: start time} of every live descendant of ``root`` (a snapshot of the tree)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if fields[0] not in ("Z", "X"):
                parents[int(entry)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    snapshot = {}
    for pid in found:
        started = start_time(pid)
        if started is not None:
            snapshot[pid] = started
    return snapshot


def still_running(snapshot: dict[int, int]) -> list[int]:
    """The processes of a snapshot that are still the same live processes."""
    return [pid for pid, started in snapshot.items() if start_time(pid) == started and alive(pid)]


def wait_snapshot_gone(snapshot: dict[int, int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = still_running(snapshot)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.01)


def kill_snapshot(snapshot: dict[int, int]) -> None:
    """SIGKILL the still-identical processes of a snapshot, by pid."""
    for pid in still_running(snapshot):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def named(pids: Iterable[int], name: str) -> list[int]:
    """The pids among ``pids`` whose command is ``name``."""
    out = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                out.append(pid)
        except OSError:
            pass
    return out
