"""One long-lived thread that does the forks of direct-mode children for other threads.

Linux delivers PR_SET_PDEATHSIG when the *thread* that forked the child exits, not the
process (golang/go#27505). A child forked by a short-lived worker thread would die with
that thread. Forks from the main thread stay where they are; every other thread hands
its fork to this one thread, which lives as long as the process.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_jobs: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]] | None = None


def _serve(jobs: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]]) -> None:
    while True:
        job, result, done = jobs.get()
        try:
            result.append((True, job()))
        except BaseException as exc:
            result.append((False, exc))
        finally:
            done.set()
            del job, result, done


def _start() -> queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]]:
    global _jobs
    with _lock:
        if _jobs is None:
            jobs: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]]
            jobs = queue.SimpleQueue()
            thread = threading.Thread(
                target=_serve, args=(jobs,), name="leashed-spawner", daemon=True
            )
            thread.start()
            _jobs = jobs
        return _jobs


def on_long_lived_thread(job: Callable[[], T]) -> T:
    """Run ``job`` on a thread that lives as long as the process; return or raise its result."""
    if threading.current_thread() is threading.main_thread():
        return job()
    jobs = _start()
    result: list[Any] = []
    done = threading.Event()
    jobs.put((job, result, done))
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
