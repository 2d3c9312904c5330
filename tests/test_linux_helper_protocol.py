"""leashed-helper's protocol v2 (docs/helper-protocol.md), driven directly with real processes.

The helper is the installed one, or the binary named by $LEASHED_HELPER (a meson build dir).
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support import alive, marked, proc_state

from leashed import _helper, _procfs
from leashed._procfs import poll_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

HELPER = _helper.helper_path()
REPORT = struct.Struct("=ii")
EXEC, ARM, FORK, GUARDIAN, CREDENTIALS, USAGE, SETUP = range(1, 8)
SIGNAL_OP, DROP_OP = 1, 2
IGNORE_TERM = ["sh", "sh", "-c", "trap '' TERM; exec sleep 300"]  # PROGRAM, then argv

# A target that handles SIGTERM: writes "ready PID" to its file, then "term" on SIGTERM.
TERM_WRITER = r"""
import os, signal, sys, time
path = sys.argv[1]
def on_term(*_):
    with open(path + ".tmp", "w") as f:
        f.write("term")
    os.rename(path + ".tmp", path)
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
with open(path + ".tmp", "w") as f:
    f.write(f"ready {os.getpid()}")
os.rename(path + ".tmp", path)
while True:
    time.sleep(1)
"""

# A job-control shell in miniature: runs the helper in its own process group and reports
# what waitpid(WUNTRACED | WCONTINUED) says about it.
SHELL = r"""
import os, sys
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # our pipe is the test's, not the job's
    os.execv(sys.argv[1], sys.argv[1:])
try:
    os.setpgid(pid, pid)  # the race-free pair; EACCES once the child has exec'd
except PermissionError:
    pass
print(pid, flush=True)
while True:
    _, status = os.waitpid(pid, os.WUNTRACED | os.WCONTINUED)
    if os.WIFSTOPPED(status):
        print("stopped", os.WSTOPSIG(status), flush=True)
    elif os.WIFCONTINUED(status):
        print("continued", flush=True)
    else:
        print("exited", status, flush=True)
        break
"""

# A stand-in parent: runs the helper command line (its "{l}" is a lifeline read end) and
# prints the helper's pid; its death (SIGKILL by the test) is the parent's death.
PARENT = r"""
import os, subprocess, sys
r, w = os.pipe()
cmd = [str(r) if a == "{l}" else a for a in sys.argv[1:]]
# A job's leader, as a shell starts it (a supervisor that leads its group follows stops).
as_job = os.environ.get("LEASHED_TEST_AS_JOB") == "1"
proc = subprocess.Popen(cmd, pass_fds=(r,), stdout=subprocess.DEVNULL, start_new_session=as_job)
os.close(r)
print(proc.pid, flush=True)
sys.stdin.read()
"""


@pytest.fixture(autouse=True)
def _marked(case_marker: str) -> None:
    """Every test here needs the helper, and runs under the case marker."""
    if HELPER is None:
        pytest.fail("leashed-helper is not built")


@pytest.fixture()
def thread_id() -> Iterator[int]:
    """The tid of a live thread that is not a process: pidfd_open refuses it."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    assert thread.native_id is not None
    yield thread.native_id
    stop.set()
    thread.join()


def pidfd_open_errno(tid: int) -> int:
    """What this kernel says to pidfd_open(tid): EINVAL, or ENOENT since Linux 6.9."""
    with pytest.raises(OSError) as refused:
        os.close(os.pidfd_open(tid))
    assert refused.value.errno is not None
    return refused.value.errno


state = proc_state


def cpu_ticks(pid: int) -> int:
    stat = _procfs.read_stat(pid)
    assert stat is not None, f"{pid} is gone"
    return stat.cpu_ticks


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def only_child(pid: int) -> int:
    assert poll_until(lambda: len(children(pid)) == 1, 5.0)
    return children(pid)[0]


def target_of(front: int) -> int:
    """A supervisor's target: the child of the supervisor, which is the front's child."""
    return only_child(only_child(front))


def read_all(fd: int) -> bytes:
    data = b""
    while part := os.read(fd, 64):
        data += part
    os.close(fd)
    return data


