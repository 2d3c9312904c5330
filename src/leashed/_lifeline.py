"""The process-wide lifeline: one pipe whose write end only this process holds.

Supervisors and guardians get the read end. When this process dies by any death the
kernel closes the write end, so they read EOF: "the whole parent is gone", whatever
thread spawned them. Both ends are close-on-exec; a forked child (multiprocessing)
drops its copy of the write end at once and makes its own lifeline if it spawns leashed
children.
"""

from __future__ import annotations

import os
import threading

from ._helper import open_pipe_above_stdio

_lock = threading.Lock()
_fds: tuple[int, int] | None = None
_inherited_read_fd: int | None = None


def lifeline_read_fd() -> int:
    """The read end to pass to a helper; created on first use."""
    global _fds, _inherited_read_fd
    with _lock:
        if _fds is None:
            if _inherited_read_fd is not None:
                os.close(_inherited_read_fd)
                _inherited_read_fd = None
            _fds = open_pipe_above_stdio()
        return _fds[0]


def _forget_in_fork_child() -> None:
    # Only the write end is closed here: this hook also runs in subprocess's own child
    # before a preexec_fn, where the read end is about to be passed to a helper.
    global _fds, _lock, _inherited_read_fd
    _lock = threading.Lock()
    if _fds is not None:
        os.close(_fds[1])
        _inherited_read_fd = _fds[0]
        _fds = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_fork_child)
