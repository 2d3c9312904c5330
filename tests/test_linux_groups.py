"""Process groups: a SIGKILL of the parent's whole group still ends the tree, and a signal
sent to the whole group reaches a supervised target exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from support import marked, wait_for_count, wait_until_gone

import leashed

#: Background grandchildren, a setsid'd one and a double-forked daemon.
TREE = "sleep 300 & (setsid sleep 301 &); (sh -c 'sleep 302 &' &); exec sleep 303"

GROUP_PARENT = textwrap.dedent(
    """
    import sys, time, leashed
    options = eval(sys.argv[1])
    procs = [leashed.Popen(["sh", "-c", sys.argv[2]], **options) for _ in range(2)]
    print("ready", flush=True)
    time.sleep(300)
    """
)


_NO_CGROUP = pytest.mark.skipif(
    not leashed.capabilities()["mechanisms"]["cgroup"]["available"],
    reason="no writable cgroup v2 hierarchy here",
)


@pytest.mark.parametrize(
    "options",
    [
        {"tree": True, "mechanism": "supervisor"},
        {"tree": True, "grace": 1.0, "mechanism": "supervisor"},
        pytest.param({"tree": True, "mechanism": "cgroup"}, marks=_NO_CGROUP),
        pytest.param({"tree": True, "grace": 1.0, "mechanism": "cgroup"}, marks=_NO_CGROUP),
    ],
    ids=["tree", "tree-grace", "cgroup", "cgroup-grace"],
)
def test_sigkill_of_the_parents_whole_group_ends_the_tree(
    options: dict[str, Any], case_marker: str
) -> None:
    """kill -9 -PGID, as a terminal closing a job or a CI runner ending a job's group."""
    parent = subprocess.Popen(
        [sys.executable, "-c", GROUP_PARENT, repr(options), TREE],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
        # the parent; per tree: the front, the supervisor (not with the cgroup mechanism)
        # and four sleeps (sh became sleep 303, sleep 300, the setsid'd sleep 301, the
        # daemon's sleep 302)
        count = 1 + 2 * (4 + 2 * (options["mechanism"] == "supervisor"))
        assert len(wait_for_count(case_marker, count)) >= count, marked(case_marker)
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
        assert wait_until_gone(case_marker, 5.0) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


COUNTER = textwrap.dedent(
    """
    import signal, sys, time
    seen = []
    signal.signal(signal.SIGINT, lambda *a: seen.append(1))
    print("ready", flush=True)
    time.sleep(1.0)
    print(len(seen), flush=True)
    """
)


GROUP_SIGNAL_PARENT = textwrap.dedent(
    """
    import os, signal, subprocess, sys, leashed
    COUNTER = sys.argv[2]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent is in the group too
    proc = leashed.Popen([sys.executable, "-c", COUNTER], stdout=subprocess.PIPE, text=True,
                         **eval(sys.argv[1]))
    assert proc.stdout.readline().strip() == "ready"
    os.killpg(0, signal.SIGINT)
    print(proc.stdout.readline().strip(), flush=True)
    proc.wait()
    """
)


@pytest.mark.parametrize(
    "options", [{}, {"tree": True}, {"grace": 5.0}, {"mechanism": "guardian"}],
    ids=["direct", "tree", "grace", "guardian"],
)  # fmt: skip
def test_a_signal_to_the_callers_group_reaches_the_target_once(
    options: dict[str, Any], case_marker: str
) -> None:
    """os.killpg / kill -INT 0 / trap 'kill 0' EXIT: once, as without leashed."""
    counts = []
    for _ in range(3):
        result = subprocess.run(
            [sys.executable, "-c", GROUP_SIGNAL_PARENT, repr(options), COUNTER],
            capture_output=True, text=True, timeout=60, start_new_session=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        counts.append(int(result.stdout.strip()))
    assert counts == [1, 1, 1]
    assert wait_until_gone(case_marker, 2.0) == []
