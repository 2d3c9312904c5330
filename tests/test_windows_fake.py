"""The Windows job-object backend, run on any platform over a fake kernel32/ntdll."""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from leashed import _windows as win
from leashed._windows import (
    CREATE_BREAKAWAY_FROM_JOB,
    CREATE_SUSPENDED,
    ERROR_ACCESS_DENIED,
    IO_COUNTERS,
    JOB_OBJECT_LIMIT_BREAKAWAY_OK,
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    JOB_OBJECT_LIMIT_SILENT_BREAKAWAY_OK,
    JOBOBJECT_BASIC_LIMIT_INFORMATION,
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JobObjectExtendedLimitInformation,
)

CREATE_NEW_CONSOLE = 0x00000010
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000
DETACHED_PROCESS = 0x00000008

ERROR_NOT_ENOUGH_MEMORY = 8
ERROR_INVALID_PARAMETER = 87
ERROR_INVALID_HANDLE = 6
WAIT_OBJECT_0 = 0
WAIT_TIMEOUT = 0x102
WAIT_FAILED = 0xFFFFFFFF
SYNCHRONIZE = 0x00100000
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
STATUS_ACCESS_DENIED = -1073741790  # 0xC0000022 as the signed NTSTATUS ctypes returns
_NTSTATUS_TO_WIN32 = {STATUS_ACCESS_DENIED: ERROR_ACCESS_DENIED}

CHILD = 0x1F4  # the child's process handle
CURRENT_PROCESS = (1 << 64) - 1  # GetCurrentProcess's pseudo-handle through c_void_p
PID = 4242

IS_64BIT = ctypes.sizeof(ctypes.c_void_p) == 8


