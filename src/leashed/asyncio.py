"""asyncio's create_subprocess_exec / create_subprocess_shell, with leashed children.

The child is started by :class:`leashed.Popen` (so it gets every guarantee of the sync
API, also from a loop that runs in a short-lived thread), then its pipes are handed to
the running loop through public loop APIs only (``connect_read_pipe``,
``connect_write_pipe``, ``add_reader``), so it works with any loop, uvloop included.
Exit is noticed with a pidfd on Linux, else by a daemon thread; the loop never blocks.

On Windows the ProactorEventLoop needs overlapped pipes that only asyncio itself creates:
there the child is asyncio's own, created suspended and put in leashed's kill-on-close job
before it runs (asyncio's Process is returned; kill_on_drop does not apply).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import weakref
from asyncio import base_subprocess, streams
from collections.abc import Callable
from typing import IO, Any

import leashed

from . import _platform
from ._plan import SIGKILL, LeashOptions
from ._platform import IS_WINDOWS, plan_for_popen
from ._popen import Popen

__all__ = [
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "Process",
    "create_subprocess_exec",
    "create_subprocess_shell",
]

PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT
DEVNULL = subprocess.DEVNULL

#: asyncio.streams' default buffer limit (64 KiB), the default of ``limit=``.
_DEFAULT_LIMIT = 2**16
_TRANSPORT = base_subprocess.BaseSubprocessTransport
#: From 3.11 on, asyncio's wait() also waits for the pipes to close (gh-88050), until
#: gh-119710 (3.14.7+, 3.15) made it return at the child's exit again. Read off the running
#: asyncio, not its version number, so a backport is followed too.
_WAIT_FOR_PIPES = (
    sys.version_info >= (3, 11)
    and "_exit_waiters" not in _TRANSPORT._process_exited.__code__.co_names
)
#: gh-127049: once the exit status is known, send_signal() is silently ignored.
_SIGNAL_AFTER_EXIT_IS_SILENT = "_returncode" in _TRANSPORT.send_signal.__code__.co_names
#: os.pidfd_open where the platform has it (Linux >= 5.3); tests may clear it.
_pidfd_open = getattr(os, "pidfd_open", None)


async def create_subprocess_exec(
    program: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    *args: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    stdin: int | IO[Any] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    limit: int = _DEFAULT_LIMIT,
    **kwds: Any,
) -> Process:
    """As asyncio.create_subprocess_exec; also takes leashed.Popen's leash options."""
    _check_options(kwds, shell=False)
    return await _create((program, *args), False, stdin, stdout, stderr, limit, kwds)


async def create_subprocess_shell(
    cmd: str | bytes,
    stdin: int | IO[Any] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    limit: int = _DEFAULT_LIMIT,
    **kwds: Any,
) -> Process:
    """As asyncio.create_subprocess_shell; also takes leashed.Popen's leash options."""
    if not isinstance(cmd, (bytes, str)):
        raise ValueError("cmd must be a string")
    _check_options(kwds, shell=True)
    return await _create(cmd, True, stdin, stdout, stderr, limit, kwds)


def _check_options(kwds: dict[str, Any], *, shell: bool) -> None:
    """The checks of asyncio's BaseEventLoop.subprocess_exec/_shell, same order and messages."""
    if kwds.pop("universal_newlines", False):
        raise ValueError("universal_newlines must be False")
    if bool(kwds.pop("shell", shell)) is not shell:
        raise ValueError(f"shell must be {shell}")
    if kwds.pop("bufsize", 0) != 0:
        raise ValueError("bufsize must be 0")
    if kwds.pop("text", None):
        raise ValueError("text must be False")
    if kwds.pop("encoding", None) is not None:
        raise ValueError("encoding must be None")
    if kwds.pop("errors", None) is not None:
        raise ValueError("errors must be None")


