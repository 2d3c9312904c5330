"""kill_on_drop: a Popen object garbage-collected while its child runs ends the child."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import time

import pytest
from support import CASE_VAR, alive, kill_marked, marked, named, new_marker, wait_until_gone

import leashed


@pytest.fixture()
def case_marker(monkeypatch: pytest.MonkeyPatch) -> object:
    marker = new_marker()
    monkeypatch.setenv(CASE_VAR, marker)
    yield marker
    kill_marked(CASE_VAR, marker)


@pytest.mark.parametrize(
    "options",
    [{}, {"mechanism": "guardian"}, {"tree": True}],
    ids=["direct", "guardian", "tree"],
)
def test_dropped_popen_ends_its_child(options: dict[str, object], case_marker: str) -> None:
    proc = leashed.Popen(["sh", "-c", "sleep 300 & exec sleep 300"], **options)  # type: ignore[arg-type]
    deadline = time.monotonic() + 5
    while len(named(marked(case_marker), "sleep")) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    target = proc.pid
    del proc
    gc.collect()
    if options.get("tree"):
        assert wait_until_gone(case_marker, 2.0) == []  # the whole tree
    else:
        assert wait_until_gone_pid(target, 2.0)


def wait_until_gone_pid(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_drop_uses_death_signal_and_grace(case_marker: str, tmp_path: object) -> None:
    proc = leashed.Popen(
        ["sh", "-c", "trap 'echo term; exit 0' TERM; sleep 300 & wait"],
        tree=True,
        grace=5.0,
        death_signal=signal.SIGTERM,
        stdout=open(os.path.join(str(tmp_path), "out"), "w"),
    )
    time.sleep(0.3)
    proc.drop()
    assert proc.wait(timeout=10) == 1  # the supervisor's status after a parent-like death
    assert wait_until_gone(case_marker, 2.0) == []
    with open(os.path.join(str(tmp_path), "out")) as out:
        assert out.read() == "term\n"


def test_kill_on_drop_false_keeps_the_child(case_marker: str) -> None:
    proc = leashed.Popen(["sleep", "300"], kill_on_drop=False)
    pid = proc.pid
    assert proc.kill_on_drop is False
    del proc
    gc.collect()
    time.sleep(0.2)
    assert alive(pid)
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):  # subprocess may have reaped it already
        os.waitpid(pid, 0)
