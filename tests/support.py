"""Real-process helpers for the test suite: markers, survivors, clean-up by pid."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

from leashed import _procfs
from leashed._plan import SIGKILL as _SIGKILL
from leashed._procfs import poll_until

#: SIGKILL's number; Windows' signal module has no such name (the suite collects there).
SIGKILL = _SIGKILL

#: Every process the suite starts inherits this variable; the session fixture counts them.
SUITE_VAR = "LEASHED_TEST_SUITE"
#: Per-test marker, for counting the survivors of one scenario.
CASE_VAR = "LEASHED_TEST_CASE"


def new_marker() -> str:
    return uuid.uuid4().hex


def pids_with(var: str, value: str, *, exclude: Iterable[int] = ()) -> list[int]:
    """Live (non-zombie) processes whose environment holds var=value."""
    return _procfs.pids_with_env(var, value, exclude=set(exclude))


def marked(marker: str) -> list[int]:
    return pids_with(CASE_VAR, marker)


def wait_until_gone(marker: str, timeout: float = 1.0) -> list[int]:
    """Poll until no process carries ``marker``; return the survivors at the deadline."""
    poll_until(lambda: not marked(marker), timeout)
    return marked(marker)


def wait_for_count(marker: str, count: int, timeout: float = 10.0) -> list[int]:
    return poll_until(
        lambda: found if len(found := marked(marker)) >= count else [], timeout
    ) or marked(marker)


def wait_for_named(marker: str, name: str, count: int, timeout: float = 10.0) -> list[int]:
    """Poll until ``count`` processes called ``name`` carry ``marker``; return them."""
    poll_until(lambda: len(named(marked(marker), name)) >= count, timeout)
    return named(marked(marker), name)


def wait_pid_gone(pid: int, timeout: float) -> bool:
    """True once ``pid`` has exited (zombies count as exited), False at the deadline."""
    return bool(poll_until(lambda: not alive(pid), timeout))


def kill_marked(var: str, value: str) -> list[int]:
    """SIGKILL, by pid, every process still carrying var=value (re-checked before the kill)."""
    return _procfs.kill_marked(var, value)


def alive(pid: int) -> bool:
    return _procfs.is_running(pid)


def marked_env(
    marker: str, *paths: str | Path, base: Mapping[str, str] | None = None, **extra: str
) -> dict[str, str]:
    """The environment of a process a test starts: ``base`` (default os.environ) with the
    case marker, ``paths`` first on PYTHONPATH, and ``extra``."""
    env = dict(os.environ if base is None else base)
    env[CASE_VAR] = marker
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (*map(str, paths), env.get("PYTHONPATH", "")) if p
        )
    env.update(extra)
    return env


#: The directory of leashed's package sources (for PYTHONPATH of a child Python).
SRC = Path(__file__).resolve().parent.parent / "src"


class Parent:
    """A real Python parent process running ``code``; children inherit the case marker."""

    def __init__(self, code: str, marker: str, *, env: dict[str, str] | None = None) -> None:
        self.marker = marker
        full_env = marked_env(marker, Path(__file__).resolve().parent, base=env)
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

    def killed_survivors(self, timeout: float) -> list[int]:
        """SIGKILL this parent; the processes of its marker still alive after ``timeout``."""
        self.kill()
        return wait_until_gone(self.marker, timeout)

    def finish(self) -> None:
        """End the parent and every straggler of its marker, by pid."""
        self.kill()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        kill_marked(CASE_VAR, self.marker)

    def __enter__(self) -> Parent:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.finish()


def proc_state(pid: int) -> str:
    """The process's state letter (R, S, T, Z, ...), or "gone"."""
    stat = _procfs.read_stat(pid)
    return "gone" if stat is None else stat.state


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), or None."""
    stat = _procfs.read_stat(pid)
    return None if stat is None else stat.start_time


def descendants(root: int) -> dict[int, int]:
    """{pid: start time} of every live descendant of ``root`` (a snapshot of the tree)."""
    parents: dict[int, int] = {}
    for pid in _procfs.all_pids():
        stat = _procfs.read_stat(pid)
        if stat is not None and not stat.exited:
            parents[pid] = stat.ppid
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
    poll_until(lambda: not still_running(snapshot), timeout)
    return still_running(snapshot)


def kill_snapshot(snapshot: dict[int, int]) -> None:
    """SIGKILL the still-identical processes of a snapshot, by pid."""
    for pid in still_running(snapshot):
        try:
            os.kill(pid, SIGKILL)
        except ProcessLookupError:
            pass


def named(pids: Iterable[int], name: str) -> list[int]:
    """The pids among ``pids`` whose command is ``name``."""
    return [pid for pid in pids if _procfs.command_name(pid) == name]