def run_reported(argv: list[str], timeout: float = 10) -> tuple[int, tuple[int, int] | None, str]:
    """The helper with a report pipe in place of "{r}": (returncode, report or None, stderr)."""
    assert HELPER is not None
    read_fd, write_fd = os.pipe()
    try:
        cmd = [HELPER, *(str(write_fd) if a == "{r}" else a for a in argv)]
        proc = subprocess.Popen(cmd, pass_fds=(write_fd,), stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_fd)
    data = read_all(read_fd)
    _, err = proc.communicate(timeout=timeout)
    assert len(data) in (0, REPORT.size), data
    return proc.returncode, REPORT.unpack(data) if data else None, err


def run_plain(argv: list[str]) -> tuple[int, str]:
    assert HELPER is not None
    proc = subprocess.run([HELPER, *argv], capture_output=True, text=True, timeout=10)
    return proc.returncode, proc.stderr


def not_open_fd() -> int:
    fd = 1000
    while True:
        try:
            os.fstat(fd)
        except OSError:
            return fd
        fd += 1


def lifeline() -> tuple[int, int]:
    return os.pipe()


@contextmanager
def python_script(
    code: str, *args: str, **popen: Any
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A Python script whose first line of output is a pid: (its process, that pid)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, **popen
    )
    try:
        assert proc.stdout is not None
        yield proc, int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()


def write_target(path: Path) -> list[str]:
    return [sys.executable, sys.executable, "-c", TERM_WRITER, str(path)]


def ready_pid(path: Path) -> int:
    assert poll_until(lambda: path.exists() and path.read_text().startswith("ready"), 10)
    return int(path.read_text().split()[1])


# ------------------------------------------------------------------ failures and their stages


@pytest.mark.parametrize(
    ("argv", "stage", "err", "code"),
    [
        (["direct", "-r", "{r}", "--", "leashed-no-such-program"], EXEC, errno.ENOENT, 127),
        (["direct", "-r", "{r}", "--", "/", "x"], EXEC, errno.EACCES, 126),
        (["direct", "-r", "{r}", "-Z", "1", "--", "true", "true"], USAGE, errno.EINVAL, 2),
        (["direct", "-Z", "-r", "{r}", "--", "true", "true"], USAGE, errno.EINVAL, 2),
        (["exec", "-r", "{r}", "--", "true", "true"], USAGE, errno.EINVAL, 2),
        (["direct", "-r", "{r}", "-c", "5", "--", "true"], USAGE, errno.EINVAL, 2),
        (["direct", "-r", "{r}", "-s", "0", "--", "true"], USAGE, errno.EINVAL, 2),
        (["direct", "-r", "{r}", "-s", "65", "--", "true"], USAGE, errno.EINVAL, 2),
        (["direct", "-r", "{r}", "-U", "4294967296", "--", "true"], USAGE, errno.EINVAL, 2),
        (["direct", "-r", "{r}", "-G", "-1", "--", "true"], USAGE, errno.EINVAL, 2),
        (["direct", "-r", "{r}", "-X", "1,,2", "--", "true"], USAGE, errno.EINVAL, 2),
        (["direct", "-r", "{r}", "-X", "1,", "--", "true"], USAGE, errno.EINVAL, 2),
        (["supervisor", "-r", "{r}", "-g", "86400001", "--", "true"], USAGE, errno.EINVAL, 2),
        (["supervisor", "-r", "{r}", "-g"], USAGE, errno.EINVAL, 2),
        (["direct", "-r", "{r}", "-p", "1"], USAGE, errno.EINVAL, 2),
        (["direct", "-r", "{r}", "--"], USAGE, errno.EINVAL, 2),
        (["supervisor", "-r", "{r}", "-l", "{bad}", "--", "true"], SETUP, errno.EBADF, 126),
        (["guardian", "-r", "{r}", "-l", "{bad}", "--", "true"], SETUP, errno.EBADF, 126),
        (["supervisor", "-r", "{r}", "-w", "{tid}", "--", "true"], ARM, "tid", 126),
        (["guardian", "-r", "{r}", "-w", "{tid}", "--", "true"], GUARDIAN, "tid", 126),
        (["supervisor", "-r", "{r}", "-t", "--", "leashed-no-such"], EXEC, errno.ENOENT, 127),
        (["supervisor", "-r", "{r}", "-k", "--", "true"], USAGE, errno.EINVAL, 2),
        (["supervisor", "-r", "{r}", "-t", "-k", "-P", "--", "true"], USAGE, errno.EINVAL, 2),
        (["guardian", "-r", "{r}", "-k", "--", "true"], USAGE, errno.EINVAL, 2),
        (["supervisor", "-r", "{r}", "-L", "0", "--", "true"], USAGE, errno.EINVAL, 2),
        (
            ["supervisor", "-r", "{r}", "-w", "1", "-L", "0", "-c", "0", "--", "true"],
            USAGE,
            errno.EINVAL,
            2,
        ),
        (
            ["supervisor", "-r", "{r}", "-w", "1", "-L", "{bad}", "--", "true"],
            SETUP,
            errno.EBADF,
            126,
        ),
        (["guardian", "-r", "{r}", "--", "leashed-no-such"], EXEC, errno.ENOENT, 127),
    ],
)
def test_every_failure_is_reported_on_the_pipe_and_nothing_is_said(
    argv: list[str], stage: int, err: int | str, code: int, thread_id: int
) -> None:
    if err == "tid":
        err = pidfd_open_errno(thread_id)
    bad = str(not_open_fd())
    argv = [bad if a == "{bad}" else str(thread_id) if a == "{tid}" else a for a in argv]
    returncode, report, stderr = run_reported(argv)
    assert (returncode, report, stderr) == (code, (stage, err), "")


