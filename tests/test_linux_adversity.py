"""The promise under adversity: worker threads with their own signal masks, pids reused
behind a Popen's back, a parent with its stdio closed, no free file descriptors, and a
hostile ``LEASHED_HELPER``."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from support import Parent, wait_until_gone

import leashed
from leashed import _helper

MECHANISMS = [{}, {"tree": True}, {"mechanism": "guardian"}]
MECHANISM_IDS = ["direct", "tree", "guardian"]


def _blocked_mask(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)
    raise AssertionError("no SigBlk line")


def _child_mask_from_thread(factory: Any, block: set[int]) -> int:
    """The signal mask a child gets when spawned by a thread that blocks ``block``."""
    box: list[int] = []

    def spawn() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, block)
        proc = factory(["sleep", "30"])
        try:
            box.append(_blocked_mask(proc.pid))
        finally:
            proc.kill()
            proc.wait()

    worker = threading.Thread(target=spawn)
    worker.start()
    worker.join()
    return box[0]


def test_worker_thread_child_gets_the_mask_subprocess_gives(case_marker: str) -> None:
    # The first caller's mask must not stick to the spawner thread: alternate masks.
    for block in ({signal.SIGTERM}, set(), {signal.SIGUSR1, signal.SIGINT}, set()):
        expected = _child_mask_from_thread(subprocess.Popen, block)
        assert _child_mask_from_thread(leashed.Popen, block) == expected, block


def _force_next_pid(pid: int) -> bool:
    """Make the kernel hand out ``pid`` next (root only), as a pid-reuse attacker would."""
    try:
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
    except OSError:
        return False
    return True


@pytest.mark.skipif(os.geteuid() != 0, reason="forcing a pid needs root (CI runs as root)")
@pytest.mark.parametrize("options", [{}, {"mechanism": "guardian"}], ids=["direct", "guardian"])
def test_kill_on_drop_never_hits_a_reused_pid(options: dict[str, Any], case_marker: str) -> None:
    """The child is reaped behind the Popen's back and its pid given to another process:
    dropping the stale Popen must not signal that process."""
    for _attempt in range(20):
        proc = leashed.Popen(["sleep", "300"], kill_on_drop=True, **options)
        pid = proc.pid
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)  # reaped behind the Popen's back (as SIGCHLD=SIG_IGN would)
        if not _force_next_pid(pid):
            pytest.skip("ns_last_pid is not writable here")
        victim = subprocess.Popen(["sleep", "300"])
        if victim.pid != pid:  # another process took the pid first: try again
            victim.kill()
            victim.wait()
            proc.returncode = -9
            continue
        try:
            proc.drop()
            del proc
            assert victim.poll() is None, "the stale Popen signalled an unrelated process"
        finally:
            victim.kill()
            victim.wait()
        return
    pytest.fail("could not make the kernel reuse the pid in 20 attempts")


def test_parent_with_closed_stdio(case_marker: str, tmp_path: Path) -> None:
    """fds 0-2 closed in the parent: our fds must not land there and be dup'd over."""
    out = tmp_path / "out"
    code = textwrap.dedent(
        f"""
        import os, time
        import leashed
        for fd in (0, 1, 2):
            os.close(fd)
        sink = open({str(out)!r}, "w")
        tree = leashed.Popen(
            ["sh", "-c", "sleep 300 & readlink /proc/self/fd/2; echo started; exec sleep 300"],
            tree=True, stdin=leashed.DEVNULL, stdout=sink, stderr=leashed.DEVNULL,
        )
        while "started" not in open({str(out)!r}).read():
            time.sleep(0.01)
        tree.kill()
        assert tree.wait() == -9
        again = leashed.Popen(["sh", "-c", "sleep 300 & exec sleep 300"], tree=True,
                              kill_on_drop=True, stdin=leashed.DEVNULL,
                              stdout=leashed.DEVNULL, stderr=leashed.DEVNULL)
        time.sleep(0.3)
        again.drop()
        sink.write("dropped\\n")
        sink.close()
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=dict(os.environ))
    lines = out.read_text().split()
    assert lines == ["/dev/null", "started", "dropped"]
    assert wait_until_gone(case_marker, 2.0) == []


EMFILE_PARENT = """
import errno, os, resource, sys
import leashed
options = {options!r}
leashed.Popen(["true"], **options).wait()  # the lifeline, if any, exists from here on
used = len(os.listdir("/proc/self/fd")) - 1
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
for spare in range(1, 8):
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + spare, hard))
    before = sorted(os.listdir("/proc/self/fd"))
    try:
        leashed.Popen(["true"], **options).wait()
    except OSError as exc:
        assert exc.errno == errno.EMFILE, exc
    after = sorted(os.listdir("/proc/self/fd"))
    assert before == after, (spare, before, after)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
