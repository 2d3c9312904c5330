"""The supervisor's front: the pid a caller holds. A SIGKILL of that pid (a harness's
kill -9, subprocess.run(timeout=), anyio's kill()), or of the process group it leads, ends
the whole tree as the parent's death does; and keep_leftovers lets a daemonising start
script's leftovers run on until the parent dies."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support import (
    Parent,
    alive,
    marked,
    proc_state,
    wait_for_count,
    wait_for_named,
    wait_until_gone,
)

import leashed

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux")

#: A background grandchild, a setsid'd one and a double-forked daemon: none of them is in
#: the target's process group or below the front once the tree is reparented.
TREE = "sleep 300 & (setsid sleep 301 &); (sh -c 'sleep 302 &' &); exec sleep 303"


def _wait_for_text(path: Path, text: str) -> None:
    """Until ``path`` holds exactly ``text`` (a trap installed, a line written), 10 s at most."""
    deadline = time.monotonic() + 10
    while not (path.exists() and path.read_text() == text) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert path.read_text() == text


def _tree_started(marker: str, extra: int) -> None:
    """Front, supervisor, and the four sleeps of TREE (plus ``extra``) carry the marker."""
    assert len(wait_for_count(marker, 6 + extra)) >= 6 + extra, marked(marker)


@pytest.mark.parametrize("grace", [None, 1.0], ids=["tree", "tree-grace"])
def test_sigkill_of_the_pid_the_caller_holds_ends_the_tree(
    grace: float | None, case_marker: str
) -> None:
    proc = leashed.Popen(["sh", "-c", TREE], tree=True, grace=grace)
    try:
        _tree_started(case_marker, 0)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=5) == -signal.SIGKILL
        assert wait_until_gone(case_marker, 5.0) == []
    finally:
        proc.kill()
        proc.wait()


def test_sigkill_of_the_front_gives_the_target_its_grace(tmp_path: Path, case_marker: str) -> None:
    """The front's death is a parent death: the death signal first, then the grace."""
    log = tmp_path / "log"
    code = f"trap 'echo term > {log}; exit 0' TERM; echo up > {log}; while :; do sleep 0.05; done"
    proc = leashed.Popen(["sh", "-c", code], tree=True, grace=5.0)
    try:
        _wait_for_text(log, "up\n")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        assert wait_until_gone(case_marker, 5.0) == []
        assert log.read_text() == "term\n"
    finally:
        proc.kill()
        proc.wait()


def test_sigkill_of_the_group_the_front_leads_ends_the_tree(case_marker: str) -> None:
    """start_new_session=True: the caller's killpg(proc.pid, SIGKILL) reaches the front and
    the target; the supervisor, in a group of its own, ends the rest."""
    proc = leashed.Popen(["sh", "-c", TREE], tree=True, start_new_session=True)
    try:
        _tree_started(case_marker, 0)
        assert os.getpgid(proc.pid) == proc.pid
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=5) == -signal.SIGKILL
        assert wait_until_gone(case_marker, 5.0) == []
    finally:
        proc.kill()
        proc.wait()


def test_subprocess_run_timeout_ends_a_leashed_run_tree(case_marker: str) -> None:
    """A harness holding only the pid of `leashed run --tree` (subprocess.run(timeout=)
    SIGKILLs it) leaves nothing of the tree behind."""
    command = [sys.executable, "-m", "leashed", "run", "--tree", "--", "sh", "-c", TREE]
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(command, timeout=1.5)
    assert wait_until_gone(case_marker, 5.0) == []


def test_anyio_kill_of_a_wrapped_tree_ends_it(case_marker: str) -> None:
    """wrap(tree=True) under a foreign spawner: its kill() is a SIGKILL of the front."""
    anyio = pytest.importorskip("anyio")

    async def main() -> int:
        async with await anyio.open_process(leashed.wrap(["sh", "-c", TREE], tree=True)) as proc:
            _tree_started(case_marker, 0)
            proc.kill()
            return await proc.wait()

    assert anyio.run(main) == -signal.SIGKILL
    assert wait_until_gone(case_marker, 5.0) == []


def test_a_signal_to_the_front_reaches_the_target_once(tmp_path: Path) -> None:
    log = tmp_path / "log"
    code = f"trap 'echo usr1 >> {log}' USR1; echo up >> {log}; while :; do sleep 0.05; done"
    proc = leashed.Popen(["sh", "-c", code], tree=True)
    try:
        deadline = time.monotonic() + 10
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGUSR1)  # by pid, as a harness would
        time.sleep(0.5)
        assert log.read_text() == "up\nusr1\n"
    finally:
        proc.kill()
        proc.wait()


