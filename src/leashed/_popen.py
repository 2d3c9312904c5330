"""leashed.Popen and the run/call/check_*/get* family: subprocess's own API, leashed.

``Popen`` is subprocess's class: it takes the leash options in ``__init__``, spawns
through ``_execute_child`` (the one private seam, bound by name in ``_seam``), and adds
the leash to ``send_signal``, ``wait``, ``drop`` and ``__del__``; everything else is
subprocess's own code. The platform's backend (``_platform.BACKEND``) does the spawn,
signals and drops.
"""

from __future__ import annotations

import subprocess
from typing import Any, AnyStr

from . import _seam
from ._platform import BACKEND, plan_for_popen

__all__ = [
    "Popen",
    "call",
    "check_call",
    "check_output",
    "getoutput",
    "getstatusoutput",
    "run",
]


class Popen(subprocess.Popen[AnyStr]):
    """``subprocess.Popen`` whose child dies when this process dies, by any death.

    Takes every ``subprocess.Popen`` argument with its usual meaning, plus keyword-only
    leash options:

    - ``tree``: end every descendant too, not only the target (a supervisor: on Linux a
      child subreaper). ``pid`` is then the supervisor's front, and ``kill()`` /
      ``terminate()`` / ``send_signal()`` act through it; a SIGKILL of that pid, or of
      its process group, still ends the whole tree. Leftovers (a daemon the target
      started) end when the target exits.
    - ``keep_leftovers`` (with ``tree``): a tree's leftovers outlive the target and end
      only when this process dies, or on ``kill()`` (at once) or ``drop()`` (death
      signal and grace) after the target exited; ``wait()`` returns when the target
      exits. For start scripts that daemonise a service (``pg_ctl start``).
    - ``grace``: seconds between the death signal and SIGKILL (uses the supervisor; the
      death signal is then SIGTERM unless given).
    - ``death_signal``: the signal the child gets when the parent dies (SIGKILL by
      default).
    - ``kill_on_drop``: end the child, as if the parent had died, when this object is
      garbage-collected while the child runs. Default False: a dropped child keeps
      running, exactly as with subprocess (reaped later, ResourceWarning), and still dies
      with this process.
    - ``mechanism``: force ``"direct"``, ``"supervisor"`` or ``"guardian"``.
    """

    def __init__(
        self,
        args: Any,
        *popen_args: Any,
        tree: bool = False,
        grace: float | None = None,
        death_signal: int | None = None,
        kill_on_drop: bool = False,
        mechanism: str | None = None,
        keep_leftovers: bool = False,
        **popen_kwargs: Any,
    ) -> None:
        plan = plan_for_popen(
            tree=tree,
            grace=grace,
            death_signal=death_signal,
            kill_on_drop=kill_on_drop,
            mechanism=mechanism,
            keep_leftovers=keep_leftovers,
        )
        self._leash = BACKEND.ChildLeash(plan)
        super().__init__(args, *popen_args, **popen_kwargs)

    @property
    def kill_on_drop(self) -> bool:
        """Whether dropping this object while the child runs ends the child."""
        return bool(self._leash.plan.kill_on_drop)

    @property
    def mechanism(self) -> str:
        """How this child is leashed: direct, supervisor, guardian, job or preexec_fn."""
        return str(self._leash.plan.mechanism)

    def _execute_child(self, *args: Any, **kwargs: Any) -> None:
        BACKEND.execute_child(self, _seam.bind(args, kwargs))

    def send_signal(self, sig: int) -> None:
        """Send ``sig``; through a supervisor it reaches the target (SIGKILL: the tree)."""
        BACKEND.send_signal(self, sig, super().send_signal)

    def wait(self, timeout: float | None = None) -> int:
        """As subprocess.Popen.wait; also releases what the leash held for the child."""
        returncode = super().wait(timeout)
        if not self._leash.plan.keep_leftovers:  # else kill() and drop() still reach them
            self._leash.close()
        return returncode

    def drop(self) -> None:
        """End the child as if the parent had died (its death signal, its grace).

        What garbage collection does with ``kill_on_drop=True``; leashed.asyncio calls it
        when its Process object is dropped.
        """
        BACKEND.drop(self)

    def __del__(self) -> None:
        leash = getattr(self, "_leash", None)
        if (
            leash is not None
            and leash.plan.kill_on_drop
            and getattr(self, "_child_created", False)
            and (self.returncode is None or leash.plan.keep_leftovers)
        ):
            try:
                self.drop()
            except Exception:
                pass
        super().__del__()


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
            BACKEND.collect_after_timeout(process, exc)
            raise
        except BaseException:
            process.kill()
            raise
        retcode = process.wait()
        if check and retcode:
            raise subprocess.CalledProcessError(retcode, process.args, output=stdout, stderr=stderr)
    return subprocess.CompletedProcess(process.args, retcode, stdout, stderr)


def getstatusoutput(
    cmd: Any, *, encoding: str | None = None, errors: str | None = None
) -> tuple[int, str]:
    """As subprocess.getstatusoutput: (exit code, output) of a leashed shell command."""
    try:
        data = check_output(
            cmd, shell=True, text=True, stderr=subprocess.STDOUT, encoding=encoding, errors=errors
        )
        exitcode = 0
    except subprocess.CalledProcessError as ex:
        data = ex.output
        exitcode = ex.returncode
    if data[-1:] == "\n":
        data = data[:-1]
    return exitcode, data


def getoutput(cmd: Any, *, encoding: str | None = None, errors: str | None = None) -> str:
    """As subprocess.getoutput: the output (stdout and stderr) of a leashed shell command."""
    return getstatusoutput(cmd, encoding=encoding, errors=errors)[1]
