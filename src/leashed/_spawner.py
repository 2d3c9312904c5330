"""One long-lived thread that does the forks of direct-mode children for other threads.

Linux delivers PR_SET_PDEATHSIG when the *thread* that forked the child exits, not the
process (golang/go#27505). A child forked by a short-lived worker thread would die with
that thread. Forks from the main thread stay where they are; every other thread hands
its fork to this one thread, which lives as long as the process. The fork runs with the
calling thread's signal mask, so the child gets the mask subprocess would have given it.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Callable[[], Any], "set[int] | None", list[Any], threading.Event]

_lock = threading.Lock()
_jobs: queue.SimpleQueue[_Job] | None = None


def _caller_mask() -> set[int] | None:
    if sys.platform == "win32":
        return None
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, ()))


def _run_with_mask(job: Callable[[], Any], mask: set[int] | None) -> Any:
    if mask is None or sys.platform == "win32":
        return job()
    own = signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    try:
        return job()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, own)


def _serve(jobs: queue.SimpleQueue[_Job]) -> None:
    while True:
        job, mask, result, done = jobs.get()
        try:
            result.append((True, _run_with_mask(job, mask)))
        except BaseException as exc:
            result.append((False, exc))
        finally:
            done.set()
            del job, result, done


def _start() -> queue.SimpleQueue[_Job]:
    global _jobs
    with _lock:
        if _jobs is None:
            jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
            thread = threading.Thread(
                target=_serve, args=(jobs,), name="leashed-spawner", daemon=True
            )
            thread.start()
            _jobs = jobs
        return _jobs


def on_long_lived_thread(job: Callable[[], T]) -> T:
    """Run ``job`` on a thread that lives as long as the process, with this thread's
    signal mask; return or raise its result."""
    if threading.current_thread() is threading.main_thread():
        return job()
    jobs = _start()
    mask = _caller_mask()
    result: list[Any] = []
    done = threading.Event()
    jobs.put((job, mask, result, done))
    done.wait()
    ok, value = result[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


def _forget_in_fork_child() -> None:
    global _jobs, _lock
    _jobs = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_fork_child)
