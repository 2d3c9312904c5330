"""Spawns from worker threads: forked on a long-lived thread, as the calling thread would.

A direct child's PR_SET_PDEATHSIG follows the thread that forked it, so leashed forks it
on a spawner thread that lives as long as the process; only the fork moves there. What
the child sees must still be what subprocess gives a child of the calling thread: its
signal mask, its errors; tests/test_linux_kill.py shows it survives the thread's exit.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import leashed

MASK_CODE = ["grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"]


def _in_thread(work: Callable[[], Any]) -> Any:
    box: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            box.append((True, work()))
        except BaseException as exc:
            box.append((False, exc))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    ok, value = box[0]
    if not ok:
        raise value
    return value


def _child_mask(api: Any, blocked: set[int], **kw: Any) -> bytes:
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    out: bytes = api.run(MASK_CODE, capture_output=True, check=True, **kw).stdout
    return out


def _mask_in_thread(api: Any, blocked: set[int], **kw: Any) -> bytes:
    out: bytes = _in_thread(lambda: _child_mask(api, blocked, **kw))
    return out


@pytest.mark.parametrize("kw", [{}, {"tree": True}], ids=["direct", "tree"])
def test_child_gets_the_calling_threads_mask(kw: dict[str, Any]) -> None:
    masks = [set(), {signal.SIGUSR1}, {signal.SIGUSR2, signal.SIGTERM}, set(), {signal.SIGUSR1}]
    for blocked in masks:  # the spawner keeps the last mask: a change must still reach it
        got = _mask_in_thread(leashed, blocked, **kw)
        assert got == _mask_in_thread(subprocess, blocked)
        assert (b"SigBlk:\t0000000000000000" in got) == (not blocked)


def test_threads_with_different_masks_at_once() -> None:
    choices = [set(), {signal.SIGUSR1}, {signal.SIGUSR2}, {signal.SIGUSR1, signal.SIGHUP}]
    expected = {i: _mask_in_thread(subprocess, blocked) for i, blocked in enumerate(choices)}
    results: dict[int, list[bytes]] = {i: [] for i in range(len(choices))}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(10):
                results[i].append(_child_mask(leashed, choices[i]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i % len(choices),)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i, outs in results.items():
        assert len(outs) == 20 and all(out == expected[i] for out in outs)


@pytest.mark.parametrize("kw", [{}, {"tree": True}], ids=["direct", "tree"])
def test_errors_from_a_worker_thread_are_subprocess_errors(kw: dict[str, Any]) -> None:
    def attempt(api: Any, **extra: Any) -> tuple[type, int | None, object]:
        try:
            api.Popen(["leashed-no-such-program-xyz"], **extra)
        except OSError as exc:
            return type(exc), exc.errno, exc.filename
        raise AssertionError("no error")

    expected = _in_thread(lambda: attempt(subprocess))
    assert _in_thread(lambda: attempt(leashed, **kw)) == expected
    # a failed spawn leaves the thread's hand-off to the spawner ready for the next one
    assert _in_thread(lambda: leashed.call(["true"], **kw)) == 0


@pytest.fixture()
def fork_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The name of the thread each fork_exec of subprocess ran on, through its own name."""
    names: list[str] = []

    def recording(original: Callable[..., int]) -> Callable[..., int]:
        def fork_exec(*args: Any) -> int:
            names.append(threading.current_thread().name)
            return original(*args)

        return fork_exec

    if hasattr(subprocess, "_fork_exec"):  # 3.11+
        monkeypatch.setattr(subprocess, "_fork_exec", recording(subprocess._fork_exec))
    else:  # 3.10: subprocess calls _posixsubprocess.fork_exec
        module = subprocess._posixsubprocess  # type: ignore[attr-defined]
        monkeypatch.setattr(
            subprocess,
            "_posixsubprocess",
            types.SimpleNamespace(fork_exec=recording(module.fork_exec)),
        )
    yield names


def test_only_direct_forks_of_worker_threads_move(fork_threads: list[str]) -> None:
    main = threading.current_thread().name
    assert leashed.call(["true"]) == 0
    assert _in_thread(lambda: leashed.call(["true"])) == 0
    worker = _in_thread(
        lambda: (leashed.call(["true"], tree=True), threading.current_thread().name)
    )
    assert fork_threads == [main, "leashed-spawner", worker[1]]
