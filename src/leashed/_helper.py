"""The leashed-helper binary: where it is, which version, and when to trust an override."""

from __future__ import annotations

import functools
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

HELPER_NAME = "leashed-helper"
#: Environment variable that points leashed at another helper binary (development, tests).
#: Trusted no more than the stdlib trusts the environment: ignored under ``python -I`` and
#: in setuid/setgid processes; otherwise it must name an absolute path to an executable
#: file that nobody but its owner (this user or root) can write.
HELPER_ENV = "LEASHED_HELPER"


class HelperMissingWarning(RuntimeWarning):
    """leashed-helper is not installed: a slower, thread-bound fallback is in use."""


class HelperOverrideError(RuntimeError):
    """``LEASHED_HELPER`` is set but cannot be used; never fall back silently."""


def _override_allowed() -> bool:
    if sys.flags.isolated or sys.flags.ignore_environment:
        return False
    if sys.platform == "win32":
        return True
    # A setuid/setgid process must not run a helper its invoker chose.
    return os.getuid() == os.geteuid() and os.getgid() == os.getegid()


def override_in_force() -> bool:
    """Whether ``LEASHED_HELPER`` is set and honoured (it then decides the direct path)."""
    return HELPER_ENV in os.environ and _override_allowed()


def _checked_override(value: str) -> str:
    """The override's path, or HelperOverrideError saying why it cannot be used."""

    def refuse(why: str) -> HelperOverrideError:
        return HelperOverrideError(f"${HELPER_ENV}={value!r} {why}; unset it or fix it")

    if not os.path.isabs(value):
        raise refuse("is not an absolute path")
    try:
        st = os.stat(value)
    except OSError as exc:
        raise refuse(f"cannot be used: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode) or not os.access(value, os.X_OK):
        raise refuse("is not an executable file")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise refuse("is writable by other users")
    if sys.platform != "win32" and st.st_uid not in (0, os.geteuid()):
        raise refuse("is owned by another user")
    return value


def _packaged_path() -> str | None:
    """The helper installed inside the leashed package, if it is there and executable.

    Beside this file, not through importlib.resources: that imports modules lazily, which
    fails in a process that dropped its privileges after importing leashed."""
    candidate = Path(__file__).with_name(HELPER_NAME)
    if os.access(candidate, os.X_OK):
        return str(candidate)
    return None


@functools.cache
def helper_path() -> str | None:
    """Path of the helper executable, or None when the install lacks it (never on Windows).

    Raises HelperOverrideError when ``LEASHED_HELPER`` is set, honoured, and unusable.
    """
    if sys.platform == "win32":
        return None
    override = os.environ.get(HELPER_ENV)
    if override is not None and _override_allowed():
        return _checked_override(override)
    return _packaged_path()


class HelperUnusableError(RuntimeError):
    """The helper is there but does not answer ``--version`` as leashed-helper does."""


@functools.cache
def helper_version() -> tuple[str, str] | None:
    """(version, build) as the helper reports them; build is "nolibc" or "libc".

    Raises HelperUnusableError, naming the path and what it printed, when the program
    there does not run or does not say ``leashed-helper VERSION BUILD``.
    """
    path = helper_path()
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, check=True, timeout=10)
        words = out.stdout.decode(errors="replace").split()
    except (OSError, subprocess.SubprocessError) as exc:
        raise HelperUnusableError(f"{path} is not a usable {HELPER_NAME}: {exc}") from None
    if len(words) != 3 or words[0] != HELPER_NAME:
        raise HelperUnusableError(
            f"{path} is not a usable {HELPER_NAME}: its --version printed "
            f"{out.stdout[:80]!r}, not '{HELPER_NAME} VERSION BUILD'"
        )
    return words[1], words[2]


def helper_report(path: str | None) -> dict[str, str | None]:
    """The helper as capabilities() reports it: path, version, build, and error (why it
    cannot be used, or None)."""
    report: dict[str, str | None] = {"path": path, "version": None, "build": None, "error": None}
    if path is None:
        return report
    try:
        found = helper_version()
    except HelperUnusableError as exc:
        report["error"] = str(exc)
        return report
    if found is not None:
        report["version"], report["build"] = found
    return report


def warn_helper_missing() -> None:
    """Say, once per call site, that the fallback is in use; never downgrade silently."""
    warnings.warn(
        "leashed-helper was not found (broken install?): falling back to a preexec_fn "
        "that calls prctl(PR_SET_PDEATHSIG). It is slower, forces fork() instead of vfork(), "
        "and cannot do tree=, grace= or the guardian; see leashed.capabilities().",
        HelperMissingWarning,
        stacklevel=5,
    )


def missing_error(what: str) -> RuntimeError:
    """The error for a mechanism that cannot work without the helper."""
    return RuntimeError(
        f"{what} needs leashed-helper, which is not installed "
        f"(looked in the leashed package); reinstall leashed"
    )