def test_credential_failures_are_stage_credentials_with_subprocess_errno() -> None:
    with pytest.raises(OSError) as expected:
        subprocess.run(["true"], extra_groups=[4294967295])
    returncode, report, _ = run_reported(["direct", "-r", "{r}", "-X", "4294967295", "--", "true"])
    assert (returncode, report) == (126, (CREDENTIALS, expected.value.errno))


def test_a_usage_error_before_the_report_fd_is_still_reported() -> None:
    returncode, report, _ = run_reported(["guardian", "-t", "-r", "{r}", "--", "true"])
    assert (returncode, report) == (2, (USAGE, errno.EINVAL))


@pytest.mark.parametrize(
    ("argv", "code", "line"),
    [
        (
            ["direct", "--", "leashed-no-such-program"],
            127,
            f"exec leashed-no-such-program: {os.strerror(errno.ENOENT)}",
        ),
        (["direct", "--", "/", "x"], 126, f"exec /: {os.strerror(errno.EACCES)}"),
        (
            ["supervisor", "--", "leashed-no-such"],
            127,
            "exec leashed-no-such: No such file or directory",
        ),
        (["direct", "-Z", "--", "x"], 2, "usage: unknown option -Z"),
        (["exec", "--", "x"], 2, "usage: unknown mode exec"),
        (["direct", "-s", "x", "--", "x"], 2, "usage: bad value for -s"),
        (["supervisor", "-w", "{tid}", "--", "true"], 126, "arm the leash: {tid}"),
        (["supervisor", "-l", "{bad}", "--", "true"], 126, "-l: Bad file descriptor"),
        (["direct", "-r", "{bad}", "--", "true"], 126, "-r: Bad file descriptor"),
        (["direct", "-X", "4294967295", "--", "true"], 126, "setgroups: Invalid argument"),
    ],
)
def test_without_a_report_pipe_one_line_on_stderr_says_why(
    argv: list[str], code: int, line: str, thread_id: int
) -> None:
    if line.startswith("setgroups") and os.geteuid() != 0:
        line = f"setgroups: {os.strerror(errno.EPERM)}"
    line = line.replace("{tid}", os.strerror(pidfd_open_errno(thread_id)))
    bad = str(not_open_fd())
    argv = [bad if a == "{bad}" else str(thread_id) if a == "{tid}" else a for a in argv]
    assert run_plain(argv) == (code, f"leashed-helper: {line}\n")


# ------------------------------------------------------------------ command line


