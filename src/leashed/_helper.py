"""Finding leashed-helper, building its command line, and reading its exec report."""

from __future__ import annotations

import functools
import os
import struct
import subprocess
import sys
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from ._options import LeashPlan

HELPER_NAME = "leashed-helper.exe" if sys.platform == "win32" else "leashed-helper"
#: Environment variable that points leashed at another helper binary (development, tests).
HELPER_ENV = "LEASHED_HELPER"

_REPORT = struct.Struct("=ii")
STAGE_EXEC = 1
STAGE_CREDENTIALS = 5
_STAGE_WHAT = {
    2: "could not arm the leash",
    3: "could not fork the target",
    4: "the guardian could not arm",
}


class HelperMissingWarning(RuntimeWarning):
    """leashed-helper is not installed: a slower, thread-bound fallback is in use."""


@functools.cache
def helper_path() -> str | None:
    """Path of the helper executable, or None when the install lacks it."""
    override = os.environ.get(HELPER_ENV)
    if override is not None:
        return override if os.access(override, os.X_OK) else None
    candidate = resources.files(__package__).joinpath(HELPER_NAME)
    if isinstance(candidate, Path) and os.access(candidate, os.X_OK):
        return str(candidate)
    return None


@functools.cache
def helper_version() -> tuple[str, str] | None:
    """(version, build) as the helper reports them; build is "nolibc" or "libc"."""
    path = helper_path()
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, check=True, timeout=10).stdout
    _name, version, build = out.decode().split()
    return version, build


def warn_helper_missing() -> None:
    """Say, once per call site, that the fallback is in use; never downgrade silently."""
    warnings.warn(
        "leashed-helper was not found (broken install?): falling back to a preexec_fn "
        "that calls prctl(PR_SET_PDEATHSIG). It is slower, forces fork() instead of vfork(), "
        "and cannot do tree=, grace= or the guardian; see leashed.capabilities().",
        HelperMissingWarning,
        stacklevel=4,
    )


def open_pipe_above_stdio() -> tuple[int, int]:
    """A close-on-exec pipe whose fds are >= 3, so dup2 onto 0-2 in the child cannot hit them."""
    read_fd, write_fd = os.pipe()
    low: list[int] = []
    while read_fd < 3 or write_fd < 3:
        if read_fd < 3:
            low.append(read_fd)
            read_fd = os.dup(read_fd)
        if write_fd < 3:
            low.append(write_fd)
            write_fd = os.dup(write_fd)
    for fd in low:
        os.close(fd)
    return read_fd, write_fd


def helper_argv(
    plan: LeashPlan,
    program: Any,
    argv: Sequence[Any],
    *,
    report_fd: int | None = None,
    lifeline_fd: int | None = None,
    control_fd: int | None = None,
    parent_pid: int | None = None,
    watch_pid: int | None = None,
    credentials: tuple[int | None, int | None, Sequence[int] | None] = (None, None, None),
) -> list[Any]:
    """The helper command line that leashes ``program`` run with ``argv`` (argv[0] included).

    ``program`` and ``argv`` items are passed through untouched, so the standard library
    raises its own TypeError/ValueError for bad ones, exactly as for a plain Popen.
    """
    path = helper_path()
    assert path is not None
    mode = {"pdeathsig": "direct"}.get(plan.mechanism, plan.mechanism)  # protocol v2 names
    cmd: list[Any] = [path, mode, "-s", str(plan.death_signal)]
    if parent_pid is not None:
        cmd += ["-p", str(parent_pid)]
    if report_fd is not None:
        cmd += ["-r", str(report_fd)]
    if plan.mechanism != "pdeathsig":
        if plan.grace_ms:
            cmd += ["-g", str(plan.grace_ms)]
        if lifeline_fd is not None:
            cmd += ["-l", str(lifeline_fd)]
        if watch_pid is not None:
            cmd += ["-w", str(watch_pid)]
        if control_fd is not None:
            cmd += ["-c", str(control_fd)]
        if plan.tree:
            cmd.append("-t")
    uid, gid, groups = credentials
    if uid is not None:
        cmd += ["-U", str(uid)]
    if gid is not None:
        cmd += ["-G", str(gid)]
    if groups is not None:
        cmd += ["-X", ",".join(map(str, groups))]
    cmd.append("--")
    cmd.append(program)
    cmd.extend(argv)
    return cmd


def read_report(report_read_fd: int) -> tuple[int, int] | None:
    """Read the helper's report to EOF and close it: None if the target was executed."""
    data = b""
    try:
        while True:
            part = os.read(report_read_fd, 64)
            if not part:
                break
            data += part
    finally:
        os.close(report_read_fd)
    if len(data) < _REPORT.size:
        return None if not data else (2, 0)
    stage, err = _REPORT.unpack_from(data)
    return stage, err


def report_error(stage: int, err: int, filename: object) -> OSError:
    """The exception subprocess would raise for this failure (FileNotFoundError, ...)."""
    if stage == STAGE_EXEC:
        return OSError(err, os.strerror(err), filename)
    if stage == STAGE_CREDENTIALS:  # as subprocess reports a failed setuid/setgid/setgroups
        return OSError(err, os.strerror(err))
    what = _STAGE_WHAT.get(stage, f"failed at stage {stage}")
    return OSError(err, f"leashed-helper {what}: {os.strerror(err)}")
