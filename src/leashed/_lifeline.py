"""The process-wide lifeline: one pipe whose write end only this process holds.

Supervisors and guardians get the read end. When this process dies by any death the
kernel closes the write end, so they read EOF: "the whole parent is gone", whatever
thread spawned them. Both ends are close-on-exec and above fd 2; a forked child
(multiprocessing) drops its copy of the write end at once and makes its own lifeline if
it spawns leashed children.

An application may close every fd (``os.closerange``) or reuse the numbers: before each
use the pair is checked to be still the same pipe (device, inode, and the two ends of one
pipe) and made anew if not.
"""

from __future__ import annotations

import fcntl
import os
import stat
import sys
import threading

from ._fds import pipe_above_stdio

assert sys.platform != "win32", "the lifeline is for the POSIX helper"  # for type checkers

_lock = threading.Lock()
#: (read fd, write fd, identity of the pipe) while we hold a lifeline.
_held: tuple[int, int, tuple[int, int]] | None = None
_inherited_read_fd: int | None = None
#: (fd, identity of its pipe): the pipe's first read end, kept open below the write end
#: only as a spacer (see _create).
_spacer: tuple[int, tuple[int, int]] | None = None


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    if not stat.S_ISFIFO(st.st_mode):
        return None
    return st.st_dev, st.st_ino


def _still_ours(held: tuple[int, int, tuple[int, int]]) -> bool:
    read_fd, write_fd, identity = held
    return _identity(read_fd) == identity and _identity(write_fd) == identity


def lifeline_read_fd() -> int:
    """The read end to pass to a helper; created on first use, re-created if lost."""
    global _held, _inherited_read_fd
    with _lock:
        if _held is not None and not _still_ours(_held):
            _held = None  # closed or replaced behind our back: the numbers are not ours now
        if _held is None:
            if _inherited_read_fd is not None:
                if _identity(_inherited_read_fd) is not None:
                    os.close(_inherited_read_fd)
                _inherited_read_fd = None
            _close_spacer()
            _held = _create()
        return _held[0]


def _create() -> tuple[int, int, tuple[int, int]]:
    """A new lifeline pipe, its read end passed to helpers laid out as [spacer][write][read].

    CPython's close_fds falls back from close_range() to reading /proc/self/fd in every
    child when two kept fds are adjacent or one is fd 3. Per-spawn fds come in pairs
    whose higher end is the kept one (report pipe, control socket, subprocess's errpipe),
    so the read end helpers inherit is put between fds that are never kept: the write
    end below it and, as fds are usually allocated, the lower end of a pair above it.
    """
    global _spacer
    read_fd, write_fd = pipe_above_stdio()
    identity = _identity(read_fd)
    assert identity is not None
    try:
        moved = fcntl.fcntl(read_fd, fcntl.F_DUPFD_CLOEXEC, write_fd + 1)
    except OSError:
        return read_fd, write_fd, identity  # no fd left for the layout: only slower
    _spacer = (read_fd, identity)
    return moved, write_fd, identity


def _close_spacer() -> None:
    """Close the spacer if the number still names our pipe (never an fd of someone else)."""
    global _spacer
    spacer, _spacer = _spacer, None
    if spacer is not None and _identity(spacer[0]) == spacer[1]:
        os.close(spacer[0])


def _forget_in_fork_child() -> None:
    # Only the write end is closed here: this hook also runs in subprocess's own child
    # before a preexec_fn, where the read end is about to be passed to a helper.
    global _held, _lock, _inherited_read_fd
    _lock = threading.Lock()
    if _held is not None:
        if _still_ours(_held):
            os.close(_held[1])
            _inherited_read_fd = _held[0]
        _held = None
    _close_spacer()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_fork_child)