def test_an_empty_argv_is_executed_as_subprocess_does() -> None:
    assert HELPER is not None
    script = "echo ran $#"
    # cwd= keeps the stdlib on its fork path: from 3.13 its posix_spawn path refuses []
    expected = subprocess.run(
        [], executable="/bin/sh", input=script, capture_output=True, text=True, cwd="/"
    )
    got = subprocess.run(
        [HELPER, "direct", "--", "/bin/sh"], input=script, capture_output=True, text=True
    )
    assert (
        (got.returncode, got.stdout, got.stderr) == (0, expected.stdout, "") == (0, "ran 0\n", "")
    )


def test_the_full_uid_and_gid_range_is_accepted() -> None:
    """4294967295 is (uid_t)-1: setreuid/setregid leave the ids alone, as subprocess does."""
    returncode, report, _ = run_reported(
        ["direct", "-r", "{r}", "-U", "4294967295", "-G", "4294967295", "--", "true", "true"]
    )
    assert (returncode, report) == (0, None)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing groups needs root")
def test_credentials_are_applied_in_subprocess_order() -> None:
    assert HELPER is not None
    cmd = [HELPER, "direct", "-X", "7,8", "-G", "5", "-U", "6", "--",
           "grep", "grep", "-E", "^(Uid|Gid|Groups):", "/proc/self/status"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert [line.split() for line in out.stdout.splitlines()] == [
        ["Uid:", "6", "6", "6", "6"],
        ["Gid:", "5", "5", "5", "5"],
        ["Groups:", "7", "8"],
    ]


# ------------------------------------------------------------------ control socket


class Supervisor:
    """A supervisor with a control socket, started by the test (its parent); argv is
    PROGRAM, then the target's argv."""

    def __init__(self, *options: str, argv: list[str]) -> None:
        assert HELPER is not None
        self.ours, theirs = socket.socketpair()
        self.life_read, self.life_write = lifeline()
        cmd = [HELPER, "supervisor", "-c", str(theirs.fileno()), "-l", str(self.life_read),
               *options, "--", *argv]  # fmt: skip
        self.proc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(), self.life_read))
        theirs.close()
        os.close(self.life_read)
        self.ours.settimeout(10)

    def request(self, op: int, value: int) -> int:
        self.ours.sendall(struct.pack("=ii", op, value))
        reply = b""
        while len(reply) < 4:
            part = self.ours.recv(4 - len(reply))
            assert part, "the supervisor closed the control socket"
            reply += part
        return int(struct.unpack("=i", reply)[0])

    def close_lifeline(self) -> None:
        if self.life_write >= 0:
            os.close(self.life_write)
            self.life_write = -1

    def close(self) -> None:
        self.ours.close()
        self.close_lifeline()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture()
def supervisors() -> Iterator[list[Supervisor]]:
    started: list[Supervisor] = []
    yield started
    for sup in started:
        sup.close()


def test_signal_0_probes_and_never_ends_anything(supervisors: list[Supervisor]) -> None:
    sup = Supervisor("-t", argv=["sleep", "sleep", "300"])
    supervisors.append(sup)
    target = target_of(sup.proc.pid)
    for _ in range(3):
        assert sup.request(SIGNAL_OP, 0) == 0
    time.sleep(0.2)
    assert sup.proc.poll() is None and alive(target)


def test_bad_requests_get_einval_and_change_nothing(supervisors: list[Supervisor]) -> None:
    sup = Supervisor("-t", argv=["sleep", "sleep", "300"])
    supervisors.append(sup)
    target = target_of(sup.proc.pid)
    for op, value in ((SIGNAL_OP, -1), (SIGNAL_OP, signal.NSIG), (SIGNAL_OP, 1000),
                      (3, 0), (0, signal.SIGTERM), (-1, signal.SIGKILL)):  # fmt: skip
        assert sup.request(op, value) == errno.EINVAL
    assert sup.request(SIGNAL_OP, 0) == 0
    assert sup.proc.poll() is None and alive(target)


