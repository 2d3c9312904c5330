"""POSIX backend: every child is executed through leashed-helper (Linux, macOS, BSDs).

One spawn: validate the ids as ``_posixsubprocess`` would, open the report pipe (and the
lifeline, the control socket), rewrite the stdlib's ``_execute_child`` call so that it
executes the helper with the user's program after ``--``, spawn on a thread that lives as
long as the process where the mechanism needs it, then read the helper's report. Every
fd opened for the spawn is closed on every path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import _helper, _inproc_spawn, _lifeline, _seam, _spawner
from ._capabilities import posix_capabilities
from ._fds import listener_above_stdio, pipe_above_stdio, socketpair_above_stdio
from ._linux import fallback_preexec_fn, has_pidfd
from ._plan import SIGKILL, LeashPlan
from ._protocol import (
    CONTROL_ANSWER,
    CONTROL_REQUEST,
    ControlOp,
    HelperCommand,
    read_report,
    report_error,
)

assert sys.platform != "win32", "the Windows backend is _windows"  # for type checkers
if sys.platform == "linux":
    from . import _cgroup

#: This backend's report for leashed.capabilities().
capabilities = posix_capabilities

#: How long a supervisor may take to answer a control request before we stop waiting.
CONTROL_TIMEOUT_S = 10.0


class ChildLeash:
    """What a POSIX child's leash holds after the spawn: the way to its supervisor's
    control socket, and (for kill_on_drop) a pidfd naming the child itself.

    On Linux the supervisor listens on an abstract socket name and accepts only this
    process, which connects for each request: no fd is held per supervised child (10,000
    of them fit under the usual limit of 1,024 fds). Elsewhere, and on kernels without
    pidfd_open, a socketpair stays connected for the child's life.
    """

    def __init__(self, plan: LeashPlan) -> None:
        self.plan = plan
        self.control: socket.socket | None = None
        self.control_name: str | None = None
        self.pidfd: int | None = None
        self.cgroup: Any = None  # the cgroup mechanism's cgroup (Linux): a _cgroup.Slot

    @property
    def supervised(self) -> bool:
        """Whether a supervisor answers for the child (until the leash is closed)."""
        return self.control is not None or self.control_name is not None

    def close(self) -> None:
        """Release the control socket and the pidfd (the child is reaped or let go)."""
        self.control_name = None
        if self.cgroup is not None:
            self.cgroup.release()
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def target_of(args: Any, executable: Any, shell: bool) -> tuple[Any, list[Any]]:
    """(program, argv) exactly as subprocess's POSIX _execute_child would exec them."""
    argv: list[Any]
    if type(args) is list or type(args) is tuple:  # the common case, no PathLike check
        argv = list(args)
    elif isinstance(args, (str, bytes)):
        argv = [args]
    elif isinstance(args, os.PathLike):
        if shell:
            raise TypeError("path-like args is not allowed when shell is true")
        argv = [args]
    else:
        argv = list(args)
    if shell:
        argv = ["/bin/sh", "-c", *argv]
        if executable:
            argv[0] = executable
    program = argv[0] if executable is None else executable
    return program, argv


def check_ids(uid: int | None, gid: int | None, gids: Sequence[int] | None) -> None:
    """Raise what _posixsubprocess raises for ids out of uid_t/gid_t's range.

    os.fchown converts its ids with the same C converters (OverflowError, same message);
    fd -1 makes the call itself fail harmlessly afterwards.
    """
    for user, group in ((uid, None), (None, gid)):
        if user is None and group is None:
            continue
        try:
            os.fchown(-1, -1 if user is None else user, -1 if group is None else group)
        except OSError:
            pass
    for extra in gids or ():
        try:
            os.fchown(-1, -1, extra)
        except OverflowError:
            raise ValueError("invalid group id") from None
        except OSError:
            pass


