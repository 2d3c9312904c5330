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
from support import Parent, alive, marked, wait_for_count, wait_for_named, wait_until_gone

import leashed

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux")

#: A background grandchild, a setsid'd one and a double-forked daemon: none of them is in
#: the target's process group or below the front once the tree is reparented.
TREE = "sleep 300 & (setsid sleep 301 &); (sh -c 'sleep 302 &' &); exec sleep 303"


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
        deadline = time.monotonic() + 10
        while not (log.exists() and log.read_text() == "up\n") and time.monotonic() < deadline:
            time.sleep(0.02)
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
        started = time.monotonic()
        out, _ = proc.communicate(timeout=10)
        assert out == b"hi\n" and proc.returncode == 0
        assert time.monotonic() - started < 5
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
        deadline = time.monotonic() + 10
        while not (log.exists() and log.read_text() == "up\n") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert log.read_text() == "up\n"
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