def test_a_signal_is_relayed_and_answered(tmp_path: Path, supervisors: list[Supervisor]) -> None:
    flag = tmp_path / "flag"
    code = f"trap 'echo usr1 > {flag}' USR1; while :; do sleep 0.05; done"
    sup = Supervisor(argv=["sh", "sh", "-c", code])
    supervisors.append(sup)
    target_of(sup.proc.pid)
    time.sleep(0.2)  # let sh install its trap
    assert sup.request(SIGNAL_OP, signal.SIGUSR1) == 0
    assert poll_until(lambda: flag.exists() and flag.read_text() == "usr1\n", 5.0)


def test_sigkill_is_answered_only_after_the_whole_tree_is_dead(
    marker: str, supervisors: list[Supervisor]
) -> None:
    sup = Supervisor("-t", argv=["sh", "sh", "-c", "sleep 300 & sleep 300 & wait"])
    supervisors.append(sup)
    assert poll_until(lambda: len(marked(marker)) == 5, 5.0)  # front, supervisor, sh, 2 sleeps
    leash = (sup.proc.pid, only_child(sup.proc.pid))  # the front and the supervisor
    tree = [p for p in marked(marker) if p not in leash]
    assert sup.request(SIGNAL_OP, signal.SIGKILL) == 0
    assert [p for p in tree if os.path.exists(f"/proc/{p}")] == []
    assert sup.proc.wait(timeout=5) == -signal.SIGKILL


def test_after_the_target_exits_probe_and_kill_say_esrch(
    marker: str, supervisors: list[Supervisor]
) -> None:
    """The target is gone, a TERM-proof leftover is in its 20 s grace: SIGKILL ends it now."""
    leftover = "(trap '' TERM; exec sleep 300) & sleep 0.3; exit 5"
    sup = Supervisor("-t", "-s", "15", "-g", "20000", argv=["sh", "sh", "-c", leftover])
    supervisors.append(sup)
    assert poll_until(lambda: sup.request(SIGNAL_OP, 0) == errno.ESRCH, 5.0)
    assert len(marked(marker)) == 3  # the front, the supervisor and the leftover
    started = time.monotonic()
    assert sup.request(SIGNAL_OP, signal.SIGKILL) == errno.ESRCH
    assert sup.proc.wait(timeout=5) == 5
    assert time.monotonic() - started < 5
    assert marked(marker) == []


def test_drop_ends_the_tree_without_an_answer(marker: str, supervisors: list[Supervisor]) -> None:
    sup = Supervisor("-t", argv=["sh", "sh", "-c", "sleep 300 & wait"])
    supervisors.append(sup)
    assert poll_until(lambda: len(marked(marker)) == 4, 5.0)  # front, supervisor, sh, sleep
    sup.ours.sendall(struct.pack("=ii", DROP_OP, 0))
    assert sup.proc.wait(timeout=5) == 1
    assert sup.ours.recv(4) == b""  # closed, never answered
    assert marked(marker) == []


# ------------------------------------------------------------------ stopped processes


def test_guardian_continues_a_stopped_target_after_its_death_signal(tmp_path: Path) -> None:
    assert HELPER is not None
    path = tmp_path / "state"
    life_read, life_write = lifeline()
    proc = subprocess.Popen(
        [HELPER, "guardian", "-l", str(life_read), "-s", "15", "-g", "20000", "--",
         *write_target(path)],
        pass_fds=(life_read,),
    )  # fmt: skip
    os.close(life_read)
    try:
        assert ready_pid(path) == proc.pid  # the guardian's target is the helper's pid
        os.kill(proc.pid, signal.SIGSTOP)
        assert poll_until(lambda: state(proc.pid) == "T", 5.0)
        os.close(life_write)
        life_write = -1
        assert proc.wait(timeout=10) == 0  # ended by its own SIGTERM handler, not SIGKILL
        assert path.read_text() == "term"
    finally:
        if life_write >= 0:
            os.close(life_write)
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("options", [["-t"], ["-t", "-P"]], ids=["subreaper", "group"])
def test_supervisor_continues_stopped_descendants_after_the_death_signal(
    tmp_path: Path, options: list[str], supervisors: list[Supervisor]
) -> None:
    path = tmp_path / "state"
    child = " ".join(f"'{a}'" for a in write_target(path)[1:])
    sup = Supervisor(*options, "-s", "15", "-g", "20000",
                     argv=["sh", "sh", "-c", f"{child} & wait"])  # fmt: skip
    supervisors.append(sup)
    descendant = ready_pid(path)
    os.kill(descendant, signal.SIGSTOP)
    assert poll_until(lambda: state(descendant) == "T", 5.0)
    sup.close_lifeline()
    assert sup.proc.wait(timeout=10) == 1
    assert path.read_text() == "term"


