"""leashed.watch_parent: end this process when the process that started it dies."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable

from ._platform import open_parent_wait

#: Exit status of a process ended by watch_parent's default action.
EXIT_PARENT_DIED = 1


class ParentWatch:
    """A running watch on this process's parent; ``stop()`` ends the watch, not the process.

    ``method`` says how the parent is watched: "pidfd" (Linux), "kqueue" (macOS, BSD),
    "process handle" (Windows), or getppid() polling on Linux kernels without pidfd_open.
    """

    def __init__(self, parent_pid: int, method: str, thread: threading.Thread, stop_fd: int):
        self.parent_pid = parent_pid
        self.method = method
        self._thread = thread
        self._stop_fd = stop_fd

    @property
    def mechanism(self) -> str:
        """Deprecated name of ``method`` (a leash's mechanism is another thing)."""
        warnings.warn(
            "ParentWatch.mechanism is deprecated; use ParentWatch.method",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.method

    def stop(self) -> None:
        """Stop watching; the callback will not run."""
        if self._stop_fd >= 0:
            os.write(self._stop_fd, b"x")
            self._thread.join()
            os.close(self._stop_fd)
            self._stop_fd = -1

    def __repr__(self) -> str:
        return f"<ParentWatch parent_pid={self.parent_pid} method={self.method}>"


def _default_on_death() -> None:
    os._exit(EXIT_PARENT_DIED)


def watch_parent(on_death: Callable[[], object] | None = None) -> ParentWatch:
    """Watch the parent process (not thread) of this process and act when it dies.

    For a program started by a parent it does not control (Node, Rust, a shell). By
    default the process ends at once with ``os._exit(1)`` so nothing keeps running after
    its parent; give ``on_death`` for a graceful exit instead (it runs on the watcher
    thread). Linux uses a pidfd, macOS/BSD kqueue, Windows a process handle: each names
    the parent process itself, so a reused pid is never mistaken for it. Raises
    ProcessLookupError if the parent is already gone.
    """
    action: Callable[[], object] = on_death if on_death is not None else _default_on_death
    stop_read, stop_write = os.pipe()
    try:
        parent, waiter, method = open_parent_wait(stop_read)
    except BaseException:
        os.close(stop_read)
        os.close(stop_write)
        raise

    def run() -> None:
        try:
            died = waiter()
        finally:
            os.close(stop_read)
        if died:
            action()

    thread = threading.Thread(target=run, name="leashed-watch-parent", daemon=True)
    thread.start()
    return ParentWatch(parent, method, thread, stop_write)
