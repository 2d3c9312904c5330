"""The in-process spawn (leashed._inproc): the target exec'd in place by a vfork child that
armed the leash, with real parents SIGKILLed and real cgroups."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Parent, alive, wait_until_gone

import leashed
from leashed import _inproc_spawn, _seam

if not sys.platform.startswith("linux") or not _inproc_spawn.built():
    pytest.skip("leashed._inproc is built on Linux only", allow_module_level=True)

CGROUP_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))


@pytest.fixture(autouse=True)
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here runs the in-process path (no development override)."""
    monkeypatch.delenv("LEASHED_HELPER", raising=False)
    assert _inproc_spawn.direct_path() == _inproc_spawn.IN_PROCESS


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _children() -> set[str]:
    """This thread's unreaped children (the main thread's: the test's own spawns)."""
    return set(Path(f"/proc/self/task/{threading.get_native_id()}/children").read_text().split())


def test_pid_is_the_targets_and_no_helper_in_between() -> None:
    with leashed.Popen(["sh", "-c", "echo $$; exec sleep 5"], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        assert int(proc.stdout.readline()) == proc.pid
        time.sleep(0.05)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[:2] == [b"sleep", b"5"]
        proc.kill()


def test_errors_are_the_stdlibs(tmp_path: Path) -> None:
    before = _fds()
    missing = str(tmp_path / "no-such-program")
    for api in (subprocess, leashed):
        with pytest.raises(FileNotFoundError) as info:
            api.Popen([missing])
        assert info.value.filename == missing
        with pytest.raises(FileNotFoundError) as info:
            api.Popen(["true"], cwd=str(tmp_path / "no-such-dir"))
        assert info.value.filename == str(tmp_path / "no-such-dir")
        with pytest.raises(KeyError):
            api.Popen(["true"], user="leashed-no-such-user")
        with pytest.raises(PermissionError):
            api.Popen([str(tmp_path)])  # a directory: execve's EACCES, not noexec
    assert _fds() == before


def test_child_sees_only_its_fds_and_the_callers_mask() -> None:
    keep_r, keep_w = os.pipe()
    try:
        blocked = {signal.SIGUSR1}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            fds = leashed.check_output(["ls", "/proc/self/fd"], pass_fds=(keep_w,)).split()
            mask = leashed.check_output(["grep", "SigBlk", "/proc/self/status"]).split()[-1]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        assert {int(x) for x in fds} - {0, 1, 2, keep_w} <= {3}  # 3: ls's own directory fd
        assert keep_w in {int(x) for x in fds}
        assert int(mask, 16) == 1 << (signal.SIGUSR1 - 1)
    finally:
        os.close(keep_r)
        os.close(keep_w)


PARENT_MAIN = """
import leashed, time
p = leashed.Popen(["sleep", "300"], {options})
print(p.pid, flush=True)
time.sleep(300)
"""

PARENT_EXITED_THREAD = """
import leashed, threading, time
box = []
t = threading.Thread(target=lambda: box.append(leashed.Popen(["sleep", "300"])))
t.start(); t.join()
time.sleep(0.3)
print(box[0].pid, "alive" if box[0].poll() is None else "dead", flush=True)
time.sleep(300)
"""


def _dies_with_parent(code: str, marker: str) -> int:
    with Parent(code, marker) as parent:
        line = parent.read_line().split()
        pid = int(line[0])
        assert alive(pid)
        parent.kill()
        assert wait_until_gone(marker, timeout=5.0) == []
        return pid


def test_leash_armed_child_dies_with_the_parent(case_marker: str) -> None:
    _dies_with_parent(PARENT_MAIN.format(options=""), case_marker)


def test_leash_armed_after_user_change(case_marker: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing user needs root")
    code = PARENT_MAIN.format(options="user=65534, group=65534, extra_groups=[]")
    with Parent(code, case_marker) as parent:
        pid = int(parent.read_line())
        status = Path(f"/proc/{pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == ["65534"] * 4
        parent.kill()
        assert wait_until_gone(case_marker, timeout=5.0) == []


def test_child_of_an_exited_worker_thread_lives_until_the_parent_dies(case_marker: str) -> None:
    with Parent(PARENT_EXITED_THREAD, case_marker) as parent:
        pid, state = parent.read_line().split()
        assert state == "alive"
        time.sleep(0.3)
        assert alive(int(pid))
        parent.kill()
        assert wait_until_gone(case_marker, timeout=5.0) == []


PARENT_FORKS = """
import leashed, os, threading, time
from leashed import _inproc_spawn
leashed.Popen(["true"]).wait()
threading.Thread(target=lambda: leashed.Popen(["true"]).wait()).start()  # spawners start
time.sleep(0.2)
pid = os.fork()
if pid == 0:
    box = []
    main = leashed.Popen(["sleep", "300"])
    t = threading.Thread(target=lambda: box.append(leashed.Popen(["sleep", "300"])))
    t.start(); t.join()
    print(os.getpid(), main.pid, box[0].pid, _inproc_spawn.direct_path(), flush=True)
    time.sleep(300)
    os._exit(0)
time.sleep(300)
"""


def test_spawn_from_the_child_of_os_fork(case_marker: str) -> None:
    with Parent(PARENT_FORKS, case_marker) as parent:
        forked, main_child, thread_child, path = parent.read_line().split()
        assert path == "in-process"
        assert alive(int(main_child)) and alive(int(thread_child))
        os.kill(int(forked), signal.SIGKILL)  # the forked parent's own death ends both
        deadline = time.monotonic() + 5
        while (alive(int(main_child)) or alive(int(thread_child))) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(int(main_child)) and not alive(int(thread_child))


class _CgroupPopen(subprocess.Popen[bytes]):
    """subprocess.Popen whose child joins a cgroup through the in-process spawn, unleashed
    (death signal 0): the cgroup mechanism's own use of the extension."""

    cgroup_fd = -1

    def _execute_child(self, *args: Any, **kwargs: Any) -> None:
        call = _seam.bind(args, kwargs)
        _inproc_spawn.execute_child(self, call, 0, self.cgroup_fd)


@pytest.fixture()
def cgroup(case_marker: str) -> Iterator[Path]:
    root = next((r for r in CGROUP_ROOTS if (r / "cgroup.procs").exists()), None)
    if root is None or not (root / "cgroup.subtree_control").exists() or os.geteuid() != 0:
        pytest.skip("needs root and a cgroup v2 hierarchy")
    path = root / f"leashed-test-{case_marker}"
    path.mkdir()
    try:
        yield path
    finally:
        if path.exists() and (path / "cgroup.procs").read_text().split():
            (path / "cgroup.kill").write_text("1")  # by the kernel: no pid to be reused
        deadline = time.monotonic() + 5
        while path.exists():
            try:
                path.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)


def test_child_joins_the_cgroup_before_exec(cgroup: Path) -> None:
    fd = os.open(cgroup / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
    try:
        _CgroupPopen.cgroup_fd = fd
        with _CgroupPopen(["cat", "/proc/self/cgroup"], stdout=subprocess.PIPE) as proc:
            out, _ = proc.communicate()
        assert f"0::/{cgroup.name}\n" in out.decode()
        assert proc.returncode == 0
    finally:
        os.close(fd)


def test_a_failed_cgroup_join_is_an_oserror_and_nothing_runs(cgroup: Path) -> None:
    fd = os.open(cgroup / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
    before = _fds()
    try:
        cgroup.rmdir()  # the fd stays open; a write to it now fails
        _CgroupPopen.cgroup_fd = fd
        children = _children()
        with pytest.raises(OSError) as info:
            _CgroupPopen(["true"])
        assert info.value.errno in (errno.ENODEV, errno.ENOENT)
        assert _fds() == before
        assert _children() == children
    finally:
        os.close(fd)


def test_a_child_stuck_before_exec_does_not_hold_up_other_spawns() -> None:
    """A full pipe as the cgroup fd blocks a child in its write, before exec: its spawner
    thread waits in vfork; spawns of other threads still complete (another spawner)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        while True:
            try:
                os.write(write_end, b"x" * 65536)
            except BlockingIOError:
                break
        os.set_blocking(write_end, True)
        _CgroupPopen.cgroup_fd = write_end
        stuck: list[subprocess.Popen[bytes]] = []
        hung = [
            threading.Thread(target=lambda: stuck.append(_CgroupPopen(["true"]))) for _ in range(4)
        ]  # more than the spawner threads
        for t in hung:
            t.start()
        time.sleep(0.3)
        done: list[int] = []
        worker = threading.Thread(target=lambda: done.append(leashed.Popen(["true"]).wait()))
        worker.start()
        worker.join(timeout=10)
        assert done == [0], "a spawn waited behind children stuck before exec"
        while len(stuck) < len(hung):  # let the stuck children write and exec
            try:
                os.read(read_end, 65536)
            except BlockingIOError:
                pass
            time.sleep(0.01)
        for t in hung:
            t.join(timeout=10)
        assert [p.wait(timeout=10) for p in stuck] == [0] * len(hung)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_patched_subprocess_flags_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seam's built _execute_child is rebuilt when a subprocess global it reads changes."""
    seen: list[tuple[Any, ...]] = []
    real = _inproc_spawn._inproc
    assert real is not None

    class Recording:
        @staticmethod
        def fork_exec(*args: Any) -> int:
            seen.append(args)
            return int(real.fork_exec(*args))

        set_main_thread = real.set_main_thread

    monkeypatch.setattr(_inproc_spawn, "_inproc", Recording)
    _inproc_spawn._replacing.cache_clear()
    try:
        assert leashed.call(["true"]) == 0
        if hasattr(subprocess, "_USE_VFORK"):
            monkeypatch.setattr(subprocess, "_USE_VFORK", False)
            assert leashed.call(["true"]) == 0
            if len(seen[0]) == 2 + 23:  # 3.11-3.13: allow_vfork is the last argument
                assert seen[0][-1] is True and seen[1][-1] is False
        assert len(seen) >= 1
    finally:
        monkeypatch.undo()
        _inproc_spawn._replacing.cache_clear()


def test_bad_leash_arguments_are_refused_before_any_fork() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.set_inheritable(write_end, True)  # it would leak into the target
    try:
        module = _inproc_spawn._inproc
        assert module is not None
        for death_signal, fd in ((-1, -1), (signal.NSIG, -1), (0, write_end), (0, 999_999)):
            with pytest.raises(ValueError):  # checked before the fork_exec arguments
                module.fork_exec(death_signal, fd)
        with pytest.raises(TypeError):  # a valid leash, and no fork_exec arguments
            module.fork_exec(0, -1)
    finally:
        os.close(write_end)