async def _create(
    args: Any,
    shell: bool,
    stdin: int | IO[Any] | None,
    stdout: int | IO[Any] | None,
    stderr: int | IO[Any] | None,
    limit: int,
    kwds: dict[str, Any],
) -> Process:
    # asyncio's own transport kills a child that still runs when it is closed: the same
    # default here (leashed.Popen's is subprocess's: keep running).
    kwds.setdefault("kill_on_drop", True)
    if IS_WINDOWS:
        return await _create_windows(args, shell, stdin, stdout, stderr, limit, kwds)
    loop = asyncio.get_running_loop()
    # Built before the spawn, so a bad limit raises before any child exists.
    readers = [
        asyncio.StreamReader(limit=limit, loop=loop) if stream == PIPE else None
        for stream in (stdout, stderr)
    ]
    # Looked up at call time, so a test that patches leashed.Popen intercepts this too.
    popen: Popen[bytes] = leashed.Popen(
        args, shell=shell, stdin=stdin, stdout=stdout, stderr=stderr, bufsize=0, **kwds
    )
    ends = [_PipeEnd.take(f) for f in (popen.stdin, popen.stdout, popen.stderr)]
    popen.stdin = popen.stdout = popen.stderr = None
    state = _State(loop, reads=sum(end is not None for end in ends[1:]), stdin=ends[0] is not None)
    transports: list[asyncio.BaseTransport] = []
    writer = None
    try:
        if ends[0] is not None:
            transport, protocol = await loop.connect_write_pipe(
                lambda: _StdinProtocol(loop, state), ends[0]
            )
            transports.append(transport)
            state.stdin_transport = transport
            writer = asyncio.StreamWriter(transport, protocol, None, loop)
        for end, reader in zip(ends[1:], readers, strict=True):
            if end is not None and reader is not None:
                read_transport, _ = await loop.connect_read_pipe(
                    _ReadProtocol.factory(reader, loop, state), end
                )
                transports.append(read_transport)
        _watch_exit(loop, popen, state)
    except BaseException:
        for made in transports:
            made.close()
        for end in ends:
            if end is not None:
                end.close()
        popen.kill()
        popen.wait()
        raise
    return Process(popen, state, writer, readers[0], readers[1], transports)


async def _create_windows(
    args: Any,
    shell: bool,
    stdin: int | IO[Any] | None,
    stdout: int | IO[Any] | None,
    stderr: int | IO[Any] | None,
    limit: int,
    kwds: dict[str, Any],
) -> Process:
    """asyncio's own process (ProactorEventLoop pipes), created suspended, put in the job.

    The child runs no instruction before it is in the kill-on-close job; if it cannot be
    assigned it is terminated and the error raised. Returns asyncio's own Process.
    """
    plan_for_popen(**LeashOptions.take(kwds))
    requested = kwds.pop("creationflags", 0)
    kwds["creationflags"] = _platform.BACKEND.prepare_creationflags(requested)
    streams: dict[str, Any] = {"stdin": stdin, "stdout": stdout, "stderr": stderr, "limit": limit}
    if shell:
        proc = await asyncio.create_subprocess_shell(args, **streams, **kwds)
    else:
        program, *rest = args
        proc = await asyncio.create_subprocess_exec(program, *rest, **streams, **kwds)
    popen = proc._transport.get_extra_info("subprocess")  # type: ignore[attr-defined]
    try:
        popen.leashed_job = _platform.BACKEND.after_spawn(popen, requested)
    except BaseException:
        await proc.wait()
        raise
    return proc  # type: ignore[return-value]