def execute_child(popen: Any, call: dict[str, Any]) -> None:
    """Spawn ``popen``'s child as its plan says; the stdlib arguments are ``call``."""
    leash: ChildLeash = popen._leash
    plan = leash.plan
    if plan.mechanism == "preexec_fn":
        _spawn_with_fallback(popen, call, plan)
        return
    if plan.mechanism in ("direct", "cgroup") and _inproc_spawn.usable(call):
        # the in-process spawn (see _inproc_spawn); else the helper's direct mode
        if call["uid"] is not None or call["gid"] is not None or call["gids"] is not None:
            check_ids(call["uid"], call["gid"], call["gids"])
        if plan.mechanism == "cgroup":
            _spawn_into_cgroup_in_process(popen, call, leash)
        else:
            _inproc_spawn.execute_child(popen, call, plan.death_signal)
        if plan.kill_on_drop:
            leash.pidfd = _pidfd_of(popen.pid)
        return
    if plan.mechanism == "direct" and _helper.helper_path() is None:  # a preexec_fn call
        _helper.warn_helper_missing()
        _spawn_with_fallback(popen, call, plan)
        return
    program, argv = target_of(call["args"], call["executable"], call["shell"])
    check_ids(call["uid"], call["gid"], call["gids"])
    sys.audit("subprocess.Popen", program, argv, call["cwd"], call["env"])
    helper = _helper.helper_path()
    assert helper is not None
    report_read, report_write = pipe_above_stdio()
    for_child = [report_write]  # the fds the helper inherits, ours to close after the spawn
    try:
        fds = _open_leash_fds(leash, for_child)
        options = _helper_options(helper, plan, report_write, *fds.helper_values, call)
        _call_helper(call, helper, options, program, argv, [*for_child, *fds.inherited_only])
        try:
            _spawn(popen, call, on_long_lived_thread=plan.mechanism == "direct")
        except OSError as exc:
            if exc.errno == errno.E2BIG and exc.filename == helper:
                exc.filename = program  # the argv was too long: the user's, not ours
            raise
        finally:
            while for_child:
                os.close(for_child.pop())
    except BaseException:
        for fd in (report_read, *for_child):
            with contextlib.suppress(OSError):
                os.close(fd)
        _cgroup_started(leash, 0)
        raise
    _after_report(popen, leash, read_report(report_read), program)


def _spawn_into_cgroup_in_process(popen: Any, call: dict[str, Any], leash: ChildLeash) -> None:
    """The cgroup mechanism in process: the child joins its cgroup before exec, and arms
    no death signal (the watcher ends the tree), so any thread may fork it."""
    if sys.platform == "linux":  # where the cgroup mechanism is chosen at all
        leash.cgroup = _cgroup.leashes().acquire(leash.plan)
    join_fd = leash.cgroup.open_procs()
    try:
        _inproc_spawn.execute_child(popen, call, 0, join_fd)
    except BaseException:
        _cgroup_started(leash, 0)
        raise
    finally:
        os.close(join_fd)
    _cgroup_started(leash, popen.pid)


@dataclasses.dataclass(frozen=True)
class _LeashFds:
    """What the helper is told to watch and answer on, beside its report pipe."""

    parent_pid: int | None = None  # direct: the pid getppid() must still return
    lifeline: int | None = None  # the lifeline's read end (shared, never closed here)
    watch_pid: int | None = None  # this process, watched with a pidfd
    control: int | None = None  # a socketpair end for the supervisor's control requests
    listener: int | None = None  # a listening control socket (Linux, by abstract name)
    join_fd: int | None = None  # cgroup: the target's cgroup.procs, joined before exec

    @property
    def helper_values(
        self,
    ) -> tuple[int | None, int | None, int | None, int | None, int | None, int | None]:
        """parent_pid, lifeline, watch_pid, control, listener and join_fd, as
        _helper_options takes them."""
        return (
            self.parent_pid,
            self.lifeline,
            self.watch_pid,
            self.control,
            self.listener,
            self.join_fd,
        )

    @property
    def inherited_only(self) -> tuple[int, ...]:
        """The fds the helper inherits that are not ours to close after the spawn."""
        return () if self.lifeline is None else (self.lifeline,)