print("ok")
"""


@pytest.mark.parametrize("options", MECHANISMS, ids=MECHANISM_IDS)
def test_no_fd_leaks_when_descriptors_run_out(options: dict[str, Any], case_marker: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", EMFILE_PARENT.format(options=options)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.stdout.strip() == "ok", result.stderr
    assert wait_until_gone(case_marker, 2.0) == []


# -- LEASHED_HELPER is trusted no more than the stdlib trusts the environment -------------


def _helper_seen(env_value: str, *flags: str) -> subprocess.CompletedProcess[str]:
    code = "import leashed._helper as h; print(h.helper_path())"
    env = {**os.environ, _helper.HELPER_ENV: env_value}
    return subprocess.run(
        [sys.executable, *flags, "-c", code], capture_output=True, text=True, env=env, timeout=30
    )


@pytest.fixture()
def helper_copy(tmp_path: Path) -> Path:
    real = _helper.helper_path()
    assert real is not None
    copy = tmp_path / "leashed-helper"
    copy.write_bytes(Path(real).read_bytes())
    copy.chmod(0o755)
    return copy


def test_override_is_used_when_trustworthy(helper_copy: Path) -> None:
    assert _helper_seen(str(helper_copy)).stdout.strip() == str(helper_copy)


def test_override_is_ignored_in_isolated_mode(helper_copy: Path) -> None:
    seen = _helper_seen(str(helper_copy), "-I")
    assert seen.returncode == 0
    assert seen.stdout.strip() != str(helper_copy)


@pytest.mark.parametrize(
    "why,prepare",
    [
        ("not an absolute path", lambda p: "leashed-helper"),
        ("cannot be used", lambda p: str(p.parent / "missing")),
        ("writable by other users", lambda p: (p.chmod(0o777), str(p))[1]),
        ("not an executable file", lambda p: (p.chmod(0o644), str(p))[1]),
    ],
)
def test_unusable_override_is_an_error_never_a_fallback(
    why: str, prepare: Any, helper_copy: Path
) -> None:
    seen = _helper_seen(prepare(helper_copy))
    assert seen.returncode != 0
    assert "HelperOverrideError" in seen.stderr and why in seen.stderr


def test_override_owned_by_another_user_is_refused(helper_copy: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root (CI runs as root)")
    os.chown(helper_copy, 65534, 65534)
    seen = _helper_seen(str(helper_copy))
    assert "owned by another user" in seen.stderr
    assert stat.S_IMODE(helper_copy.stat().st_mode) == 0o755


def test_a_dead_parents_children_are_gone_with_closed_stdio(case_marker: str) -> None:
    parent = Parent(
        """
        import os, sys, leashed
        out = os.dup(1)
        os.close(0); os.close(2)
        procs = [leashed.Popen(["sleep", "300"], **o) for o in
                 ({}, {"tree": True}, {"mechanism": "guardian"})]
        os.write(out, b"ready\\n")
        import time; time.sleep(300)
        """,
        case_marker,
    )
    with parent:
        assert parent.read_line() == "ready"
        parent.kill()
        assert wait_until_gone(case_marker, 2.0) == []
