"""leashed.Popen and the run/call/check_* family: subprocess's own API, leashed."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import Any, AnyStr

from . import _helper, _spawner
from ._lifeline import lifeline_read_fd
from ._options import IS_LINUX, IS_WINDOWS, SIGKILL, LeashPlan, plan_leash

__all__ = ["Popen", "call", "check_call", "check_output", "run"]

_CONTROL_MESSAGE = struct.Struct("=ii")  # (op, value): op 1 = SIGNAL, op 2 = RELEASE
#: Control message asking a supervisor to end its tree as if the parent had died.
CONTROL_RELEASE = -1  # not a signal number: signal 0 is a liveness probe
#: How long to wait for a supervisor to confirm a signal before giving up on it.
_CONTROL_TIMEOUT_S = 30.0

# Positions in the argument list the standard library passes to Popen._execute_child,
# the same on POSIX and Windows in 3.10 to 3.13.
_ARGS, _EXECUTABLE, _PREEXEC_FN, _CLOSE_FDS, _PASS_FDS, _CWD, _ENV = range(7)
_CREATIONFLAGS, _SHELL = 8, 9
_GID, _GIDS, _UID = 17, 18, 19


def default_mechanism() -> str:
    """The mechanism a plain ``leashed.Popen(...)`` uses on this machine."""
    if IS_WINDOWS:
        return "job"
    if not IS_LINUX:
        return "guardian"
    return "pdeathsig" if _helper.helper_path() is not None else "preexec_fn"


def make_plan(**options: Any) -> LeashPlan:
    """Validate leash options for this machine (shared by Popen, asyncio and wrap)."""
    return plan_leash(
        default_mechanism="guardian" if not IS_LINUX and not IS_WINDOWS else "pdeathsig",
        **options,
    )


def target_of(args: Any, executable: Any, shell: bool) -> tuple[Any, list[Any]]:
    """(program, argv) exactly as subprocess's POSIX _execute_child would exec them."""
    argv: list[Any]
    if isinstance(args, (str, bytes)):
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