def _open_leash_fds(leash: ChildLeash, for_child: list[int]) -> _LeashFds:
    """The lifeline, pidfd watch and control socket the plan needs; every fd opened for
    the child is appended to ``for_child`` (closed by the caller after the spawn)."""
    mechanism = leash.plan.mechanism
    if sys.platform == "linux" and mechanism == "cgroup":
        # the one value handed to whatever executes the child (-J for the helper)
        leash.cgroup = _cgroup.leashes().acquire(leash.plan)
        join_fd = leash.cgroup.open_procs()
        for_child.append(join_fd)
        return _LeashFds(parent_pid=os.getpid(), join_fd=join_fd)
    if mechanism == "direct":
        return _LeashFds(parent_pid=os.getpid())
    lifeline = _lifeline.lifeline_read_fd()
    # Besides the lifeline, a pidfd on this process (where the kernel has pidfd_open): a
    # child forked without Python's at-fork hooks keeps a copy of the lifeline's write
    # end, and an application may close the lifeline.
    watch_pid = os.getpid() if has_pidfd() else None
    if mechanism != "supervisor":
        return _LeashFds(lifeline=lifeline, watch_pid=watch_pid)
    if watch_pid is not None and sys.platform == "linux":
        # Bound here, before the helper exists, and never named in its argv (which any
        # user can read): nobody can take the name first.
        name = _control_name()
        listener = listener_above_stdio("\0" + name)
        for_child.append(listener)
        leash.control_name = name
        return _LeashFds(lifeline=lifeline, watch_pid=watch_pid, listener=listener)
    leash.control, control = socketpair_above_stdio()
    for_child.append(control)
    return _LeashFds(lifeline=lifeline, watch_pid=watch_pid, control=control)


def _call_helper(
    call: dict[str, Any],
    helper: str,
    options: tuple[Any, ...],
    program: Any,
    argv: list[Any],
    inherited: list[int],
) -> None:
    """Rewrite the stdlib's call so that it executes the helper, the target after "--"."""
    call["args"] = [*options, program, *argv]
    call["executable"] = helper
    call["shell"] = False
    call["uid"] = call["gid"] = call["gids"] = None  # the helper changes them, then arms
    call["pass_fds"] = (*call["pass_fds"], *inherited)


def _after_report(
    popen: Any, leash: ChildLeash, failure: tuple[int, int] | None, program: Any
) -> None:
    """Raise what subprocess would for a failed start; else pin the child for kill_on_drop."""
    if failure is not None:
        _seam.reap_failed_start(popen)
        _cgroup_started(leash, 0)
        raise report_error(*failure, filename=program)
    _cgroup_started(leash, popen.pid)
    if leash.plan.kill_on_drop and leash.plan.mechanism != "supervisor":
        leash.pidfd = _pidfd_of(popen.pid)


#: The helper's argv up to its "--", by the values that make it: one spawn after another
#: mostly repeats the same options (same plan, pid, fd numbers), so each is built once.
#: Spawns that change credentials are built each time (their values are the caller's).
_options_cache: dict[tuple[Any, ...], tuple[str, ...]] = {}
_OPTIONS_CACHE_MAX = 64


#: struct ucred: pid, uid, gid; SO_PEERCRED is 17 on every Linux architecture.
_UCRED = struct.Struct("=iII")
SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)


def _control_name() -> str:
    """A fresh abstract socket name: random, so that nobody can take it first."""
    return "leashed-" + os.urandom(8).hex()


