"""File descriptors of ours: always above 0-2, always closed on every failure path."""

from __future__ import annotations

import os
import socket
import sys

if sys.platform != "win32":
    import fcntl

    def _dup_above_stdio(fd: int) -> int:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)

else:

    def _dup_above_stdio(fd: int) -> int:
        return fd


def above_stdio(fd: int) -> int:
    """``fd`` itself if >= 3, else a close-on-exec duplicate >= 3 (``fd`` is closed).

    A parent may run with 0-2 closed (daemons, some service managers); an fd of ours that
    lands there would be dup2'd over by the child's stdio.
    """
    if fd >= 3 or sys.platform == "win32":
        return fd
    try:
        return _dup_above_stdio(fd)
    finally:
        os.close(fd)


def pipe_above_stdio() -> tuple[int, int]:
    """A close-on-exec pipe whose two fds are >= 3; nothing leaks if that fails."""
    read_fd, write_fd = os.pipe()
    try:
        read_fd = above_stdio(read_fd)
    except BaseException:
        os.close(write_fd)
        raise
    try:
        write_fd = above_stdio(write_fd)
    except BaseException:
        os.close(read_fd)
        raise
    return read_fd, write_fd


def socketpair_above_stdio() -> tuple[socket.socket, int]:
    """(our end, the peer's fd), both >= 3 and close-on-exec."""
    ours, peer = socket.socketpair()
    try:
        if ours.fileno() < 3:
            moved = socket.socket(fileno=above_stdio(os.dup(ours.fileno())))
            ours.close()
            ours = moved
        return ours, above_stdio(peer.detach())
    except BaseException:
        ours.close()
        peer.close()
        raise


if sys.platform != "win32":

    def listener_above_stdio(address: str) -> int:
        """A close-on-exec AF_UNIX stream socket >= 3, bound to ``address`` and listening."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address)
            sock.listen(8)
            return above_stdio(sock.detach())
        except BaseException:
            sock.close()
            raise

else:

    def listener_above_stdio(address: str) -> int:
        """Windows leashes through job objects: no supervisor to listen for."""
        raise OSError(f"no AF_UNIX control socket on Windows ({address!r})")
