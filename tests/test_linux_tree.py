"""Tree mode: every descendant ends with the parent; status and signals pass through."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest
from support import (
    Parent,
    alive,
    marked,
    named,
    new_marker,
    poll_until,
    wait_for_named,
    wait_until_gone,
)

import leashed

# A tree with background grandchildren, a setsid'd grandchild, a double-forked daemon
# (setsid in a subshell whose parent exits) and a grandchild that ignores SIGTERM.
TREE = textwrap.dedent(
    """
    sleep 300 &
    setsid sleep 300 &
    (setsid sh -c 'sleep 300 & exit 0' &)
    sh -c 'trap "" TERM; sleep 300; sleep 300' &
    sleep 300
    wait
    """
)
TREE_SLEEPS = 5


def _wait_sleeps(marker: str, count: int, timeout: float = 10.0) -> list[int]:
    return wait_for_named(marker, "sleep", count, timeout)


PARENT = """
import sys, threading, time, leashed
options = {options}
def spawn():
    global proc
    proc = leashed.Popen(["sh", "-c", {tree!r}], **options)
if {from_thread}:
    t = threading.Thread(target=spawn); t.start(); t.join()
else:
    spawn()
print(proc.pid, flush=True)
time.sleep(300)
"""


@pytest.mark.parametrize("from_thread", [False, True], ids=["main-thread", "exited-thread"])
@pytest.mark.parametrize(
    "options,deadline",
    [
        ({"tree": True}, 1.0),
        ({"tree": True, "death_signal": int(signal.SIGTERM), "grace": 1.0}, 2.5),
    ],
    ids=["sigkill", "term-then-grace"],
)
def test_whole_tree_dies_with_parent(
    options: dict[str, object], deadline: float, from_thread: bool
) -> None:
    code = PARENT.format(options=repr(options), tree=TREE, from_thread=from_thread)
    parent = Parent(code, new_marker())
    try:
        parent.read_line()
        assert len(_wait_sleeps(parent.marker, TREE_SLEEPS)) == TREE_SLEEPS
        assert parent.killed_survivors(deadline) == []
    finally:
        parent.finish()


def test_grace_gives_term_ignoring_process_its_time() -> None:
    options = {"tree": True, "death_signal": int(signal.SIGTERM), "grace": 1.5}
    tree = "sh -c 'trap \"\" TERM; sleep 300' & sleep 300"
    code = PARENT.format(options=repr(options), tree=tree, from_thread=False)
    parent = Parent(code, new_marker())
    try:
        parent.read_line()
        assert len(_wait_sleeps(parent.marker, 2)) == 2
        parent.kill()
        killed_at = time.monotonic()
        time.sleep(0.6)
        stubborn = named(marked(parent.marker), "sleep")
        assert len(stubborn) == 1, "the TERM-obeying sleep ends at once, the other waits"
        assert wait_until_gone(parent.marker, 3.0) == []
        assert time.monotonic() - killed_at >= 1.4
    finally:
        parent.finish()


def _tree_sleeps(proc: leashed.Popen[bytes], marker: str) -> list[int]:
    return _wait_sleeps(marker, TREE_SLEEPS)


def test_kill_ends_whole_tree_before_returning(case_marker: str) -> None:
    proc = leashed.Popen(["sh", "-c", TREE], tree=True)
    assert len(_tree_sleeps(proc, case_marker)) == TREE_SLEEPS
    proc.kill()
    assert named(marked(case_marker), "sleep") == []
    assert proc.wait(timeout=5) == -signal.SIGKILL


def test_terminate_ends_target_then_leftovers(case_marker: str) -> None:
    tree = "sleep 300 & setsid sleep 300 & exec sleep 300"
    proc = leashed.Popen(["sh", "-c", tree], tree=True, grace=0.5)
    assert len(_wait_sleeps(case_marker, 3)) == 3
    proc.terminate()
    assert proc.wait(timeout=5) == -signal.SIGTERM
    assert wait_until_gone(case_marker, 1.0) == []


@pytest.mark.parametrize("code", [0, 3, 255])
def test_leftovers_ended_when_target_exits(code: int, case_marker: str) -> None:
    script = f"sleep 300 & setsid sleep 300 & sleep 0.3; exit {code}"
    proc = leashed.Popen(["sh", "-c", script], tree=True)
    assert len(_wait_sleeps(case_marker, 2)) >= 2
    assert proc.wait(timeout=5) == code
    assert wait_until_gone(case_marker, 1.0) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGSEGV])
def test_death_by_signal_passes_through_without_core(sig: int, tmp_path: Path) -> None:
    code = f"import os; os.kill(os.getpid(), {int(sig)})"
    proc = leashed.Popen([sys.executable, "-c", code], tree=True, cwd=tmp_path)
    assert proc.wait(timeout=10) == -sig
    assert not list(tmp_path.glob("core*"))


FORWARDED = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGCONT"]

COUNTER = textwrap.dedent(
    """
    import signal, sys, time
    seen = []
    for name in sys.argv[1].split(","):
        signal.signal(getattr(signal, name), lambda s, f: seen.append(signal.Signals(s).name))
    print("ready", flush=True)
    deadline = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < deadline:
        time.sleep(0.05)
    print(",".join(seen), flush=True)
    """
)


@pytest.mark.parametrize("name", FORWARDED)
def test_signal_sent_to_supervisor_reaches_target(name: str) -> None:
    with leashed.Popen(
        [sys.executable, "-c", COUNTER, name, "1.0"], tree=True, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, getattr(signal, name))
        assert proc.stdout.readline().strip() == name
    assert proc.returncode == 0


def test_send_signal_method_reaches_target() -> None:
    with leashed.Popen(
        [sys.executable, "-c", COUNTER, "SIGUSR1", "1.0"],
        tree=True,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGUSR1)
        assert proc.stdout.readline().strip() == "SIGUSR1"


TERMINAL_PARENT = textwrap.dedent(
    """
    import signal, sys, time, leashed
    signal.signal(signal.SIGINT, lambda s, f: None)   # the parent survives its own Ctrl+C
    proc = leashed.Popen([sys.executable, "-c", sys.argv[1], "SIGINT", "2.0"], tree=True,
                         stdout=open(sys.argv[2], "w"))
    proc.wait()
    """
)


def test_ctrl_c_from_a_terminal_reaches_target_exactly_once(tmp_path: Path) -> None:
    """A real pty: the line discipline sends SIGINT to the foreground group, as a terminal."""
    master, slave = os.openpty()
    out = tmp_path / "target.out"

    def become_terminal_session() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    parent = subprocess.Popen(
        [sys.executable, "-c", TERMINAL_PARENT, COUNTER, str(out)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=become_terminal_session,
    )
    os.close(slave)
    try:
        started = poll_until(lambda: out.exists() and "ready" in out.read_text(), 10.0)
        assert started, "the target never started"
        os.write(master, b"\x03")  # Ctrl+C typed at the terminal
        assert parent.wait(timeout=10) == 0
        assert out.read_text().split() == ["ready", "SIGINT"]
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()
        os.close(master)


def test_failed_exec_in_tree_mode_raises_and_leaves_nothing(case_marker: str) -> None:
    with pytest.raises(FileNotFoundError) as info:
        leashed.Popen(["leashed-no-such-program"], tree=True)
    assert info.value.filename == "leashed-no-such-program"
    assert marked(case_marker) == []


def test_supervisor_is_small() -> None:
    proc = leashed.Popen(["sleep", "30"], tree=True)
    try:
        time.sleep(0.1)
        rollup = Path(f"/proc/{proc.pid}/smaps_rollup").read_text().splitlines()
        private_kb = sum(
            int(line.split()[1])
            for line in rollup
            if line.startswith(("Private_Clean", "Private_Dirty"))
        )
        assert private_kb <= 1024, f"supervisor uses {private_kb} kB private memory"
        assert alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()
