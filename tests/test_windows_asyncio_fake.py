"""leashed.asyncio on Windows, over fakes of asyncio's Process and of kernel32/ntdll."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from test_windows_fake import CHILD, PID, FakeApi

import leashed.asyncio as lasyncio
from leashed import _platform, _windows
from leashed._windows import CREATE_BREAKAWAY_FROM_JOB, CREATE_SUSPENDED, ERROR_ACCESS_DENIED

CREATE_NO_WINDOW = 0x08000000


class FakePopen:
    def __init__(self) -> None:
        self._handle = CHILD
        self.pid = PID


class FakeProcess:
    """What asyncio.create_subprocess_* return, as far as leashed.asyncio touches it."""

    def __init__(self, log: list[Any]) -> None:
        self.popen = FakePopen()
        self.log = log
        outer = self

        class Transport:
            def get_extra_info(self, name: str) -> Any:
                assert name == "subprocess"
                return outer.popen

        self._transport = Transport()

    async def wait(self) -> int:
        self.log.append(("wait",))
        return 1


@pytest.fixture()
def windows(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeApi, list[Any]]]:
    api = FakeApi()
    log: list[Any] = []
    _windows.set_api_for_tests(api)
    monkeypatch.setattr(lasyncio, "IS_WINDOWS", True)
    monkeypatch.setattr(_platform, "IS_WINDOWS", True)
    monkeypatch.setattr(_platform, "BACKEND", _windows)

    async def fake_exec(*args: Any, **kwds: Any) -> FakeProcess:
        log.append(("create_subprocess_exec", args, kwds))
        return FakeProcess(log)

    async def fake_shell(cmd: Any, **kwds: Any) -> FakeProcess:
        log.append(("create_subprocess_shell", cmd, kwds))
        return FakeProcess(log)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", fake_exec)
    monkeypatch.setattr(asyncio, "create_subprocess_shell", fake_shell)
    yield api, log
    _windows.set_api_for_tests(None)


def test_child_is_created_suspended_then_assigned_then_resumed(
    windows: tuple[FakeApi, list[Any]],
) -> None:
    api, log = windows
    proc = asyncio.run(
        lasyncio.create_subprocess_exec("prog.exe", "arg", creationflags=CREATE_NO_WINDOW)
    )
    assert isinstance(proc, FakeProcess)
    name, args, kwds = log[0]
    assert (name, args) == ("create_subprocess_exec", ("prog.exe", "arg"))
    assert kwds["creationflags"] == CREATE_NO_WINDOW | CREATE_SUSPENDED
    assert api.names()[-2:] == ["AssignProcessToJobObject", "NtResumeProcess"]
    assert proc.popen.leashed_job is not None  # type: ignore[attr-defined]


def test_shell_and_caller_suspended_child_stays_suspended(
    windows: tuple[FakeApi, list[Any]],
) -> None:
    api, log = windows
    asyncio.run(lasyncio.create_subprocess_shell("dir", creationflags=CREATE_SUSPENDED))
    assert log[0][0] == "create_subprocess_shell"
    assert "AssignProcessToJobObject" in api.names()
    assert "NtResumeProcess" not in api.names()


def test_failed_assignment_terminates_waits_and_raises(
    windows: tuple[FakeApi, list[Any]],
) -> None:
    api, log = windows
    api.fail("AssignProcessToJobObject", ERROR_ACCESS_DENIED)
    with pytest.raises(OSError):
        asyncio.run(lasyncio.create_subprocess_exec("prog.exe"))
    assert "TerminateProcess" in api.names()
    assert "NtResumeProcess" not in api.names()
    assert log[-1] == ("wait",)


@pytest.mark.parametrize(
    "options,exc",
    [
        ({"grace": 5.0}, ValueError),
        ({"death_signal": 15}, ValueError),
        ({"creationflags": CREATE_BREAKAWAY_FROM_JOB}, ValueError),
        ({"mechanism": "guardian"}, ValueError),
    ],
)
def test_options_windows_cannot_honour_raise_before_spawning(
    windows: tuple[FakeApi, list[Any]], options: dict[str, Any], exc: type[Exception]
) -> None:
    _api, log = windows
    with pytest.raises(exc):
        asyncio.run(lasyncio.create_subprocess_exec("prog.exe", **options))
    assert log == []