def test_a_stopped_supervisor_still_ends_the_target_when_its_parent_dies(
    tmp_path: Path, marker: str
) -> None:
    """A supervisor that leads its job follows its target's stop; the parent's death
    continues it."""
    assert HELPER is not None
    path = tmp_path / "state"
    with python_script(
        PARENT, HELPER, "supervisor", "-l", "{l}", "-s", "15", "-g", "20000", "--",
        *write_target(path), stdin=subprocess.PIPE,
        env={**os.environ, "LEASHED_TEST_AS_JOB": "1"},
    ) as (parent, sup):  # fmt: skip
        target = ready_pid(path)
        os.kill(target, signal.SIGSTOP)
        assert poll_until(lambda: state(sup) == "T", 5.0)
        parent.kill()
        assert poll_until(lambda: path.read_text() == "term", 10)
        assert poll_until(lambda: not alive(sup) and not alive(target), 5.0)


@pytest.mark.parametrize("options", [[], ["-P"]], ids=["same-group", "own-group"])
def test_ctrl_z_stops_the_supervisor_like_its_target(options: list[str]) -> None:
    """A shell waiting on the supervisor sees the job stop; fg continues the target too."""
    assert HELPER is not None
    with python_script(
        SHELL, HELPER, "supervisor", *options, "--", "sleep", "sleep", "300",
        start_new_session=True,
    ) as (shell, sup):  # fmt: skip
        assert shell.stdout is not None
        target = target_of(sup)
        os.kill(target, signal.SIGTSTP)
        assert shell.stdout.readline().split() == ["stopped", str(int(signal.SIGTSTP))]
        assert state(sup) == "T" and state(target) == "T"
        os.kill(sup, signal.SIGCONT)
        assert shell.stdout.readline().split() == ["continued"]
        assert poll_until(lambda: state(target) == "S", 5.0)
        assert poll_until(lambda: state(sup) == "S", 5.0)  # briefly R while it relays the SIGCONT
        os.kill(sup, signal.SIGTERM)  # relayed: the target dies by it, and so does the job
        assert shell.stdout.readline().split() == ["exited", str(int(signal.SIGTERM))]


def test_a_stop_asked_on_the_control_socket_keeps_the_supervisor_answering(
    supervisors: list[Supervisor],
) -> None:
    sup = Supervisor(argv=["sleep", "sleep", "300"])
    supervisors.append(sup)
    target = target_of(sup.proc.pid)
    assert sup.request(SIGNAL_OP, signal.SIGSTOP) == 0
    assert poll_until(lambda: state(target) == "T", 5.0)
    time.sleep(0.2)
    assert state(sup.proc.pid) == "S"
    assert sup.request(SIGNAL_OP, 0) == 0
    assert sup.request(SIGNAL_OP, signal.SIGCONT) == 0
    assert poll_until(lambda: state(target) == "S", 5.0)


# ------------------------------------------------------------------ grace deadline


def test_guardian_grace_is_a_deadline_then_sigkill(marker: str) -> None:
    assert HELPER is not None
    life_read, life_write = lifeline()
    proc = subprocess.Popen(
        [HELPER, "guardian", "-l", str(life_read), "-s", "15", "-g", "1500", "--", *IGNORE_TERM],
        pass_fds=(life_read,),
    )
    os.close(life_read)
    try:
        assert poll_until(lambda: len(marked(marker)) == 2, 5.0)  # target + guardian
        (guardian,) = [p for p in marked(marker) if p != proc.pid]
        time.sleep(0.2)  # let sh exec sleep
        os.close(life_write)
        started = time.monotonic()
        time.sleep(0.3)
        ticks = cpu_ticks(guardian)
        time.sleep(0.9)
        assert cpu_ticks(guardian) - ticks <= 5, "the guardian spins during the grace"
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert 1.3 < time.monotonic() - started < 4
    finally:
        proc.kill()
        proc.wait()


