"""watch_parent: a program whose parent is not Python ends when that parent dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support import CASE_VAR, alive, kill_marked, marked_env, new_marker, wait_until_gone

import leashed

WATCHER = textwrap.dedent(
    """
    import sys, time, leashed
    mode = sys.argv[1]
    if mode == "default":
        leashed.watch_parent()
    elif mode == "callback":
        def on_death():
            open(sys.argv[2], "w").write("parent died")
            __import__("os")._exit(7)
        leashed.watch_parent(on_death)
    elif mode == "stopped":
        leashed.watch_parent().stop()
    print("watching", flush=True)
    time.sleep(60)
    """
)


def _shell_parent(mode: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """A shell (not Python) that starts the watcher and waits; returns it and the marker."""
    marker = new_marker()
    env = marked_env(marker)
    cmd = " ".join([sys.executable, "-c", repr(WATCHER).replace("\\n", "\n"), mode, *extra])
    shell = subprocess.Popen(
        ["sh", "-c", f"{cmd} & wait"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert shell.stdout is not None
    assert shell.stdout.readline().strip() == "watching"
    return shell, marker


def _watcher_pid(marker: str, shell: subprocess.Popen[str]) -> int:
    from support import marked

    pids = [p for p in marked(marker) if p != shell.pid]
    assert len(pids) == 1
    return pids[0]


def _cleanup(shell: subprocess.Popen[str], marker: str) -> None:
    if shell.poll() is None:
        shell.kill()
    shell.wait()
    assert shell.stdout is not None
    shell.stdout.close()
    kill_marked(CASE_VAR, marker)


def test_default_action_exits_when_shell_parent_is_killed() -> None:
    shell, marker = _shell_parent("default")
    try:
        watcher = _watcher_pid(marker, shell)
        time.sleep(0.2)
        assert alive(watcher)
        os.kill(shell.pid, signal.SIGKILL)
        assert wait_until_gone(marker, 1.0) == []
    finally:
        _cleanup(shell, marker)


def test_callback_runs_instead(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    shell, marker = _shell_parent("callback", str(flag))
    try:
        os.kill(shell.pid, signal.SIGKILL)
        assert wait_until_gone(marker, 1.0) == []
        assert flag.read_text() == "parent died"
    finally:
        _cleanup(shell, marker)


def test_stopped_watch_does_nothing() -> None:
    shell, marker = _shell_parent("stopped")
    try:
        watcher = _watcher_pid(marker, shell)
        os.kill(shell.pid, signal.SIGKILL)
        time.sleep(0.5)
        assert alive(watcher), "a stopped watch must not end the process"
    finally:
        _cleanup(shell, marker)


def test_watch_reports_parent_and_method() -> None:
    watch = leashed.watch_parent(lambda: None)
    try:
        assert watch.parent_pid == os.getppid()
        assert watch.method == "pidfd"
        with pytest.deprecated_call():
            assert watch.mechanism == "pidfd"  # the old name, kept as a deprecated alias
    finally:
        watch.stop()
