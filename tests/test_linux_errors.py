"""Bad input raises what subprocess raises, and leaves no process or fd behind."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import leashed
from leashed import _cgroup, _procfs
from leashed._lifeline import lifeline_read_fd

MECHANISMS = [{}, {"tree": True}, {"mechanism": "guardian"}, {"grace": 1.0}]


def _children() -> set[int]:
    """This process's children (zombies included): a failed start must leave none."""
    me = os.getpid()
    return {
        pid
        for pid in _procfs.all_pids()
        if (stat := _procfs.read_stat(pid)) is not None and stat.ppid == me
    }


def _fds() -> set[str]:
    # the process-wide lifeline pipe is opened once, on first use, and kept on purpose;
    # so is the cgroup mechanism's socket to its watcher
    lifeline_read_fd()
    if _cgroup.available():
        _cgroup.ensure_watcher()
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture()
def scratch(tmp_path: Path) -> Iterator[Path]:
    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\necho hi\n")
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x7fELF garbage, not a program")
    garbage.chmod(stat.S_IRWXU)
    yield tmp_path


CASES: list[tuple[str, Callable[[Path], tuple[tuple[Any, ...], dict[str, Any]]]]] = [
    ("missing program", lambda d: ((["leashed-no-such-program-xyz"],), {})),
    ("missing absolute path", lambda d: ((["/no/such/dir/program"],), {})),
    ("directory as program", lambda d: (([str(d)],), {})),
    ("not executable", lambda d: (([str(d / "not-executable")],), {})),
    ("exec format error", lambda d: (([str(d / "garbage")],), {})),
    ("missing executable=", lambda d: ((["true"],), {"executable": "/no/such/exe"})),
    ("env without PATH uses the default path", lambda d: ((["true"],), {"env": {}})),
    ("PATH from env=", lambda d: ((["true"],), {"env": {"PATH": str(d)}})),
    ("bad cwd", lambda d: ((["true"],), {"cwd": str(d / "no-such-dir")})),
    ("NUL in argument", lambda d: ((["echo", "a\0b"],), {})),
    ("NUL in program", lambda d: ((["ec\0ho"],), {})),
    ("int in args", lambda d: (([1, 2],), {})),
    ("None in args", lambda d: ((["echo", None],), {})),
    ("int as args", lambda d: ((5,), {})),
    ("empty args", lambda d: (([],), {})),
    ("path-like args with shell", lambda d: ((d,), {"shell": True})),
    ("= in env name", lambda d: ((["true"],), {"env": {"A=B": "1"}})),
    ("bad stdin type", lambda d: ((["true"],), {"stdin": "nope"})),
    ("bad bufsize", lambda d: ((["true"],), {"bufsize": "x"})),
    ("bad user", lambda d: ((["true"],), {"user": "leashed-no-such-user"})),
    ("bad group", lambda d: ((["true"],), {"group": "leashed-no-such-group"})),
    # ids out of uid_t/gid_t's range: what _posixsubprocess raises, before any fork
    ("user 2**64", lambda d: ((["true"],), {"user": 2**64})),
    ("user 2**32", lambda d: ((["true"],), {"user": 2**32})),
    ("user -1", lambda d: ((["true"],), {"user": -1})),
    ("group 2**32", lambda d: ((["true"],), {"group": 2**32})),
    ("extra_groups 2**63", lambda d: ((["true"],), {"extra_groups": [2**63]})),
    ("extra_groups 2**32", lambda d: ((["true"],), {"extra_groups": [2**32]})),
    ("extra_groups -1", lambda d: ((["true"],), {"extra_groups": [-1]})),
    # (uid_t)-1 is accepted by subprocess ("unchanged"); as a group setgroups refuses it
    ("user 2**32-1", lambda d: ((["true"],), {"user": 2**32 - 1})),
    ("group 2**32-1", lambda d: ((["true"],), {"group": 2**32 - 1})),
    ("extra_groups 2**32-1", lambda d: ((["true"],), {"extra_groups": [2**32 - 1]})),
    # an empty argv with executable= runs the program with no argv at all (cwd= keeps the
    # stdlib off its posix_spawn path, which refuses an empty argv from 3.13 on)
    ("empty args, executable=", lambda d: (([],), {"executable": "/bin/true", "cwd": str(d)})),
    # the argument list is too long: E2BIG names the program, not our helper
    ("E2BIG", lambda d: ((["true", *["x" * 100_000] * 40],), {})),
]


def _outcome(factory: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        proc = factory(*args, **kwargs)
    except BaseException as exc:
        return (
            type(exc),
            str(exc),
            getattr(exc, "errno", None),
            getattr(exc, "filename", None),
        )
    proc.wait()
    return ("started", proc.returncode)


@pytest.mark.parametrize("options", MECHANISMS, ids=["direct", "tree", "guardian", "grace"])
@pytest.mark.parametrize("name,case", CASES, ids=[c[0] for c in CASES])
def test_same_exception_as_subprocess(
    name: str, case: Callable[[Path], Any], options: dict[str, Any], scratch: Path
) -> None:
    args, kwargs = case(scratch)
    expected = _outcome(subprocess.Popen, args, kwargs)
    children, fds = _children(), _fds()
    got = _outcome(lambda *a, **k: leashed.Popen(*a, **options, **k), args, kwargs)
    assert got == expected
    assert _children() == children, "a failed start left a process behind"
    assert _fds() == fds, "a failed start leaked a file descriptor"


@pytest.mark.parametrize(
    "options,exc,message",
    [
        ({"grace": -1}, ValueError, "grace"),
        ({"grace": float("nan")}, ValueError, "grace"),
        ({"grace": float("inf")}, ValueError, "grace"),
        ({"grace": "1"}, TypeError, "grace"),
        ({"grace": 86401}, ValueError, "grace"),
        ({"grace": 1e306}, ValueError, "grace"),
        ({"grace": 10**400}, ValueError, "grace"),
        ({"death_signal": signal.SIGWINCH}, ValueError, "death_signal"),
        ({"death_signal": signal.SIGCHLD}, ValueError, "death_signal"),
        ({"death_signal": signal.SIGCONT}, ValueError, "death_signal"),
        ({"death_signal": signal.SIGTSTP}, ValueError, "death_signal"),
        ({"death_signal": signal.SIGURG}, ValueError, "death_signal"),
        ({"death_signal": 0}, ValueError, "death_signal"),
        ({"death_signal": 12345}, ValueError, "death_signal"),
        ({"death_signal": "TERM"}, TypeError, "death_signal"),
        ({"tree": 1}, TypeError, "tree"),
        ({"tree": 0}, TypeError, "tree"),  # equal to the default, but not a bool
        ({"kill_on_drop": None}, TypeError, "kill_on_drop"),
        ({"kill_on_drop": 0}, TypeError, "kill_on_drop"),
        ({"mechanism": "magic"}, ValueError, "mechanism"),
        ({"mechanism": "direct", "grace": 1}, ValueError, "grace"),
        ({"mechanism": "guardian", "tree": True}, ValueError, "tree"),
    ],
)
def test_bad_leash_options_name_the_argument(
    options: dict[str, Any], exc: type[Exception], message: str
) -> None:
    children, fds = _children(), _fds()
    with pytest.raises(exc, match=message):
        leashed.Popen(["true"], **options)
    with pytest.raises(exc, match=message):
        leashed.run(["true"], **options)
    assert _children() == children and _fds() == fds