class Process(asyncio.subprocess.Process):
    """asyncio.subprocess.Process over a leashed.Popen (an instance of asyncio's class).

    Dropping it while the child runs ends the child as if this process had died, unless
    ``kill_on_drop=False``; nothing else (loop, watcher) keeps it alive.
    """

    def __init__(
        self,
        popen: Popen[bytes],
        state: _State,
        stdin: asyncio.StreamWriter | None,
        stdout: asyncio.StreamReader | None,
        stderr: asyncio.StreamReader | None,
        transports: list[asyncio.BaseTransport],
    ) -> None:
        # asyncio's __init__ wants an asyncio transport; every method is overridden here.
        self._popen = popen
        self._state = state
        self._transports = transports
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.pid = popen.pid

    @property
    def returncode(self) -> int | None:
        """None while the child runs (as the loop last saw it), then its exit status."""
        return self._state.returncode

    @property
    def mechanism(self) -> str:
        """The mechanism that leashes this child, as leashed.Popen.mechanism."""
        return self._popen.mechanism

    async def wait(self) -> int:
        """Wait until the process exits (and, from 3.11, its pipes close, as asyncio does)."""
        return await self._state.wait()

    def send_signal(self, signal: int) -> None:
        """Send ``signal``; ProcessLookupError once the process is finished, as asyncio."""
        if self._state.finished:
            raise ProcessLookupError()
        if _SIGNAL_AFTER_EXIT_IS_SILENT and self._state.returncode is not None:
            return
        self._popen.send_signal(signal)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(SIGKILL)

    async def communicate(
        self, input: bytes | bytearray | memoryview | None = None
    ) -> tuple[bytes, bytes]:
        """Feed ``input``, read stdout and stderr to EOF, all at once, then wait()."""
        _, out, err = await asyncio.gather(
            self._feed(input), self._drain(self.stdout), self._drain(self.stderr)
        )
        await self.wait()
        return out, err  # None for a stream that is not a pipe, as asyncio's

    async def _feed(self, input: bytes | bytearray | memoryview | None) -> None:
        stdin = self.stdin
        if stdin is None:
            return
        try:
            if input is not None:
                stdin.write(input)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child stopped reading; asyncio's communicate() ignores it too
        stdin.close()

    @staticmethod
    async def _drain(stream: asyncio.StreamReader | None) -> Any:
        return None if stream is None else await stream.read()

    def __del__(self) -> None:
        popen: Popen[bytes] | None = self.__dict__.get("_popen")
        state: _State | None = self.__dict__.get("_state")
        if popen is None or state is None or state.returncode is not None:
            return
        if not popen.kill_on_drop:
            return
        try:
            popen.drop()
            # Nobody reads or writes them any more; close them now if on the loop's thread.
            if asyncio._get_running_loop() is state.loop:
                for transport in self.__dict__.get("_transports", ()):
                    transport.close()
        except Exception:
            pass


class _State:
    """Exit status and open pipes of one child, shared by its Process, protocols and watcher.

    It never refers to the Process, so the Process can be dropped while the child runs.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, reads: int, stdin: bool) -> None:
        self.loop = loop
        self.returncode: int | None = None
        self.open_pipes = reads + stdin
        self.open_read_pipes = reads
        self.stdin_transport: asyncio.BaseTransport | None = None
        self.finished = False
        self._waiters: list[asyncio.Future[int]] = []

    def pipe_closed(self, *, stdin: bool) -> None:
        self.open_pipes -= 1
        if not stdin:
            self.open_read_pipes -= 1
        self._update()

    def exited(self, returncode: int) -> None:
        self.returncode = returncode
        self._update()

    async def wait(self) -> int:
        if self.returncode is not None:
            return self.returncode
        waiter: asyncio.Future[int] = self.loop.create_future()
        self._waiters.append(waiter)
        return await waiter

    def _update(self) -> None:
        """asyncio's rules: once exited and stdout/stderr closed, close stdin; wake waiters
        at exit (3.10) or when every pipe is closed too (3.11+)."""
        if self.returncode is None:
            return
        if self.open_read_pipes == 0 and self.stdin_transport is not None:
            self.stdin_transport.close()
        if self.open_pipes == 0:
            self.finished = True
        if self.finished or not _WAIT_FOR_PIPES:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(self.returncode)


class _StdinProtocol(streams.FlowControlMixin):
    """Flow control for the stdin StreamWriter (drain) and its wait_closed() future."""

    def __init__(self, loop: asyncio.AbstractEventLoop, state: _State) -> None:
        super().__init__(loop=loop)
        self._state = state
        self._closed: asyncio.Future[None] = loop.create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if exc is None:
            self._closed.set_result(None)
        else:
            self._closed.set_exception(exc)
            self._closed.exception()  # wait_closed() is optional: never log it as unretrieved
        self._state.pipe_closed(stdin=True)

    def _get_close_waiter(self, stream: object) -> asyncio.Future[None]:
        return self._closed


class _ReadProtocol(asyncio.StreamReaderProtocol):
    """Feeds one StreamReader (stdout or stderr) and reports the pipe's closing."""

    def __init__(
        self, reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop, state: _State
    ) -> None:
        super().__init__(reader, loop=loop)
        self._state = state

    @classmethod
    def factory(
        cls, reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop, state: _State
    ) -> Callable[[], _ReadProtocol]:
        return lambda: cls(reader, loop, state)

    def eof_received(self) -> bool:
        """Feed EOF, then let the transport close: uvloop keeps it open on a True here."""
        super().eof_received()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._state.pipe_closed(stdin=False)