def test_supervisor_grace_is_a_deadline_then_sigkill(
    marker: str, supervisors: list[Supervisor]
) -> None:
    sup = Supervisor("-s", "15", "-g", "1000", argv=IGNORE_TERM)
    supervisors.append(sup)
    target = target_of(sup.proc.pid)
    assert poll_until(lambda: Path(f"/proc/{target}/comm").read_text() == "sleep\n", 5.0)
    sup.close_lifeline()
    started = time.monotonic()
    assert sup.proc.wait(timeout=10) == 1
    assert 0.8 < time.monotonic() - started < 4
    assert marked(marker) == []


# ------------------------------------------------------------------ closed stdio


@pytest.mark.parametrize("mode", ["direct", "supervisor", "guardian"])
def test_a_parent_with_closed_stdio(tmp_path: Path, mode: str) -> None:
    """The helper's own fds stay above 2: the target starts with 0-2 still closed."""
    assert HELPER is not None
    listing = tmp_path / "fds"
    report_read, report_write = os.pipe()
    life_read, life_write = lifeline()
    options = {"direct": [], "guardian": ["-l", str(life_read)],
               "supervisor": ["-l", str(life_read), "-t"]}[mode]  # fmt: skip
    check = 'r=; for fd in 0 1 2; do [ -e /proc/$$/fd/$fd ] && r="$r $fd"; done'
    target = ["sh", "sh", "-c", f'{check}; echo "open:$r" > {listing}; exec sleep 300']
    proc = subprocess.Popen(
        ["sh", "-c", 'exec "$0" "$@" <&- >&- 2>&-', HELPER, mode, "-r", str(report_write),
         *options, "--", *target],
        pass_fds=(report_write, life_read),
    )  # fmt: skip
    os.close(report_write)
    os.close(life_read)
    try:
        assert read_all(report_read) == b""  # the target was executed
        assert poll_until(lambda: listing.exists() and listing.read_text().endswith("\n"), 5.0)
        assert listing.read_text() == "open:\n"
    finally:
        os.close(life_write)
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------ named control socket (-L)


def _connect(name: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect("\0" + name)
    return sock


def _ask(sock: socket.socket, op: int, value: int) -> bytes:
    sock.sendall(struct.pack("=ii", op, value))
    reply = b""
    while len(reply) < 4 and (part := sock.recv(4 - len(reply))):
        reply += part
    return reply


def test_a_listening_control_socket_answers_only_the_watched_process() -> None:
    """-L: the caller binds and listens (an abstract name, never in the helper's argv); the
    supervisor takes requests from the -w process (here: this test) only, and closes any
    other process's connection unanswered."""
    assert HELPER is not None
    name = f"leashed-test-{os.getpid()}-{time.monotonic_ns()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + name)
    listener.listen(8)
    cmd = [HELPER, "supervisor", "-w", str(os.getpid()), "-L", str(listener.fileno()), "--",
           "sleep", "sleep", "300"]  # fmt: skip
    proc = subprocess.Popen(cmd, pass_fds=(listener.fileno(),))
    listener.close()
    try:
        target = target_of(proc.pid)
        with _connect(name) as sock:
            assert _ask(sock, SIGNAL_OP, 0) == struct.pack("=i", 0)
        stranger = subprocess.run(
            [sys.executable, "-c",
             "import socket, struct, sys\n"
             "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(10)\n"
             f"s.connect('\\0{name}')\n"
             "try:\n"
             "    s.sendall(struct.pack('=ii', 1, 9)); sys.stdout.write(repr(s.recv(4)))\n"
             "except (BrokenPipeError, ConnectionResetError):\n"
             "    sys.stdout.write(repr(b''))\n"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert stranger.stdout == "b''", stranger  # closed, never answered
        assert alive(target) and proc.poll() is None  # the stranger's SIGKILL did nothing
        with _connect(name) as sock:  # one request per connection, as leashed.Popen does
            assert _ask(sock, SIGNAL_OP, signal.SIGKILL) == struct.pack("=i", 0)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert not alive(target)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
