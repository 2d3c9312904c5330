"""The leashed-helper protocol, Python side: its modes, options, failure stages, report
and control messages. ``docs/helper-protocol.md`` says the same in words; in C the
option table is in ``src/helper/options.c``, the stages in ``src/helper/helper.h`` and
the control ops in ``src/helper/supervisor.c``. ``tests/test_protocol_tables.py`` reads
all three and fails when they disagree.
"""

from __future__ import annotations

import enum
import errno
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._plan import LeashPlan


class Stage(enum.IntEnum):
    """Where the helper failed before the target ran (the report's first int32)."""

    EXEC = 1  # execve of the program failed (after the PATH search)
    ARM = 2  # arming the leash failed: prctl, subreaper, procctl, pidfd, kqueue, setpgid
    FORK = 3  # fork of the target or the guardian failed
    GUARDIAN = 4  # the guardian could not arm
    CREDENTIALS = 5  # setgroups / setregid / setreuid failed
    USAGE = 6  # the helper's command line was refused (a bug of ours, or a bad value)
    SETUP = 7  # any other failure before the target ran (fds, signalfd, sockets)


_STAGE_WHAT = {
    Stage.ARM: "could not arm the leash",
    Stage.FORK: "could not fork",
    Stage.GUARDIAN: "could not start the guardian",
    Stage.USAGE: "refused its command line",
    Stage.SETUP: "could not set up",
}

_REPORT = struct.Struct("=ii")


class ControlOp(enum.IntEnum):
    """Requests on a supervisor's control socket: two int32, (op, value)."""

    SIGNAL = 1  # value: a signal number, 0 = liveness probe; answered by an int32 errno
    DROP = 2  # the Popen object was dropped: end as if the parent had died; no answer


CONTROL_REQUEST = struct.Struct("=ii")
CONTROL_ANSWER = struct.Struct("=i")


@dataclass(frozen=True)
class _Option:
    flag: str
    kind: str  # "flag" (no value), "number" or "list" (comma-separated numbers)
    modes: frozenset[str]


_ALL = frozenset({"direct", "supervisor", "guardian"})
_WATCHING = frozenset({"supervisor", "guardian"})
_SUPERVISOR = frozenset({"supervisor"})
#: Every helper option and the modes that take it: the table of src/helper/options.c.
OPTIONS = {
    "report_fd": _Option("-r", "number", _ALL),
    "parent_pid": _Option("-p", "number", _ALL),
    "death_signal": _Option("-s", "number", _ALL),
    "uid": _Option("-U", "number", _ALL),
    "gid": _Option("-G", "number", _ALL),
    "extra_groups": _Option("-X", "list", _ALL),
    "grace_ms": _Option("-g", "number", _WATCHING),
    "lifeline_fd": _Option("-l", "number", _WATCHING),
    "watch_pid": _Option("-w", "number", _WATCHING),
    "control_fd": _Option("-c", "number", _SUPERVISOR),
    "listen_fd": _Option("-L", "number", _SUPERVISOR),
    "tree": _Option("-t", "flag", _SUPERVISOR),
    "keep_leftovers": _Option("-k", "flag", _SUPERVISOR),
    "process_group": _Option("-P", "flag", _SUPERVISOR),
}


@dataclass(frozen=True)
class HelperCommand:
    """One helper command line: the mode (the plan's mechanism) and its option values."""

    plan: LeashPlan
    report_fd: int | None = None
    parent_pid: int | None = None
    lifeline_fd: int | None = None
    watch_pid: int | None = None
    control_fd: int | None = None
    listen_fd: int | None = None
    uid: int | None = None
    gid: int | None = None
    extra_groups: Sequence[int] | None = None
    process_group: bool = False

    def options(self, helper: str) -> list[str]:
        """``helper MODE [OPTION VALUE]... --``: the helper's part of the argv."""
        mode = self.plan.mechanism
        values: dict[str, object] = {
            "report_fd": self.report_fd,
            "parent_pid": self.parent_pid,
            "death_signal": self.plan.death_signal,
            "grace_ms": self.plan.grace_ms,
            "lifeline_fd": self.lifeline_fd,
            "watch_pid": self.watch_pid,
            "control_fd": self.control_fd,
            "listen_fd": self.listen_fd,
            "tree": self.plan.tree or None,
            "keep_leftovers": self.plan.keep_leftovers or None,
            "uid": self.uid,
            "gid": self.gid,
            "extra_groups": None
            if self.extra_groups is None
            else ",".join(map(str, self.extra_groups)),
            "process_group": self.process_group or None,
        }
        cmd = [helper, mode]
        for name, value in values.items():
            if value is None:
                continue
            option = OPTIONS[name]
            if mode not in option.modes:
                raise ValueError(f"helper mode {mode} takes no {option.flag} ({name})")
            cmd += [option.flag] if option.kind == "flag" else [option.flag, str(value)]
        return [*cmd, "--"]

    def argv(self, helper: str, program: Any, target_argv: Sequence[Any]) -> list[Any]:
        """``helper MODE [OPTION VALUE]... -- PROGRAM [ARGV...]``.

        ``program`` and ``target_argv`` pass through untouched, so the standard library
        raises its own TypeError/ValueError for bad ones, exactly as for a plain Popen.
        """
        return [*self.options(helper), program, *target_argv]


def read_report(report_read_fd: int) -> tuple[int, int] | None:
    """Read the helper's report to EOF and close it: None if the target was executed.

    EOF with no data means the target was executed. A short report means the helper was
    killed mid-write: reported as a setup failure, never as success.
    """
    data = b""
    try:
        while True:
            part = os.read(report_read_fd, 64)
            if not part:
                break
            data += part
    finally:
        os.close(report_read_fd)
    if not data:
        return None
    if len(data) < _REPORT.size:
        return int(Stage.SETUP), errno.EPIPE
    stage, err = _REPORT.unpack_from(data)
    return stage, err


def report_error(stage: int, err: int, filename: object) -> OSError:
    """The exception subprocess would raise for this failure (FileNotFoundError, ...)."""
    if stage == Stage.EXEC:
        return OSError(err, os.strerror(err), filename)
    if stage == Stage.CREDENTIALS:  # as subprocess reports a failed setuid/setgid/setgroups
        return OSError(err, os.strerror(err))
    try:
        what = _STAGE_WHAT[Stage(stage)]
    except (ValueError, KeyError):
        what = f"failed at stage {stage}"
    return OSError(err, f"leashed-helper {what}: {os.strerror(err)}")
