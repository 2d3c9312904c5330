"""The process-group tree strategy (macOS and the BSDs), run on Linux through `-P`.

Outside Linux the supervisor cannot be a subreaper nor tell a terminal's Ctrl+C from a
kill(), so the target runs in its own process group and the supervisor relays signals to
it. Only the kqueue event wait differs there; this runs the strategy's logic for real.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    CASE_VAR,
    alive,
    marked,
    named,
    wait_for_named,
    wait_until_gone,
)
from test_linux_tree import COUNTER

from leashed import _helper, _procfs

HELPER = _helper.helper_path()


@pytest.fixture()
def parent() -> Iterator[subprocess.Popen[bytes]]:
    """A stand-in parent, watched with -w: its SIGKILL is the parent's death."""
    proc = subprocess.Popen(
        ["sleep", "300"], env={k: v for k, v in os.environ.items() if k != CASE_VAR}
    )
    yield proc
    proc.kill()
    proc.wait()


def supervise(
    watched: int, argv: list[str], *options: str, **popen: object
) -> subprocess.Popen[bytes]:
    assert HELPER is not None
    cmd = [HELPER, "supervisor", "-P", *options, "-w", str(watched), "--", argv[0], *argv]
    return subprocess.Popen(cmd, **popen)  # type: ignore[call-overload,no-any-return]


def _sleeps(marker: str, count: int) -> list[int]:
    return wait_for_named(marker, "sleep", count)


def _pgid(pid: int) -> int:
    stat = _procfs.read_stat(pid)
    assert stat is not None
    return stat.pgid


def test_parent_death_ends_the_group_in_its_own_process_group(
    marker: str, parent: subprocess.Popen[bytes]
) -> None:
    sup = supervise(parent.pid, ["sh", "-c", "sleep 300 & sleep 300 & exec sleep 300"], "-t")
    sleeps = _sleeps(marker, 3)
    assert len(sleeps) == 3
    assert _pgid(sup.pid) == os.getpgid(0), "the supervisor stays in the caller's group"
    assert {_pgid(p) for p in sleeps} != {os.getpgid(0)}
    assert len({_pgid(p) for p in sleeps}) == 1, "the target's group holds the tree"
    parent.kill()
    assert sup.wait(timeout=5) == 1
    assert wait_until_gone(marker, 1.0) == []


def test_a_descendant_that_leaves_the_group_escapes(
    marker: str, parent: subprocess.Popen[bytes]
) -> None:
    """The documented limit of the strategy: setsid() leaves the group."""
    sup = supervise(parent.pid, ["sh", "-c", "setsid sleep 300 & exec sleep 300"], "-t")
    assert len(_sleeps(marker, 2)) == 2
    parent.kill()
    sup.wait(timeout=5)
    left = wait_until_gone(marker, 0.5)
    assert len(left) == 1 and _pgid(left[0]) == left[0], "only the setsid'd sleep is left"


@pytest.mark.parametrize(
    "script,code",
    [("exit 0", 0), ("exit 3", 3), ("exit 255", 255),
     ("kill -TERM $$", -15), ("kill -KILL $$", -9), ("kill -SEGV $$", -11)],
)  # fmt: skip
def test_exit_status_passes_through(
    script: str, code: int, parent: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    sup = supervise(parent.pid, ["sh", "-c", script], "-t", cwd=tmp_path)
    assert sup.wait(timeout=10) == code
    assert not list(tmp_path.glob("core*"))


def test_leftovers_end_when_the_target_exits(marker: str, parent: subprocess.Popen[bytes]) -> None:
    sup = supervise(parent.pid, ["sh", "-c", "sleep 300 & sleep 0.2; exit 7"], "-t")
    assert sup.wait(timeout=5) == 7
    assert wait_until_gone(marker, 1.0) == []


def test_signal_sent_to_supervisor_reaches_target_once(parent: subprocess.Popen[bytes]) -> None:
    sup = supervise(
        parent.pid, [sys.executable, "-c", COUNTER, "SIGUSR1", "1.0"], "-t", stdout=subprocess.PIPE
    )
    assert sup.stdout is not None
    assert sup.stdout.readline().strip() == b"ready"
    os.kill(sup.pid, signal.SIGUSR1)
    assert sup.stdout.readline().strip() == b"SIGUSR1"
    assert sup.wait(timeout=5) == 0
    sup.stdout.close()


def test_control_socket_kill_ends_the_group_before_answering(
    marker: str, parent: subprocess.Popen[bytes]
) -> None:
    ours, theirs = socket.socketpair()
    sup = supervise(
        parent.pid,
        ["sh", "-c", "sleep 300 & exec sleep 300"],
        "-t", "-c", str(theirs.fileno()),
        pass_fds=(theirs.fileno(),),
    )  # fmt: skip
    theirs.close()
    assert len(_sleeps(marker, 2)) == 2
    ours.sendall(struct.pack("=ii", 1, signal.SIGWINCH))  # relayed; harmless to sleep
    assert ours.recv(4) == struct.pack("=i", 0)
    ours.sendall(struct.pack("=ii", 1, signal.SIGKILL))
    assert ours.recv(4) == struct.pack("=i", 0)
    assert named(marked(marker), "sleep") == []
    assert sup.wait(timeout=5) == -signal.SIGKILL
    ours.close()


def test_grace_then_sigkill_for_a_member_ignoring_term(
    marker: str, parent: subprocess.Popen[bytes]
) -> None:
    sup = supervise(
        parent.pid, ["sh", "-c", "trap '' TERM; sleep 300"], "-t", "-s", "15", "-g", "1000"
    )
    assert len(_sleeps(marker, 1)) == 1
    parent.kill()
    started = time.monotonic()
    sup.wait(timeout=10)
    assert wait_until_gone(marker, 1.0) == []
    assert 0.9 <= time.monotonic() - started <= 2.5
    assert not alive(sup.pid)