def _helper_options(
    helper: str,
    plan: LeashPlan,
    report_fd: int,
    parent_pid: int | None,
    lifeline: int | None,
    watch_pid: int | None,
    control: int | None,
    listener: int | None,
    join_fd: int | None,
    call: dict[str, Any],
) -> tuple[str, ...]:
    """``helper MODE [OPTION VALUE]... --`` for this spawn (see HelperCommand.argv)."""
    uid, gid, gids = call["uid"], call["gid"], call["gids"]
    cacheable = uid is None and gid is None and gids is None
    # the plan itself: a frozen dataclass, so every field (a new one too) is in the key
    key = (helper, plan, report_fd, parent_pid, lifeline, watch_pid, control, listener, join_fd)
    options = _options_cache.get(key) if cacheable else None
    if options is None:
        command = HelperCommand(
            plan,
            report_fd=report_fd,
            parent_pid=parent_pid,
            lifeline_fd=lifeline,
            watch_pid=watch_pid,
            control_fd=control,
            listen_fd=listener,
            join_fd=join_fd,
            uid=uid,
            gid=gid,
            extra_groups=gids,
        )
        options = tuple(command.options(helper))
        if cacheable:
            if len(_options_cache) >= _OPTIONS_CACHE_MAX:
                _options_cache.clear()
            _options_cache[key] = options
    return options


def _cgroup_started(leash: ChildLeash, pid: int) -> None:
    """Tell the watcher the target runs in its cgroup (pid 0: it never ran, which ends the
    cgroup and frees it)."""
    if leash.cgroup is not None:
        leash.cgroup.started(pid)
        if not pid:
            leash.close()


def _spawn(popen: Any, call: dict[str, Any], *, on_long_lived_thread: bool) -> None:
    """The stdlib's own _execute_child (unaudited); with ``on_long_lived_thread``, its
    fork happens on a thread that lives as long as the process (see _spawner)."""
    spawn = _seam.spawn_unaudited
    assert spawn is not None, "this CPython's _execute_child cannot be called unaudited"
    if not on_long_lived_thread or _spawner.is_long_lived_thread():
        spawn(popen, **call)
    elif spawn.can_replace_fork_exec:
        spawn(popen, wrap_fork_exec=_spawner.forking_on_long_lived_thread, **call)
    else:
        _spawner.on_long_lived_thread(lambda: spawn(popen, **call))


def _spawn_with_fallback(popen: Any, call: dict[str, Any], plan: LeashPlan) -> None:
    """No helper: a preexec_fn arms PR_SET_PDEATHSIG (fork() instead of vfork())."""
    call["preexec_fn"] = fallback_preexec_fn(call["preexec_fn"], plan.death_signal)
    stdlib: Callable[..., None] = _seam.STDLIB_EXECUTE_CHILD
    _spawner.on_long_lived_thread(lambda: stdlib(popen, **call))


def _pidfd_of(pid: int) -> int | None:
    """A pidfd naming our still-unreaped child, so a later signal cannot hit a reused pid."""
    if sys.platform != "linux":
        return None
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def collect_after_timeout(popen: Any, exc: Any) -> None:
    """run()'s clean-up after a timeout and kill(), as subprocess's on POSIX: reap."""
    del exc
    popen.wait()


# -- signals and dropping -------------------------------------------------------------------


def send_signal(popen: Any, sig: int, stdlib_send: Callable[[int], None]) -> None:
    """As subprocess's send_signal; a supervisor relays it to the target (SIGKILL: the
    tree), answering as os.kill would (OSError(EINVAL) for a bad signal number)."""
    leash: ChildLeash = popen._leash
    if leash.cgroup is not None and _signal_number(sig) == SIGKILL:
        popen.poll()  # a reaped target's cgroup is not ours to kill any more
        if popen.returncode is None or leash.plan.keep_leftovers:
            leash.cgroup.kill()  # the tree, at once; the target is our child: wait() sees it
        return
    if not leash.supervised:
        stdlib_send(sig)
        return
    popen.poll()
    if popen.returncode is not None:
        if leash.plan.keep_leftovers and _signal_number(sig) == SIGKILL:
            _ask_supervisor(leash, ControlOp.SIGNAL, SIGKILL)  # answered once they are dead
            leash.close()
        return
    number = _signal_number(sig)
    if number == SIGKILL:
        # A stopped front (it follows its target's stop when it leads a job) would not exit
        # after the supervisor's kill. It is our unreaped child: its pid is its own.
        stdlib_send(signal.SIGCONT)
    answer = _ask_supervisor(leash, ControlOp.SIGNAL, number)
    if answer is None:  # the supervisor is gone or stuck: signal it as subprocess would
        stdlib_send(sig)
    elif answer not in (0, errno.ESRCH):
        raise OSError(answer, os.strerror(answer))


