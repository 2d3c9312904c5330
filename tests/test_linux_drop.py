"""Dropping a Popen: by default the child keeps running, as with subprocess, and still
dies with the parent; with kill_on_drop=True it ends at the drop."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import time

import pytest
from support import (
    Parent,
    alive,
    marked,
    named,
    new_marker,
    wait_for_named,
    wait_pid_gone,
    wait_until_gone,
)

import leashed


@pytest.mark.parametrize(
    "options",
    [{}, {"mechanism": "guardian"}, {"tree": True}],
    ids=["direct", "guardian", "tree"],
)
def test_dropped_popen_ends_its_child(options: dict[str, object], case_marker: str) -> None:
    proc = leashed.Popen(
        ["sh", "-c", "sleep 300 & exec sleep 300"],
        kill_on_drop=True,
        **options,  # type: ignore[arg-type]
    )
    wait_for_named(case_marker, "sleep", 2, 5.0)
    target = proc.pid
    del proc
    gc.collect()
    if options.get("tree"):
        assert wait_until_gone(case_marker, 2.0) == []  # the whole tree
    else:
        assert wait_pid_gone(target, 2.0)


def test_drop_uses_death_signal_and_grace(case_marker: str, tmp_path: object) -> None:
    proc = leashed.Popen(
        ["sh", "-c", "trap 'echo term; exit 0' TERM; sleep 300 & wait"],
        kill_on_drop=True,
        tree=True,
        mechanism="supervisor",  # the cgroup mechanism's drop: tests/test_linux_cgroup.py
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


DROPPING_PARENT = """
import gc, sys, warnings
import leashed
options = {options!r}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    # Only the tree mode promises the grandchild.
    script = "sleep 300 & exec sleep 300" if options.get("tree") else "exec sleep 300"
    proc = leashed.Popen(["sh", "-c", script], **options)
    assert proc.kill_on_drop is False
    pid = proc.pid
    del proc
    gc.collect()
print(pid, any(issubclass(w.category, ResourceWarning) for w in caught), flush=True)
import time; time.sleep(300)
"""


@pytest.mark.parametrize(
    "options",
    [{}, {"mechanism": "guardian"}, {"tree": True}],
    ids=["direct", "guardian", "tree"],
)
def test_dropped_popen_keeps_its_child_as_subprocess_does(options: dict[str, object]) -> None:
    """The fire-and-forget pattern: the child lives on, subprocess's ResourceWarning is
    emitted, and the child (the whole tree with tree=True) still dies with the parent."""
    marker = new_marker()
    parent = Parent(DROPPING_PARENT.format(options=options), marker)
    try:
        pid, warned = parent.read_line().split()
        assert warned == "True"
        sleeps = 2 if options.get("tree") else 1
        assert len(wait_for_named(marker, "sleep", sleeps, 5.0)) == sleeps
        time.sleep(1.0)
        assert alive(int(pid)) and len(named(marked(marker), "sleep")) == sleeps
        parent.kill()
        assert wait_until_gone(marker, 2.0) == []
    finally:
        parent.finish()


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