class Popen(subprocess.Popen[AnyStr]):
    """``subprocess.Popen`` whose child dies when this process dies, by any death.

    Takes every ``subprocess.Popen`` argument with its usual meaning, plus keyword-only
    leash options:

    - ``tree``: end every descendant too (Linux: a subreaper supervisor); ``pid`` is then
      the supervisor's, and ``kill()`` / ``terminate()`` / ``send_signal()`` act on the tree.
    - ``grace``: seconds between the death signal and SIGKILL (implies the supervisor).
    - ``death_signal``: the signal the child gets when the parent dies (SIGKILL by
      default; SIGTERM by default when ``grace`` is set).
    - ``kill_on_drop``: end the child when this object is garbage-collected while the
      child still runs, as if the parent had died (default True).
    - ``mechanism``: force ``"pdeathsig"``, ``"supervisor"`` or ``"guardian"``.
    """

    _leash: LeashPlan
    _control: socket.socket | None
    _job: object

    def __init__(
        self,
        args: Any,
        *popen_args: Any,
        tree: bool = False,
        grace: float | None = None,
        death_signal: int | None = None,
        kill_on_drop: bool = True,
        mechanism: str | None = None,
        **popen_kwargs: Any,
    ) -> None:
        self._control = None
        self._job = None
        self._leash = make_plan(
            tree=tree,
            grace=grace,
            death_signal=death_signal,
            kill_on_drop=kill_on_drop,
            mechanism=mechanism,
        )
        if self._leash.mechanism == "pdeathsig" and _helper.helper_path() is None:
            if not IS_LINUX:
                raise RuntimeError("leashed-helper is not installed; reinstall leashed")
            _helper.warn_helper_missing()
            self._leash = self._leash.with_mechanism("preexec_fn")
        elif self._leash.mechanism in ("supervisor", "guardian") and _helper.helper_path() is None:
            raise RuntimeError(
                f"the {self._leash.mechanism} needs leashed-helper, which is not installed "
                f"(looked in the leashed package and ${_helper.HELPER_ENV}); reinstall leashed"
            )
        super().__init__(args, *popen_args, **popen_kwargs)

    @property
    def kill_on_drop(self) -> bool:
        """Whether dropping this object while the child runs ends the child."""
        return self._leash.kill_on_drop

    @property
    def mechanism(self) -> str:
        """The mechanism that leashes this child: pdeathsig, supervisor, guardian, job, ..."""
        return self._leash.mechanism

    # -- spawning -------------------------------------------------------------------------

    def _execute_child(self, *call: Any) -> None:
        if IS_WINDOWS:
            self._execute_child_windows(list(call))
        else:
            self._execute_child_posix(list(call))

    def _execute_child_posix(self, call: list[Any]) -> None:
        plan = self._leash
        program, argv = target_of(call[_ARGS], call[_EXECUTABLE], call[_SHELL])
        sys.audit("subprocess.Popen", program, argv, call[_CWD], call[_ENV])
        spawn = super()._execute_child  # type: ignore[misc]
        if plan.mechanism == "preexec_fn":
            call[_PREEXEC_FN] = _fallback_preexec_fn(call[_PREEXEC_FN], plan.death_signal)
            _spawner.on_long_lived_thread(lambda: spawn(*call))
            return

        report_read, report_write = _helper.open_pipe_above_stdio()
        child_ends: list[int] = [report_write]
        lifeline = control_child = None
        if plan.mechanism == "pdeathsig":
            parent_pid: int | None = os.getpid()
        else:
            parent_pid = None
            lifeline = lifeline_read_fd()
            child_ends.append(lifeline)
        if plan.mechanism == "supervisor":
            self._control, control_peer = socket.socketpair()
            control_child = control_peer.detach()
            child_ends.append(control_child)
        # user=/group=/extra_groups= move into the helper: it must be executed with our
        # rights (the new user may not reach it) and arm the leash after the change.
        credentials = (call[_UID], call[_GID], call[_GIDS])
        call[_UID] = call[_GID] = call[_GIDS] = None
        call[_ARGS] = _helper.helper_argv(
            plan,
            program,
            argv,
            report_fd=report_write,
            lifeline_fd=lifeline,
            control_fd=control_child,
            parent_pid=parent_pid,
            credentials=credentials,
        )
        call[_EXECUTABLE] = call[_ARGS][0]
        call[_SHELL] = False
        call[_PASS_FDS] = (*call[_PASS_FDS], *child_ends)
        try:
            if plan.mechanism == "pdeathsig":
                _spawner.on_long_lived_thread(lambda: spawn(*call))
            else:
                spawn(*call)
        except BaseException:
            os.close(report_read)
            self._close_control()
            raise
        finally:
            os.close(report_write)
            if control_child is not None:
                os.close(control_child)
        failure = _helper.read_report(report_read)
        if failure is not None:
            self._reap_failed_start()
            self._close_control()
            raise _helper.report_error(*failure, filename=program)

    def _execute_child_windows(self, call: list[Any]) -> None:
        from . import _windows

        requested = call[_CREATIONFLAGS]
        call[_CREATIONFLAGS] = _windows.prepare_creationflags(requested)
        super()._execute_child(*call)  # type: ignore[misc]
        try:
            self._job = _windows.attach_and_resume(
                int(self._handle),  # type: ignore[attr-defined]
                self.pid,
                keep_suspended=bool(requested & _windows.CREATE_SUSPENDED),
            )
        except BaseException:
            self._reap_failed_start()
            raise

    def _reap_failed_start(self) -> None:
        """Collect a child that never ran its target, so nothing half-started remains."""
        try:
            self.wait(timeout=30)
        except Exception:
            self.returncode = sys.maxsize

    # -- signals and dropping -------------------------------------------------------------

    def send_signal(self, sig: int) -> None:
        """Send ``sig``; a tree-mode child passes it to the target, SIGKILL ends the tree."""
        if self._control is None:
            super().send_signal(sig)
            return
        self.poll()
        if self.returncode is not None:
            return
        if not self._tell_supervisor(int(sig)):
            super().send_signal(sig)

    def _tell_supervisor(self, message: int) -> bool:
        """Send one control message and wait for its acknowledgement."""
        control = self._control
        if control is None:
            return False
        try:
            control.settimeout(_CONTROL_TIMEOUT_S)
            if message == CONTROL_RELEASE:
                control.sendall(_CONTROL_MESSAGE.pack(2, 0))
                return True
            control.sendall(_CONTROL_MESSAGE.pack(1, message))
            return len(control.recv(4)) == 4
        except OSError:
            return False

    def _close_control(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None

    def wait(self, timeout: float | None = None) -> int:
        """As subprocess.Popen.wait; also releases the supervisor's control socket."""
        returncode = super().wait(timeout)
        self._close_control()
        return returncode

    def __del__(self) -> None:
        leash = getattr(self, "_leash", None)
        if (
            leash is not None
            and leash.kill_on_drop
            and getattr(self, "_child_created", False)
            and self.returncode is None
        ):
            try:
                self.drop()
            except Exception:
                pass
        super().__del__()

    def drop(self) -> None:
        """End the child as if the parent had died (its death signal, its grace).

        What garbage collection does with ``kill_on_drop``; leashed.asyncio calls it when
        its Process object is dropped.
        """
        if self.poll() is not None:
            return
        if self._control is not None:
            self._tell_supervisor(CONTROL_RELEASE)
            self._close_control()
            return
        if IS_WINDOWS:
            self.kill()
        else:
            os.kill(self.pid, self._leash.death_signal)
        if self._leash.death_signal == SIGKILL:
            self.wait(timeout=5)


def _fallback_preexec_fn(
    user_preexec_fn: Callable[[], object] | None, death_signal: int
) -> Callable[[], None]:
    """A preexec_fn that arms PR_SET_PDEATHSIG and rechecks the parent (no helper)."""
    from ._linux import arm_death_signal, load_prctl_for_fallback

    load_prctl_for_fallback()
    parent_pid = os.getpid()

    def arm() -> None:
        arm_death_signal(death_signal, parent_pid)
        if user_preexec_fn is not None:
            user_preexec_fn()

    return arm


# -- the convenience functions, mirroring subprocess's own ---------------------------------


def call(*popenargs: Any, timeout: float | None = None, **kwargs: Any) -> int:
    """Run a leashed command, wait for it, return its returncode (as subprocess.call)."""
    with Popen(*popenargs, **kwargs) as process:
        try:
            return process.wait(timeout=timeout)
        except BaseException:
            process.kill()
            raise


def check_call(*popenargs: Any, **kwargs: Any) -> int:
    """As subprocess.check_call: raise CalledProcessError on a non-zero returncode."""
    retcode = call(*popenargs, **kwargs)
    if retcode:
        cmd = kwargs.get("args")
        if cmd is None:
            cmd = popenargs[0]
        raise subprocess.CalledProcessError(retcode, cmd)
    return 0


def check_output(*popenargs: Any, timeout: float | None = None, **kwargs: Any) -> Any:
    """As subprocess.check_output: return stdout, raise CalledProcessError on failure."""
    for kw in ("stdout", "check"):
        if kw in kwargs:
            raise ValueError(f"{kw} argument not allowed, it will be overridden.")
    if "input" in kwargs and kwargs["input"] is None:
        text_mode = (
            kwargs.get("universal_newlines")
            or kwargs.get("text")
            or kwargs.get("encoding")
            or kwargs.get("errors")
        )
        kwargs["input"] = "" if text_mode else b""
    return run(*popenargs, stdout=subprocess.PIPE, timeout=timeout, check=True, **kwargs).stdout


def run(
    *popenargs: Any,
    input: Any = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    **kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """As subprocess.run, with a leashed child; accepts the leash options too."""
    if input is not None:
        if kwargs.get("stdin") is not None:
            raise ValueError("stdin and input arguments may not both be used.")
        kwargs["stdin"] = subprocess.PIPE
    if capture_output:
        if kwargs.get("stdout") is not None or kwargs.get("stderr") is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        kwargs["stdout"] = subprocess.PIPE
        kwargs["stderr"] = subprocess.PIPE
    process: Popen[Any]
    with Popen(*popenargs, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            process.kill()
            if IS_WINDOWS:
                exc.stdout, exc.stderr = process.communicate()  # type: ignore[assignment]
            else:
                process.wait()
            raise
        except BaseException:
            process.kill()
            raise
        retcode = process.wait()
        if check and retcode:
            raise subprocess.CalledProcessError(retcode, process.args, output=stdout, stderr=stderr)
    return subprocess.CompletedProcess(process.args, retcode, stdout, stderr)