class FakeApi:
    """Records every call in order; any call can be made to fail.

    ``fail(name, error, times)`` makes the next ``times`` calls of ``name`` (all, if None)
    fail: BOOL calls return 0, CreateJobObjectW returns NULL, and the last error becomes
    ``error``; NtResumeProcess returns ``error`` as its NTSTATUS.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.last_error = 0
        self._failures: dict[str, list[Any]] = {}
        self._next_handle = 0x100
        self.open_handles: set[int] = set()
        # open_parent_wait: creation times by handle, scripted wait and peek results
        self.creation_times: dict[int, int | None] = {}
        self.wait_results: list[int] = []
        self.peek_results: list[int] = []

    def fail(self, name: str, error: int, times: int | None = None) -> None:
        self._failures[name] = [error, times]

    def _failing(self, name: str) -> int | None:
        entry = self._failures.get(name)
        if entry is None:
            return None
        error, times = entry
        if times is not None:
            if times == 0:
                return None
            entry[1] = times - 1
        return int(error)

    def _bool(self, name: str) -> int:
        error = self._failing(name)
        if error is not None:
            self.last_error = error
            return 0
        return 1

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]

    def CreateJobObjectW(self) -> int:
        self.calls.append(("CreateJobObjectW",))
        if not self._bool("CreateJobObjectW"):
            return 0
        self._next_handle += 4
        self.open_handles.add(self._next_handle)
        return self._next_handle

    def SetInformationJobObject(self, job: int, info_class: int, info: bytes) -> int:
        assert isinstance(info, bytes)
        self.calls.append(("SetInformationJobObject", job, info_class, info))
        return self._bool("SetInformationJobObject")

    def AssignProcessToJobObject(self, job: int, process: int) -> int:
        self.calls.append(("AssignProcessToJobObject", job, process))
        return self._bool("AssignProcessToJobObject")

    def TerminateProcess(self, process: int, exit_code: int) -> int:
        self.calls.append(("TerminateProcess", process, exit_code))
        return self._bool("TerminateProcess")

    def CloseHandle(self, handle: int) -> int:
        self.calls.append(("CloseHandle", handle))
        self.open_handles.discard(handle)
        return self._bool("CloseHandle")

    def GetLastError(self) -> int:
        return self.last_error

    def NtResumeProcess(self, process: int) -> int:
        self.calls.append(("NtResumeProcess", process))
        status = self._failing("NtResumeProcess")
        return 0 if status is None else status

    def RtlNtStatusToDosError(self, status: int) -> int:
        return _NTSTATUS_TO_WIN32.get(status, 317)  # ERROR_MR_MID_NOT_FOUND

    def OpenProcess(self, access: int, inherit: bool, pid: int) -> int:
        self.calls.append(("OpenProcess", access, inherit, pid))
        if not self._bool("OpenProcess"):
            return 0
        self._next_handle += 4
        self.open_handles.add(self._next_handle)
        return self._next_handle

    def GetCurrentProcess(self) -> int:
        return CURRENT_PROCESS

    def GetProcessTimes(self, process: int) -> int | None:
        self.calls.append(("GetProcessTimes", process))
        return self.creation_times.get(process, 1000)

    def WaitForSingleObject(self, handle: int, timeout_ms: int) -> int:
        self.calls.append(("WaitForSingleObject", handle, timeout_ms))
        return self.wait_results.pop(0)

    def PeekNamedPipe(self, fd: int) -> int:
        self.calls.append(("PeekNamedPipe", fd))
        return self.peek_results.pop(0)


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    win.set_api_for_tests(fake)
    yield fake
    win.set_api_for_tests(None)


def limit_flags(info: bytes) -> int:
    """LimitFlags read from the raw bytes, independent of our ctypes definitions."""
    (flags,) = struct.unpack_from("<I", info, 16)
    return int(flags)


def winerror(error: BaseException) -> object:
    return getattr(error, "winerror", None)


# -- the normal path -----------------------------------------------------------------------


def test_order_create_configure_assign_resume(api: FakeApi) -> None:
    job = win.attach_and_resume(CHILD, PID, keep_suspended=False)

    assert api.names() == [
        "CreateJobObjectW",
        "SetInformationJobObject",
        "AssignProcessToJobObject",
        "NtResumeProcess",
    ]
    _, job_handle, info_class, info = api.calls[1]
    assert job_handle == job.handle
    assert info_class == JobObjectExtendedLimitInformation == 9
    assert len(info) == ctypes.sizeof(JOBOBJECT_EXTENDED_LIMIT_INFORMATION)
    flags = limit_flags(info)
    assert flags & JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    assert not flags & JOB_OBJECT_LIMIT_BREAKAWAY_OK
    assert not flags & JOB_OBJECT_LIMIT_SILENT_BREAKAWAY_OK
    assert flags == JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE  # no other limit either
    decoded = JOBOBJECT_EXTENDED_LIMIT_INFORMATION.from_buffer_copy(info)
    assert decoded.BasicLimitInformation.LimitFlags == JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    assert set(info[:16]) == {0} and set(info[20:]) == {0}
    assert api.calls[2] == ("AssignProcessToJobObject", job.handle, CHILD)
    assert api.calls[3] == ("NtResumeProcess", CHILD)
    assert job.shared
    assert win.windows_capabilities()["job_scope"] == "process-wide"


def test_one_job_for_many_children_never_closed(api: FakeApi) -> None:
    jobs = [win.attach_and_resume(CHILD + i, PID + i, keep_suspended=False) for i in range(5)]

    assert api.names().count("CreateJobObjectW") == 1
    assert api.names().count("SetInformationJobObject") == 1
    assert len({job.handle for job in jobs}) == 1
    assigned = [c for c in api.calls if c[0] == "AssignProcessToJobObject"]
    assert assigned == [("AssignProcessToJobObject", jobs[0].handle, CHILD + i) for i in range(5)]
    for job in jobs:
        job.close()  # a no-op for the shared job
    assert "CloseHandle" not in api.names()
    assert jobs[0].handle in api.open_handles


def test_keep_suspended_assigns_but_does_not_resume(api: FakeApi) -> None:
    win.attach_and_resume(CHILD, PID, keep_suspended=True)
    assert "AssignProcessToJobObject" in api.names()
    assert "NtResumeProcess" not in api.names()
    assert "TerminateProcess" not in api.names()


# -- fallback to a job per child -----------------------------------------------------------


def test_create_fails_falls_back_to_per_child_jobs(api: FakeApi) -> None:
    api.fail("CreateJobObjectW", ERROR_NOT_ENOUGH_MEMORY, times=1)

    first = win.attach_and_resume(CHILD, PID, keep_suspended=False)
    second = win.attach_and_resume(CHILD + 1, PID + 1, keep_suspended=False)

    assert api.names() == [
        "CreateJobObjectW",  # process-wide: fails
        "CreateJobObjectW",
        "SetInformationJobObject",
        "AssignProcessToJobObject",
        "NtResumeProcess",
        "CreateJobObjectW",  # the process-wide job is not retried
        "SetInformationJobObject",
        "AssignProcessToJobObject",
        "NtResumeProcess",
    ]
    assert not first.shared and not second.shared
    assert first.handle != second.handle
    assert ("AssignProcessToJobObject", first.handle, CHILD) in api.calls
    assert ("AssignProcessToJobObject", second.handle, CHILD + 1) in api.calls
    for call in api.calls:
        if call[0] == "SetInformationJobObject":
            assert limit_flags(call[3]) == JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    assert "CloseHandle" not in api.names()  # kept while the children may run
    caps = win.windows_capabilities()
    assert caps["job_scope"] == "per-child"
    assert "CreateJobObjectW" in str(caps["job_fallback_reason"])


def test_set_information_fails_falls_back_to_per_child_job(api: FakeApi) -> None:
    api.fail("SetInformationJobObject", ERROR_INVALID_PARAMETER, times=1)

    job = win.attach_and_resume(CHILD, PID, keep_suspended=False)

    unconfigured = api.calls[0]
    assert api.names() == [
        "CreateJobObjectW",
        "SetInformationJobObject",  # fails
        "CloseHandle",  # the empty, unconfigured job
        "CreateJobObjectW",
        "SetInformationJobObject",
        "AssignProcessToJobObject",
        "NtResumeProcess",
    ]
    assert api.calls[2][1] != job.handle
    assert api.calls[2][1] == api.calls[1][1]
    assert unconfigured == ("CreateJobObjectW",)
    assert api.calls[5] == ("AssignProcessToJobObject", job.handle, CHILD)
    assert not job.shared
    assert job.handle in api.open_handles
    assert win.windows_capabilities()["job_scope"] == "per-child"


def test_per_child_job_close_is_explicit_only(api: FakeApi) -> None:
    api.fail("CreateJobObjectW", ERROR_NOT_ENOUGH_MEMORY, times=1)
    job = win.attach_and_resume(CHILD, PID, keep_suspended=False)
    del job  # dropping the handle object must not close the job (that would kill)
    assert "CloseHandle" not in api.names()

    job = win.attach_and_resume(CHILD + 1, PID + 1, keep_suspended=False)
    job.close()
    job.close()
    assert api.names().count("CloseHandle") == 1


def test_no_job_at_all_terminates_child(api: FakeApi) -> None:
    api.fail("CreateJobObjectW", ERROR_NOT_ENOUGH_MEMORY)

    with pytest.raises(OSError) as caught:
        win.attach_and_resume(CHILD, PID, keep_suspended=False)

    assert api.names() == ["CreateJobObjectW", "CreateJobObjectW", "TerminateProcess"]
    assert api.calls[-1] == ("TerminateProcess", CHILD, 1)
    assert winerror(caught.value) == ERROR_NOT_ENOUGH_MEMORY
    assert "CreateJobObjectW" in str(caught.value)
    assert str(PID) in str(caught.value)


def test_per_child_configure_fails_terminates_child(api: FakeApi) -> None:
    api.fail("SetInformationJobObject", ERROR_INVALID_PARAMETER)

    with pytest.raises(OSError) as caught:
        win.attach_and_resume(CHILD, PID, keep_suspended=False)

    assert "AssignProcessToJobObject" not in api.names()
    assert "NtResumeProcess" not in api.names()
    assert api.calls[-1] == ("TerminateProcess", CHILD, 1)
    assert winerror(caught.value) == ERROR_INVALID_PARAMETER
    assert "SetInformationJobObject" in str(caught.value)
    assert not api.open_handles  # both unconfigured jobs were closed


# -- assignment and resume failures --------------------------------------------------------


def test_assign_fails_terminates_and_raises(api: FakeApi) -> None:
    api.fail("AssignProcessToJobObject", ERROR_ACCESS_DENIED)

    with pytest.raises(OSError) as caught:
        win.attach_and_resume(CHILD, PID, keep_suspended=False)

    assert api.names() == [
        "CreateJobObjectW",
        "SetInformationJobObject",
        "AssignProcessToJobObject",
        "TerminateProcess",
    ]
    assert api.calls[-1] == ("TerminateProcess", CHILD, 1)
    assert winerror(caught.value) == ERROR_ACCESS_DENIED
    message = str(caught.value)
    assert "AssignProcessToJobObject" in message
    assert "nested" in message  # the forbidden-nesting case is named
    assert "terminated" in message
    assert len(api.open_handles) == 1  # the shared job survives for later children


def test_assign_fails_in_per_child_job_closes_that_job(api: FakeApi) -> None:
    api.fail("CreateJobObjectW", ERROR_NOT_ENOUGH_MEMORY, times=1)
    api.fail("AssignProcessToJobObject", ERROR_INVALID_HANDLE)

    with pytest.raises(OSError) as caught:
        win.attach_and_resume(CHILD, PID, keep_suspended=False)

    names = api.names()
    assert names[-2:] == ["TerminateProcess", "CloseHandle"]
    assert winerror(caught.value) == ERROR_INVALID_HANDLE
    assert "nested" not in str(caught.value)
    assert not api.open_handles


def test_resume_fails_terminates_and_raises(api: FakeApi) -> None:
    api.fail("NtResumeProcess", STATUS_ACCESS_DENIED)

    with pytest.raises(OSError) as caught:
        win.attach_and_resume(CHILD, PID, keep_suspended=False)

    assert api.names() == [
        "CreateJobObjectW",
        "SetInformationJobObject",
        "AssignProcessToJobObject",
        "NtResumeProcess",
        "TerminateProcess",
    ]
    assert api.calls[-1] == ("TerminateProcess", CHILD, 1)
    assert winerror(caught.value) == ERROR_ACCESS_DENIED
    assert "NtResumeProcess" in str(caught.value)
    assert "0xc0000022" in str(caught.value)


def test_resume_informational_status_is_success(api: FakeApi) -> None:
    api.fail("NtResumeProcess", 0x00000103)  # STATUS_PENDING: NT_SUCCESS is true
    win.attach_and_resume(CHILD, PID, keep_suspended=False)
    assert "TerminateProcess" not in api.names()


def test_failed_terminate_is_reported_and_original_error_kept(api: FakeApi) -> None:
    api.fail("AssignProcessToJobObject", ERROR_ACCESS_DENIED)
    api.fail("TerminateProcess", ERROR_INVALID_HANDLE)

    with pytest.raises(OSError) as caught:
        win.attach_and_resume(CHILD, PID, keep_suspended=False)

    assert winerror(caught.value) == ERROR_ACCESS_DENIED
    assert "NOT terminated" in str(caught.value)
    assert f"winerror {ERROR_INVALID_HANDLE}" in str(caught.value)


def test_failure_then_success_reuses_the_shared_job(api: FakeApi) -> None:
    api.fail("AssignProcessToJobObject", ERROR_ACCESS_DENIED, times=1)
    with pytest.raises(OSError):
        win.attach_and_resume(CHILD, PID, keep_suspended=False)
    job = win.attach_and_resume(CHILD + 1, PID + 1, keep_suspended=False)
    assert job.shared
    assert api.names().count("CreateJobObjectW") == 1


# -- creation flags and options ------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        0,
        CREATE_NEW_CONSOLE,
        CREATE_NO_WINDOW,
        CREATE_NEW_PROCESS_GROUP,
        CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW,
        DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP,
        CREATE_SUSPENDED | CREATE_NEW_CONSOLE,
    ],
)
def test_prepare_creationflags_keeps_caller_flags(flags: int) -> None:
    prepared = win.prepare_creationflags(flags)
    assert prepared == flags | CREATE_SUSPENDED
    assert prepared & flags == flags


def test_prepare_creationflags_rejects_breakaway() -> None:
    with pytest.raises(ValueError, match="creationflags") as caught:
        win.prepare_creationflags(CREATE_BREAKAWAY_FROM_JOB | CREATE_NEW_CONSOLE)
    assert "CREATE_BREAKAWAY_FROM_JOB" in str(caught.value)


def test_caller_wants_suspended() -> None:
    assert win.caller_wants_suspended(CREATE_SUSPENDED | CREATE_NO_WINDOW)
    assert not win.caller_wants_suspended(CREATE_NO_WINDOW)
    assert not win.caller_wants_suspended(win.prepare_creationflags(0) & ~CREATE_SUSPENDED)


@pytest.mark.parametrize("tree", [False, True])
@pytest.mark.parametrize("death_signal", [None, 9])
@pytest.mark.parametrize("grace", [None, 0, 0.0])
def test_check_leash_options_accepts(tree: bool, grace: float | None, death_signal: int) -> None:
    win.check_leash_options(tree, grace, death_signal)


@pytest.mark.parametrize("grace", [0.5, 5.0, 1])
def test_check_leash_options_rejects_grace(grace: float) -> None:
    with pytest.raises(ValueError, match=r"^grace is not supported on Windows: a kill-on-close"):
        win.check_leash_options(False, grace, None)


@pytest.mark.parametrize("death_signal", [15, 2, 21])
def test_check_leash_options_rejects_death_signal(death_signal: int) -> None:
    with pytest.raises(ValueError, match=r"^death_signal") as caught:
        win.check_leash_options(True, None, death_signal)
    assert "not supported on Windows" in str(caught.value)


def test_capabilities_before_any_child() -> None:
    win.set_api_for_tests(FakeApi())
    try:
        caps = win.windows_capabilities()
    finally:
        win.set_api_for_tests(None)
    assert caps["how"] == "job object, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE"
    assert caps["whole_tree"] is True
    assert caps["race_free"] is True
    assert caps["grace"] is False
    assert "immediate" in str(caps["grace_note"])
    assert caps["death_signals"] == (9,)
    assert caps["job_scope"] == "not created yet"


# -- structures ----------------------------------------------------------------------------


def offsets(structure: type[ctypes.Structure]) -> dict[str, int]:
    return {name: getattr(structure, name).offset for name, *_ in structure._fields_}


@pytest.mark.skipif(not IS_64BIT, reason="x64 layout")
def test_structure_layout_64bit() -> None:
    assert ctypes.sizeof(JOBOBJECT_BASIC_LIMIT_INFORMATION) == 64
    assert offsets(JOBOBJECT_BASIC_LIMIT_INFORMATION) == {
        "PerProcessUserTimeLimit": 0,
        "PerJobUserTimeLimit": 8,
        "LimitFlags": 16,
        "MinimumWorkingSetSize": 24,
        "MaximumWorkingSetSize": 32,
        "ActiveProcessLimit": 40,
        "Affinity": 48,
        "PriorityClass": 56,
        "SchedulingClass": 60,
    }
    assert ctypes.sizeof(IO_COUNTERS) == 48
    assert ctypes.sizeof(JOBOBJECT_EXTENDED_LIMIT_INFORMATION) == 144
    assert offsets(JOBOBJECT_EXTENDED_LIMIT_INFORMATION) == {
        "BasicLimitInformation": 0,
        "IoInfo": 64,
        "ProcessMemoryLimit": 112,
        "JobMemoryLimit": 120,
        "PeakProcessMemoryUsed": 128,
        "PeakJobMemoryUsed": 136,
    }
    info = win.kill_on_close_limits()
    assert len(info) == 144
    assert limit_flags(info) == JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE


# -- the real API's ctypes wiring, over fake DLLs ------------------------------------------


class FakeFunction:
    def __init__(self, name: str, log: list[tuple[Any, ...]], result: Any) -> None:
        self.name = name
        self.log = log
        self.result = result
        self.argtypes: Any = None
        self.restype: Any = None

    def __call__(self, *args: Any) -> Any:
        self.log.append((self.name, *args))
        return self.result


class FakeDll:
    def __init__(self, results: dict[str, Any]) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.functions = {name: FakeFunction(name, self.log, r) for name, r in results.items()}

    def __getattr__(self, name: str) -> FakeFunction:
        return self.functions[name]


def test_real_api_declares_prototypes_and_converts() -> None:
    kernel32 = FakeDll(
        {
            "CreateJobObjectW": None,  # NULL comes back from a c_void_p restype as None
            "SetInformationJobObject": 1,
            "AssignProcessToJobObject": 0,
            "TerminateProcess": 1,
            "CloseHandle": 1,
            "OpenProcess": 0x44,
            "GetCurrentProcess": CURRENT_PROCESS,
            "GetProcessTimes": 1,
            "WaitForSingleObject": WAIT_TIMEOUT,
            "PeekNamedPipe": 0,
        }
    )
    ntdll = FakeDll({"NtResumeProcess": STATUS_ACCESS_DENIED, "RtlNtStatusToDosError": 5})
    real = win._RealApi(kernel32, ntdll, lambda: 1234)  # type: ignore[arg-type]

    for name in ("CreateJobObjectW", "AssignProcessToJobObject", "CloseHandle"):
        function = kernel32.functions[name]
        assert function.argtypes is not None and function.restype is not None
        assert ctypes.c_void_p in function.argtypes  # HANDLEs are pointer-sized
    assert kernel32.functions["CreateJobObjectW"].restype is ctypes.c_void_p
    assert ntdll.functions["NtResumeProcess"].restype is ctypes.c_long
    assert kernel32.functions["SetInformationJobObject"].argtypes[3] is ctypes.c_uint32

    assert real.CreateJobObjectW() == 0
    assert kernel32.log[-1] == ("CreateJobObjectW", None, None)  # no inheritable handle
    info = win.kill_on_close_limits()
    assert real.SetInformationJobObject(0x10, 9, info) == 1
    call: tuple[Any, ...] = kernel32.log[-1]
    _, job, info_class, buffer, size = call
    assert (job, info_class, size) == (0x10, 9, len(info))
    assert bytes(buffer)[: len(info)] == info
    assert ctypes.addressof(buffer) % 8 == 0
    assert real.AssignProcessToJobObject(0x10, CHILD) == 0
    assert real.GetLastError() == 1234
    assert real.NtResumeProcess(CHILD) == STATUS_ACCESS_DENIED
    assert real.RtlNtStatusToDosError(0xC0000022) == 5
    assert ntdll.log[-1] == ("RtlNtStatusToDosError", STATUS_ACCESS_DENIED)
    assert real.OpenProcess(SYNCHRONIZE, False, 77) == 0x44
    assert real.GetCurrentProcess() == CURRENT_PROCESS
    assert real.GetProcessTimes(0x44) == 0  # the fake DLL writes no FILETIME
    assert len(kernel32.log[-1]) == 6  # handle + four FILETIME pointers
    assert real.WaitForSingleObject(0x44, 100) == WAIT_TIMEOUT
    assert kernel32.functions["GetProcessTimes"].argtypes[0] is ctypes.c_void_p
    assert len(kernel32.functions["PeekNamedPipe"].argtypes) == 6


@pytest.mark.skipif(sys.platform == "win32", reason="the real API loads on Windows")
def test_real_api_is_not_loaded_off_windows() -> None:
    win.set_api_for_tests(None)
    assert win.windows_capabilities()["job_scope"] == "not created yet"
    with pytest.raises(OSError, match="Windows"):
        win.get_api()


# -- open_parent_wait (leashed.watch_parent) -----------------------------------------------


def opened_handle(api: FakeApi) -> int:
    return next(iter(api.open_handles))


def test_parent_wait_reports_parent_death(api: FakeApi) -> None:
    api.wait_results = [WAIT_TIMEOUT, WAIT_TIMEOUT, WAIT_OBJECT_0]
    api.peek_results = [0]
    parent, wait, mechanism = win.open_parent_wait(7)

    assert parent == os.getppid()
    assert api.calls[0] == (
        "OpenProcess",
        SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION,
        False,
        parent,
    )
    handle = opened_handle(api)
    assert mechanism == "process handle"
    assert wait() is True
    assert ("PeekNamedPipe", 7) in api.calls
    assert api.calls[-1] == ("CloseHandle", handle)


@pytest.mark.parametrize("peeked", [1, -1])
def test_parent_wait_stops_on_stop_pipe(api: FakeApi, peeked: int) -> None:
    api.wait_results = [WAIT_TIMEOUT, WAIT_TIMEOUT]
    api.peek_results = [peeked]
    _, wait, _ = win.open_parent_wait(7)
    assert wait() is False
    assert not api.open_handles


def test_parent_wait_parent_gone(api: FakeApi) -> None:
    api.fail("OpenProcess", ERROR_INVALID_PARAMETER)
    with pytest.raises(ProcessLookupError):
        win.open_parent_wait(7)


def test_parent_wait_open_denied(api: FakeApi) -> None:
    api.fail("OpenProcess", ERROR_ACCESS_DENIED)
    with pytest.raises(OSError) as caught:
        win.open_parent_wait(7)
    assert not isinstance(caught.value, ProcessLookupError)
    assert winerror(caught.value) == ERROR_ACCESS_DENIED


def test_parent_wait_reused_pid(api: FakeApi) -> None:
    api.creation_times = {CURRENT_PROCESS: 1000, 0x104: 2000}
    with pytest.raises(ProcessLookupError, match="newer process"):
        win.open_parent_wait(7)
    assert not api.open_handles


def test_parent_wait_same_tick_parent_is_accepted(api: FakeApi) -> None:
    api.creation_times = {CURRENT_PROCESS: 1000, 0x104: 1000}
    api.wait_results = [WAIT_TIMEOUT]
    win.open_parent_wait(7)
    assert api.open_handles == {0x104}


def test_parent_wait_parent_exited_but_handle_alive(api: FakeApi) -> None:
    api.wait_results = [WAIT_OBJECT_0]
    with pytest.raises(ProcessLookupError):
        win.open_parent_wait(7)
    assert not api.open_handles


def test_parent_wait_wait_failure_raises(api: FakeApi) -> None:
    api.wait_results = [WAIT_TIMEOUT, WAIT_FAILED]
    api.last_error = ERROR_INVALID_HANDLE
    _, wait, _ = win.open_parent_wait(7)
    with pytest.raises(OSError, match="WaitForSingleObject") as caught:
        wait()
    assert winerror(caught.value) == ERROR_INVALID_HANDLE
    assert not api.open_handles