def test_the_front_and_supervisor_keep_no_copy_of_the_callers_pipes(case_marker: str) -> None:
    """communicate() ends when the target's output ends, not when the leash does; kill()
    after the target's exit ends the kept leftovers at once."""
    proc = leashed.Popen(
        ["sh", "-c", "(sleep 300 >/dev/null 2>&1 &); echo hi"],
        tree=True, keep_leftovers=True, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        # were a copy of the pipe kept above the target, this would wait for the sleep
        out, _ = proc.communicate(timeout=10)
        assert out == b"hi\n" and proc.returncode == 0
        # the supervisor and the kept sleep (the subshell that started it may be exiting)
        (kept,) = wait_for_named(case_marker, "sleep", 1)
        deadline = time.monotonic() + 5
        while len(marked(case_marker)) != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(marked(case_marker)) == 2, marked(case_marker)
        proc.kill()  # the target has exited: this ends the kept leftovers, answered once done
        assert not alive(kept)
        assert wait_until_gone(case_marker, 5.0) == []  # the supervisor, exiting
    finally:
        proc.kill()
        proc.wait()


def test_drop_ends_kept_leftovers_with_the_death_signal(tmp_path: Path, case_marker: str) -> None:
    log = tmp_path / "log"
    daemon = f"trap 'echo term > {log}; exit 0' TERM; echo up > {log}; while :; do sleep 0.05; done"
    proc = leashed.Popen(
        ["sh", "-c", f"(setsid sh -c {shlex.quote(daemon)} >/dev/null 2>&1 &); exit 7"],
        tree=True, keep_leftovers=True, grace=5.0,
    )  # fmt: skip
    try:
        assert proc.wait(timeout=10) == 7
        _wait_for_text(log, "up\n")
        proc.drop()
        assert wait_until_gone(case_marker, 5.0) == []
        assert log.read_text() == "term\n"
    finally:
        proc.kill()


# ------------------------------------------------------------------ keep_leftovers

KEEPER = """
    import time, leashed
    proc = leashed.Popen(["sh", "-c", "(setsid sleep 300 >/dev/null 2>&1 &); exit 3"],
                         tree=True, keep_leftovers=True, grace=1.0)
    print(proc.wait(), flush=True)
    time.sleep(300)
"""


def test_keep_leftovers_outlive_the_target_until_the_parent_dies(case_marker: str) -> None:
    with Parent(KEEPER, case_marker) as parent:
        assert parent.read_line() == "3"  # wait() returned with the target's status
        time.sleep(0.5)
        left = [p for p in marked(case_marker) if p != parent.proc.pid]
        assert len(left) == 2, left  # the supervisor and the setsid'd sleep
        assert all(alive(p) for p in left)
        parent.kill()
        assert wait_until_gone(case_marker, 5.0) == []


def test_without_keep_leftovers_the_tree_ends_with_the_target(case_marker: str) -> None:
    proc = leashed.Popen(["sh", "-c", "(setsid sleep 300 >/dev/null 2>&1 &); exit 3"], tree=True)
    assert proc.wait(timeout=10) == 3
    assert wait_until_gone(case_marker, 5.0) == []


def test_leashed_run_keep_leftovers(case_marker: str) -> None:
    """The README's start-script case: leashed run returns with the script's status; what
    the script daemonised runs until the script's parent dies."""
    script = textwrap.dedent(
        """
        import subprocess, sys, time
        status = subprocess.call([sys.executable, "-m", "leashed", "run", "--tree",
                                  "--keep-leftovers", "--", "sh", "-c",
                                  "(setsid sleep 300 >/dev/null 2>&1 &); exit 4"])
        print(status, flush=True)
        time.sleep(300)
        """
    )
    with Parent(script, case_marker) as parent:
        assert parent.read_line() == "4"
        time.sleep(0.5)
        assert len([p for p in marked(case_marker) if p != parent.proc.pid]) == 2
        parent.kill()
        assert wait_until_gone(case_marker, 5.0) == []


def test_keep_leftovers_needs_tree() -> None:
    with pytest.raises(ValueError, match="keep_leftovers=True needs tree=True"):
        leashed.Popen(["true"], keep_leftovers=True)
    with pytest.raises(TypeError, match="keep_leftovers must be a bool"):
        leashed.Popen(["true"], tree=True, keep_leftovers=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keep_leftovers=True needs tree=True"):
        leashed.wrap(["true"], keep_leftovers=True)
    run = subprocess.run(
        [sys.executable, "-m", "leashed", "run", "--keep-leftovers", "--", "true"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 2
    assert "--keep-leftovers needs --tree" in run.stderr


# ------------------------------------------------------------------ fds per child

MANY = """
    import os, resource, subprocess, leashed
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    procs = [leashed.Popen(["sleep", "300"], tree=True, stdin=subprocess.DEVNULL)
             for _ in range(120)]
    procs[0].send_signal(0)  # the control socket answers
    print(len(procs), len(os.listdir("/proc/self/fd")), flush=True)
    import time; time.sleep(300)
"""


def test_a_supervised_child_costs_the_parent_no_fd(case_marker: str) -> None:
    """120 tree children under a soft limit of 48 fds: the parent connects to each
    supervisor's control socket per request instead of holding one."""
    with Parent(MANY, case_marker) as parent:
        started, fds = parent.read_line(timeout=120).split()
        assert int(started) == 120
        assert int(fds) < 20
        assert len(wait_for_count(case_marker, 1 + 3 * 120)) == 1 + 3 * 120
        parent.kill()
        assert wait_until_gone(case_marker, 10.0) == []


# ------------------------------------------------------------------ review findings

ONCE = """
    import os, signal, subprocess, sys, time, leashed
    log = sys.argv[1]
    code = f"trap 'echo usr1 >> {log}' USR1; echo up >> {log}; while :; do sleep 0.05; done"
    ways = [{"start_new_session": True}]
    if sys.version_info >= (3, 11):
        ways.append({"process_group": 0})
    for options in ways:
        open(log, "w").close()
        proc = leashed.Popen(["sh", "-c", code], tree=True, **options)
        while "up" not in open(log).read():
            time.sleep(0.02)
        os.killpg(os.getpgid(proc.pid), signal.SIGUSR1)  # the group the front leads
        time.sleep(0.3)  # two signals, not one that coalesces with the next
        os.kill(proc.pid, signal.SIGUSR1)  # and its pid
        time.sleep(0.5)
        print(open(log).read().count("usr1"), flush=True)
        proc.kill()
        proc.wait()
"""


def test_a_signal_to_the_group_the_front_leads_reaches_the_target_once(
    tmp_path: Path, case_marker: str
) -> None:
    """Without a terminal (no job control) the target gets a group of its own and the
    front passes on everything: killpg() of the front's group plus a kill() of its pid
    are two signals, not three."""
    log = tmp_path / "log"
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(ONCE), str(log)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,  # no controlling terminal
    )  # fmt: skip
    try:
        out, _ = parent.communicate(timeout=60)
        assert out.split() == ["2"] * (2 if sys.version_info >= (3, 11) else 1)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert wait_until_gone(case_marker, 5.0) == []


@pytest.mark.parametrize("keep", [False, True], ids=["tree", "keep-leftovers"])
def test_a_front_following_a_stop_is_continued_when_the_target_is_killed(
    keep: bool, case_marker: str
) -> None:
    """A leading front follows its target's stop; when someone else (the OOM killer)
    kills the stopped target, the front is continued and exits: wait() returns."""
    proc = leashed.Popen(["sleep", "300"], tree=True, keep_leftovers=keep, start_new_session=True)
    try:
        (target,) = wait_for_named(case_marker, "sleep", 1)
        os.kill(target, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while _state(proc.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _state(proc.pid) == "T"  # the front follows, as a shell's job would show
        os.kill(target, signal.SIGCONT)  # continued directly: the front too
        while _state(proc.pid) == "T" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _state(proc.pid) != "T"
        os.kill(target, signal.SIGSTOP)
        while _state(proc.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(target, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    assert wait_until_gone(case_marker, 5.0) == []


def _state(pid: int) -> str:
    return proc_state(pid)


FLOOD = r"""
import socket, sys, time
name = "\0" + sys.argv[1]
end = time.monotonic() + 30
while time.monotonic() < end:
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect(name)
    except OSError:
        pass
"""


def test_strangers_flooding_the_control_socket_cannot_downgrade_kill(
    tmp_path: Path, case_marker: str
) -> None:
    """Another process connecting to the supervisor's control socket as fast as it can
    (its name is visible in /proc/net/unix) is turned away; kill() still gets through and
    returns only once the TERM-proof target is dead, not after its 5 s grace."""
    code = "trap '' TERM; exec sleep 300"
    proc = leashed.Popen(["sh", "-c", code], tree=True, grace=5.0)
    flooders: list[subprocess.Popen[bytes]] = []
    try:
        (target,) = wait_for_named(case_marker, "sleep", 1)
        name = proc._leash.control_name  # anyone can read it in /proc/net/unix
        flooders = [subprocess.Popen([sys.executable, "-c", FLOOD, name]) for _ in range(2)]
        time.sleep(1.0)
        proc.kill()
        assert not alive(target)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        for flooder in flooders:
            flooder.kill()
            flooder.wait()
        proc.kill()
        proc.wait()


PDEATH_ONLY = """
import os, subprocess, sys, time
helper = sys.argv[1]
proc = subprocess.Popen([helper, "supervisor", "-t", "-p", str(os.getpid()), "--",
                         "sh", "sh", "-c", "(setsid sleep 301 &); exec sleep 300"])
print(proc.pid, flush=True)
time.sleep(300)
"""


def test_a_supervisor_with_neither_lifeline_nor_pidfd_still_sees_its_parent_die(
    case_marker: str,
) -> None:
    """The helper run by hand with -p only: the front's parent-death signal ends it,
    which the supervisor sees; the whole tree ends."""
    from leashed import _helper

    helper = _helper.helper_path()
    assert helper is not None
    with Parent(PDEATH_ONLY.replace("sys.argv[1]", repr(str(helper))), case_marker) as parent:
        parent.read_line()
        assert len(wait_for_count(case_marker, 5)) == 5  # parent, front, supervisor, 2 sleeps
        parent.kill()
        assert wait_until_gone(case_marker, 5.0) == []
