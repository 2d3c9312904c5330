"""watch_parent's waiter on macOS and the BSDs: kqueue EVFILT_PROC / NOTE_EXIT on the parent."""

from __future__ import annotations

import os
import select
from collections.abc import Callable

__all__ = ["open_parent_wait"]


def open_parent_wait(stop_fd: int) -> tuple[int, Callable[[], bool], str]:
    """(parent pid, wait, method): ``wait()`` blocks until the parent exits (True) or
    ``stop_fd`` is readable (False). The registration names the process itself."""
    parent = os.getppid()
    kq = select.kqueue()  # type: ignore[attr-defined,unused-ignore]
    try:
        kq.control(
            [
                select.kevent(  # type: ignore[attr-defined,unused-ignore]
                    parent,
                    filter=select.KQ_FILTER_PROC,  # type: ignore[attr-defined,unused-ignore]
                    flags=select.KQ_EV_ADD,  # type: ignore[attr-defined,unused-ignore]
                    fflags=select.KQ_NOTE_EXIT,  # type: ignore[attr-defined,unused-ignore]
                ),
                select.kevent(  # type: ignore[attr-defined,unused-ignore]
                    stop_fd,
                    filter=select.KQ_FILTER_READ,  # type: ignore[attr-defined,unused-ignore]
                    flags=select.KQ_EV_ADD,  # type: ignore[attr-defined,unused-ignore]
                ),
            ],
            0,
            0,
        )
    except OSError:
        kq.close()
        raise ProcessLookupError(f"parent process {parent} has already exited") from None
    if os.getppid() != parent:
        kq.close()
        raise ProcessLookupError(f"parent process {parent} has already exited")

    def wait() -> bool:
        try:
            events = kq.control(None, 1)
            return bool(events) and events[0].ident == parent
        finally:
            kq.close()

    return parent, wait, "kqueue"