def _signal_number(sig: Any) -> int:
    """``sig`` as os.kill passes it to kill(2): a Py_ssize_t (OverflowError beyond), then
    a C int; a number that is no signal is EINVAL."""
    number = int(sig)
    if not -(2**63) <= number < 2**63:
        raise OverflowError("Python int too large to convert to C ssize_t")
    number = (number + 2**31) % 2**32 - 2**31  # the C int kill(2) receives
    if not 0 <= number < signal.NSIG:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    return number


def _ask_supervisor(leash: ChildLeash, op: ControlOp, value: int) -> int | None:
    """Send one control request; its answer (an errno), or None if there is none."""
    if leash.control is not None:
        return _exchange(leash.control, op, value)
    if leash.control_name is None:
        return None
    deadline = time.monotonic() + CONTROL_TIMEOUT_S
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as control:
                control.settimeout(CONTROL_TIMEOUT_S)
                control.connect("\0" + leash.control_name)
                if _peer_uid(control) != os.geteuid():
                    return None  # the supervisor is gone and someone else took its name
                return _exchange(control, op, value)
        except BlockingIOError:  # a full backlog (strangers connecting): try again
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.001)
        except OSError:  # gone (refused), or stuck (timeout)
            return None


def _peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected AF_UNIX socket (Linux)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, _UCRED.size)
    return int(_UCRED.unpack(creds)[1])


def _exchange(control: socket.socket, op: ControlOp, value: int) -> int | None:
    """One request on a connected control socket, and its answer."""
    try:
        control.settimeout(CONTROL_TIMEOUT_S)
        control.sendall(CONTROL_REQUEST.pack(op, value))
        if op == ControlOp.DROP:
            return 0
        answer = b""
        while len(answer) < CONTROL_ANSWER.size:
            part = control.recv(CONTROL_ANSWER.size - len(answer))
            if not part:
                return None
            answer += part
    except OSError:
        return None
    (err,) = CONTROL_ANSWER.unpack(answer)
    return int(err)


def drop(popen: Any) -> None:
    """End the child as if the parent had died (its death signal, its grace)."""
    leash: ChildLeash = popen._leash
    if leash.cgroup is not None:
        if popen.poll() is None or leash.plan.keep_leftovers:
            leash.cgroup.end()
        leash.close()
        return
    if popen.poll() is not None:
        if leash.plan.keep_leftovers and leash.supervised:
            _ask_supervisor(leash, ControlOp.DROP, 0)  # the kept leftovers
            leash.close()
        return
    if leash.supervised:
        _ask_supervisor(leash, ControlOp.DROP, 0)
        leash.close()
        return
    try:
        if leash.pidfd is not None and sys.platform == "linux":
            signal.pidfd_send_signal(leash.pidfd, leash.plan.death_signal)
        elif _unreaped_child_is_guaranteed():
            os.kill(popen.pid, leash.plan.death_signal)
        else:
            return  # no handle that guarantees identity: never signal a reusable pid
    except ProcessLookupError:
        return
    if leash.plan.death_signal == SIGKILL:
        popen.wait(timeout=5)


def _unreaped_child_is_guaranteed() -> bool:
    """Without a pidfd: poll() said our child has not been reaped, so its pid is still
    its own -- unless SIGCHLD is ignored, when the kernel reaps children behind our back."""
    return signal.getsignal(signal.SIGCHLD) != signal.SIG_IGN
