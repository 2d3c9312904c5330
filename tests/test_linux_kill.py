"""The leash holds: after the parent's death, by any death, no leashed child survives."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import pytest
from support import Parent, alive, new_marker, wait_until_gone

import leashed

MECHANISMS = ["direct", "tree", "guardian"]


def _parent(code: str) -> Parent:
    return Parent(code, new_marker())


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_parent_sigkilled_at_rest(mechanism: str) -> None:
    parent = _parent(f"import parents; parents.at_rest({mechanism!r})")
    try:
        pids = [int(p) for p in parent.read_line().split()]
        assert len(pids) == 3 and all(alive(p) for p in pids)
        assert parent.killed_survivors(1.0) == []
    finally:
        parent.finish()


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_child_of_exited_thread_lives_then_dies_with_process(mechanism: str) -> None:
    parent = _parent(f"import parents; parents.from_exited_thread({mechanism!r})")
    try:
        pid, state = parent.read_line().split()
        assert state == "alive"
        time.sleep(0.2)
        assert alive(int(pid))
        assert parent.killed_survivors(1.0) == []
    finally:
        parent.finish()


@pytest.mark.slow
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_parent_sigkilled_during_spawn_storm(mechanism: str) -> None:
    trials = 200 if mechanism == "direct" else 50
    rng = random.Random(1234)
    for trial in range(trials):
        parent = _parent(f"import parents; parents.spawn_storm({mechanism!r})")
        try:
            assert parent.read_line() == "spawning"
            time.sleep(rng.uniform(0, 0.05))
            survivors = parent.killed_survivors(2.0)
            assert survivors == [], f"trial {trial}: survivors {survivors}"
        finally:
            parent.finish()


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("how", ["exit", "raise", "sigterm", "sigint"])
def test_parent_ends_by_itself(how: str, mechanism: str) -> None:
    parent = Parent(f"import parents; parents.ends_by({how!r}, {mechanism!r})", new_marker())
    try:
        pids = [int(p) for p in parent.read_line().split()]
        assert all(alive(p) for p in pids)
        parent.proc.wait(timeout=20)
        assert parent.proc.returncode != 0 or how == "exit"
        assert wait_until_gone(parent.marker, 1.0) == []
    finally:
        parent.finish()


def test_direct_child_keeps_pid_and_args() -> None:
    with leashed.Popen(["sh", "-c", "echo $$"], stdout=subprocess.PIPE) as proc:
        out, _ = proc.communicate()
    assert int(out) == proc.pid
    assert proc.args == ["sh", "-c", "echo $$"]


def test_spawns_from_many_threads_all_work() -> None:
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outs = list(
            pool.map(
                lambda i: (
                    leashed.run(
                        [sys.executable, "-c", f"print({i})"], capture_output=True, check=True
                    ).stdout
                ),
                range(40),
            )
        )
    assert outs == [f"{i}\n".encode() for i in range(40)]