class _PipeEnd:
    """Our end of one child pipe, owned by the loop transport it is handed to.

    asyncio's transports close it through close(); uvloop's close the fd in libuv and
    then call close() again, which must not hit a number another thread reused meanwhile:
    close() only closes an fd that still names this pipe.
    """

    def __init__(self, fd: int) -> None:
        if sys.platform != "win32":  # Windows never gets here: it uses asyncio's own pipes
            os.set_blocking(fd, False)
        st = os.fstat(fd)
        self._fd = fd
        self._identity = (st.st_dev, st.st_ino)

    @classmethod
    def take(cls, file: IO[bytes] | None) -> _PipeEnd | None:
        """Move ``file``'s fd out of the Popen's file object, which is then closed."""
        if file is None:
            return None
        try:
            return cls(os.dup(file.fileno()))  # os.dup: non-inheritable
        finally:
            file.close()

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("I/O operation on closed pipe")
        return self._fd

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        try:
            st = os.fstat(fd)
        except OSError:
            return  # the loop closed it already
        if (st.st_dev, st.st_ino) == self._identity:
            os.close(fd)


def _watch_exit(loop: asyncio.AbstractEventLoop, popen: Popen[bytes], state: _State) -> None:
    """Reap the child and report its status on the loop, without ever blocking the loop."""
    if _pidfd_open is not None:
        try:
            pidfd = _pidfd_open(popen.pid)
        except OSError:
            pass
        else:
            try:
                _PidfdWatch(loop, popen, state, pidfd)
                return
            except NotImplementedError:  # a loop without add_reader
                os.close(pidfd)

    def wait_in_thread() -> None:
        returncode = popen.wait()
        try:
            loop.call_soon_threadsafe(state.exited, returncode)
        except RuntimeError:
            pass  # the loop is closed: nobody is left to tell

    threading.Thread(
        target=wait_in_thread, name=f"leashed-asyncio-wait-{popen.pid}", daemon=True
    ).start()


class _PidfdWatch:
    """A pidfd in the loop's reader set: readable once the child has exited.

    The loop holds it (and so the Popen, to reap it); if the loop is closed first, the
    pidfd is closed when the loop lets go of it.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, popen: Popen[bytes], state: _State, pidfd: int
    ) -> None:
        self._loop = loop
        self._popen = popen
        self._state = state
        self._pidfd = pidfd
        self._close = weakref.finalize(self, os.close, pidfd)
        loop.add_reader(pidfd, self._ready)

    def _ready(self) -> None:
        self._loop.remove_reader(self._pidfd)
        self._close()
        self._state.exited(self._popen.wait())  # already exited: returns at once
