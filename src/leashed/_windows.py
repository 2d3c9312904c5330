"""Windows backend: a kill-on-close job object, through ctypes (no pywin32).

Every leashed child is created ``CREATE_SUSPENDED``, assigned to a job object that has
``JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`` and no breakaway flag, and only then resumed, so
no instruction of the child runs outside the job. The job's handle is never closed by
us: when the parent process dies, by any death, the kernel closes its handles, the job's
last handle goes, and the kernel kills every process in the job -- the whole tree, since
a process's children are created in its job and cannot break away from this one.

The kernel32/ntdll calls go through a small API object (``Kernel32Api``) so that the
logic runs, and is tested, on any platform over a fake. The real one is loaded lazily,
on first use, and only on Windows: importing this module never touches ``ctypes.WinDLL``.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, Final, Literal, Protocol

from . import _seam
from ._plan import SIGKILL, LeashPlan

__all__ = [
    "CREATE_BREAKAWAY_FROM_JOB",
    "CREATE_SUSPENDED",
    "IO_COUNTERS",
    "JOBOBJECT_BASIC_LIMIT_INFORMATION",
    "JOBOBJECT_EXTENDED_LIMIT_INFORMATION",
    "ChildLeash",
    "JobHandle",
    "Kernel32Api",
    "ProcessJob",
    "after_spawn",
    "attach_and_resume",
    "caller_wants_suspended",
    "capabilities",
    "check_leash_options",
    "collect_after_timeout",
    "drop",
    "execute_child",
    "get_api",
    "kill_on_close_limits",
    "open_parent_wait",
    "prepare_creationflags",
    "send_signal",
    "set_api_for_tests",
    "windows_capabilities",
]

# -- constants (winbase.h, winnt.h, winerror.h, ntstatus.h) ---------------------------------

CREATE_SUSPENDED: Final = 0x00000004
CREATE_BREAKAWAY_FROM_JOB: Final = 0x01000000

JOB_OBJECT_LIMIT_BREAKAWAY_OK: Final = 0x00000800
JOB_OBJECT_LIMIT_SILENT_BREAKAWAY_OK: Final = 0x00001000
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE: Final = 0x00002000

#: JOBOBJECTINFOCLASS value selecting JOBOBJECT_EXTENDED_LIMIT_INFORMATION.
JobObjectExtendedLimitInformation: Final = 9

ERROR_ACCESS_DENIED: Final = 5
ERROR_INVALID_PARAMETER: Final = 87

SYNCHRONIZE: Final = 0x00100000
PROCESS_QUERY_LIMITED_INFORMATION: Final = 0x00001000
WAIT_OBJECT_0: Final = 0x00000000
WAIT_TIMEOUT: Final = 0x00000102

#: How often a parent watch looks at its stop pipe (an anonymous pipe is not waitable).
_STOP_POLL_MS: Final = 100

#: The exit code of a child we had to terminate because it could not be leashed.
TERMINATED_EXIT_CODE: Final = 1

#: SIGKILL's number; the signal module of Windows has no SIGKILL attribute.

# -- structures ----------------------------------------------------------------------------
# Fixed-width ctypes only (no ctypes.wintypes): LARGE_INTEGER = c_int64, DWORD = c_uint32,
# ULONGLONG = c_uint64, SIZE_T and ULONG_PTR = c_size_t (pointer-sized). The layout is then
# the same on every platform with the same pointer size, so the tests check it on Linux.


class JOBOBJECT_BASIC_LIMIT_INFORMATION(ctypes.Structure):
    """winnt.h. x64: 64 bytes; x86: 48 bytes (LARGE_INTEGER is 8-aligned under MSVC)."""

    # Field order as in winnt.h. On x64 there are two hidden 4-byte holes: after
    # LimitFlags (offset 20, SIZE_T is 8-aligned) and after ActiveProcessLimit (offset 44,
    # ULONG_PTR is 8-aligned); ctypes inserts both exactly as the C compiler does.
    _fields_ = (
        ("PerProcessUserTimeLimit", ctypes.c_int64),  # LARGE_INTEGER, offset 0
        ("PerJobUserTimeLimit", ctypes.c_int64),  # LARGE_INTEGER, offset 8
        ("LimitFlags", ctypes.c_uint32),  # DWORD, offset 16
        ("MinimumWorkingSetSize", ctypes.c_size_t),  # SIZE_T, x64 offset 24
        ("MaximumWorkingSetSize", ctypes.c_size_t),  # SIZE_T, x64 offset 32
        ("ActiveProcessLimit", ctypes.c_uint32),  # DWORD, x64 offset 40
        ("Affinity", ctypes.c_size_t),  # ULONG_PTR, x64 offset 48
        ("PriorityClass", ctypes.c_uint32),  # DWORD, x64 offset 56
        ("SchedulingClass", ctypes.c_uint32),  # DWORD, x64 offset 60
    )
    LimitFlags: int


class IO_COUNTERS(ctypes.Structure):
    """winnt.h: six ULONGLONGs, 48 bytes everywhere."""

    _fields_ = (
        ("ReadOperationCount", ctypes.c_uint64),
        ("WriteOperationCount", ctypes.c_uint64),
        ("OtherOperationCount", ctypes.c_uint64),
        ("ReadTransferCount", ctypes.c_uint64),
        ("WriteTransferCount", ctypes.c_uint64),
        ("OtherTransferCount", ctypes.c_uint64),
    )


class JOBOBJECT_EXTENDED_LIMIT_INFORMATION(ctypes.Structure):
    """winnt.h. x64: 144 bytes (64 + 48 + 4 * 8); x86: 112 bytes (48 + 48 + 4 * 4)."""

    _fields_ = (
        ("BasicLimitInformation", JOBOBJECT_BASIC_LIMIT_INFORMATION),  # offset 0
        ("IoInfo", IO_COUNTERS),  # x64 offset 64
        ("ProcessMemoryLimit", ctypes.c_size_t),  # SIZE_T, x64 offset 112
        ("JobMemoryLimit", ctypes.c_size_t),  # SIZE_T, x64 offset 120
        ("PeakProcessMemoryUsed", ctypes.c_size_t),  # SIZE_T, x64 offset 128
        ("PeakJobMemoryUsed", ctypes.c_size_t),  # SIZE_T, x64 offset 136
    )
    BasicLimitInformation: JOBOBJECT_BASIC_LIMIT_INFORMATION


def kill_on_close_limits() -> bytes:
    """The JOBOBJECT_EXTENDED_LIMIT_INFORMATION we set: kill-on-close and nothing else.

    In particular neither JOB_OBJECT_LIMIT_BREAKAWAY_OK nor
    JOB_OBJECT_LIMIT_SILENT_BREAKAWAY_OK: no process of the tree can leave the job.
    """
    info = JOBOBJECT_EXTENDED_LIMIT_INFORMATION()
    info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    return bytes(info)


# -- the kernel32/ntdll calls --------------------------------------------------------------


class Kernel32Api(Protocol):
    """Exactly the Win32/NT calls this backend makes; handles are plain ints.

    Return values follow the C functions: a handle or 0 (NULL), a BOOL (0 is failure,
    details in ``GetLastError()``), an NTSTATUS (negative when taken as a signed 32-bit
    value means failure; it does not set the last error).
    """

    def CreateJobObjectW(self) -> int:
        """CreateJobObjectW(NULL, NULL): unnamed, default security, handle not inheritable."""
        ...

    def SetInformationJobObject(self, job: int, info_class: int, info: bytes) -> int:
        """SetInformationJobObject(job, info_class, info, len(info))."""
        ...

    def AssignProcessToJobObject(self, job: int, process: int) -> int: ...

    def TerminateProcess(self, process: int, exit_code: int) -> int: ...

    def CloseHandle(self, handle: int) -> int: ...

    def GetLastError(self) -> int:
        """The calling thread's last Win32 error, as left by the last call above."""
        ...

    def NtResumeProcess(self, process: int) -> int:
        """ntdll NtResumeProcess: resumes every thread of the process; returns NTSTATUS."""
        ...

    def RtlNtStatusToDosError(self, status: int) -> int:
        """ntdll: the Win32 error code that corresponds to an NTSTATUS."""
        ...

    # Used by open_parent_wait (leashed.watch_parent) only.

    def OpenProcess(self, access: int, inherit: bool, pid: int) -> int: ...

    def GetCurrentProcess(self) -> int: ...

    def GetProcessTimes(self, process: int) -> int | None:
        """GetProcessTimes' creation time (FILETIME as an int), None on failure."""
        ...

    def WaitForSingleObject(self, handle: int, timeout_ms: int) -> int: ...

    def PeekNamedPipe(self, fd: int) -> int:
        """Bytes waiting in the pipe behind C runtime ``fd``; -1 if broken or failed."""
        ...


class _RealApi:
    """Kernel32Api over ``ctypes.WinDLL``; see ``_load_real_api`` for the loading."""

    def __init__(
        self, kernel32: ctypes.CDLL, ntdll: ctypes.CDLL, get_last_error: Callable[[], int]
    ) -> None:
        handle = ctypes.c_void_p
        bool_ = ctypes.c_int  # BOOL
        dword = ctypes.c_uint32
        _declare(kernel32, "CreateJobObjectW", handle, handle, ctypes.c_wchar_p)
        _declare(kernel32, "SetInformationJobObject", bool_, handle, ctypes.c_int, handle, dword)
        _declare(kernel32, "AssignProcessToJobObject", bool_, handle, handle)
        _declare(kernel32, "TerminateProcess", bool_, handle, ctypes.c_uint)
        _declare(kernel32, "CloseHandle", bool_, handle)
        _declare(ntdll, "NtResumeProcess", ctypes.c_long, handle)  # NTSTATUS
        _declare(ntdll, "RtlNtStatusToDosError", ctypes.c_ulong, ctypes.c_long)
        _declare(kernel32, "OpenProcess", handle, dword, bool_, dword)
        _declare(kernel32, "GetCurrentProcess", handle)
        filetime_p = ctypes.POINTER(ctypes.c_uint64)  # FILETIME: two DWORDs, 64 bits
        _declare(kernel32, "GetProcessTimes", bool_, handle, *[filetime_p] * 4)
        _declare(kernel32, "WaitForSingleObject", dword, handle, dword)
        dword_p = ctypes.POINTER(ctypes.c_uint32)
        _declare(kernel32, "PeekNamedPipe", bool_, handle, handle, dword, dword_p, dword_p, dword_p)
        self._kernel32 = kernel32
        self._ntdll = ntdll
        self._get_last_error = get_last_error
        self._get_osfhandle: Callable[[int], int] = _get_osfhandle

    def CreateJobObjectW(self) -> int:
        return int(self._kernel32.CreateJobObjectW(None, None) or 0)

    def SetInformationJobObject(self, job: int, info_class: int, info: bytes) -> int:
        # An 8-byte-aligned copy: the kernel checks the alignment of what it is given.
        buffer = (ctypes.c_uint64 * ((len(info) + 7) // 8))()
        ctypes.memmove(buffer, info, len(info))
        return int(self._kernel32.SetInformationJobObject(job, info_class, buffer, len(info)))

    def AssignProcessToJobObject(self, job: int, process: int) -> int:
        return int(self._kernel32.AssignProcessToJobObject(job, process))

    def TerminateProcess(self, process: int, exit_code: int) -> int:
        return int(self._kernel32.TerminateProcess(process, exit_code))

    def CloseHandle(self, handle: int) -> int:
        return int(self._kernel32.CloseHandle(handle))

    def GetLastError(self) -> int:
        # With use_last_error=True ctypes saves the error right after each foreign call;
        # calling kernel32's GetLastError from Python could see a later call's error.
        return self._get_last_error()

    def NtResumeProcess(self, process: int) -> int:
        return int(self._ntdll.NtResumeProcess(process))

    def RtlNtStatusToDosError(self, status: int) -> int:
        return int(self._ntdll.RtlNtStatusToDosError(_signed32(status)))

    def OpenProcess(self, access: int, inherit: bool, pid: int) -> int:
        return int(self._kernel32.OpenProcess(access, inherit, pid) or 0)

    def GetCurrentProcess(self) -> int:
        # The pseudo-handle (HANDLE)-1: c_void_p gives it back as an unsigned int.
        return int(self._kernel32.GetCurrentProcess() or 0)

    def GetProcessTimes(self, process: int) -> int | None:
        creation, exited, kernel, user = (ctypes.c_uint64() for _ in range(4))
        ok = self._kernel32.GetProcessTimes(
            process,
            ctypes.byref(creation),
            ctypes.byref(exited),
            ctypes.byref(kernel),
            ctypes.byref(user),
        )
        return int(creation.value) if ok else None

    def WaitForSingleObject(self, handle: int, timeout_ms: int) -> int:
        return int(self._kernel32.WaitForSingleObject(handle, timeout_ms))

    def PeekNamedPipe(self, fd: int) -> int:
        try:
            pipe = self._get_osfhandle(fd)
        except OSError:
            return -1
        available = ctypes.c_uint32()
        ok = self._kernel32.PeekNamedPipe(pipe, None, 0, None, ctypes.byref(available), None)
        return int(available.value) if ok else -1


def _declare(dll: ctypes.CDLL, name: str, restype: object, *argtypes: object) -> None:
    function = getattr(dll, name)
    function.restype = restype
    function.argtypes = argtypes


def _get_osfhandle(fd: int) -> int:
    if sys.platform != "win32":
        raise OSError(f"no Win32 handle behind fd {fd} on {sys.platform}")
    import msvcrt

    return msvcrt.get_osfhandle(fd)


def _load_real_api() -> Kernel32Api:
    if sys.platform != "win32":
        raise OSError(f"the Windows job-object backend cannot run on {sys.platform}")
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    ntdll = ctypes.WinDLL("ntdll")
    return _RealApi(kernel32, ntdll, ctypes.get_last_error)


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _nt_success(status: int) -> bool:
    """NT_SUCCESS(): success and informational codes are >= 0 as a signed 32-bit value."""
    return _signed32(status) >= 0


def _win_error(code: int, message: str) -> OSError:
    """An OSError as ``ctypes.WinError(code)`` builds it, with our message in front.

    On Windows ``winerror`` is set and errno (hence the subclass, e.g. PermissionError for
    ERROR_ACCESS_DENIED) is derived from it. Elsewhere (the fake-kernel tests) OSError has
    no ``winerror`` field, so it is attached as an attribute of the same name.
    """
    if sys.platform == "win32":
        detail = ctypes.FormatError(code).strip()
        return OSError(None, f"{message}: {detail}" if detail else message, None, code)
    error = OSError(None, f"{message} (winerror {code})")
    setattr(error, "winerror", code)  # noqa: B010 -- no such attribute in typeshed here
    return error


# -- the API in use ------------------------------------------------------------------------

JobStatus = Literal["not created yet", "process-wide", "per-child"]


class JobHandle:
    """The job a child was assigned to; the Popen object keeps it as long as it lives.

    ``shared`` is True for the process-wide job. A per-child job (the fallback) belongs to
    its child alone; nothing closes it implicitly (no ``__del__``), because closing it kills
    whatever still runs in it: a dropped Popen must not end a child that may still run.
    """

    __slots__ = ("_api", "_closed", "handle", "shared")

    def __init__(self, api: Kernel32Api, handle: int, *, shared: bool) -> None:
        self._api = api
        self._closed = False
        self.handle = handle
        self.shared = shared

    def close(self) -> None:
        """Close a per-child job: this KILLS every process still in it (kill-on-close).

        A no-op for the shared process-wide job, which is never closed.
        """
        if self.shared or self._closed:
            return
        self._closed = True
        self._api.CloseHandle(self.handle)

    def __repr__(self) -> str:
        scope = "process-wide" if self.shared else "per-child"
        return f"<JobHandle {scope} handle={self.handle:#x}>"


class ProcessJob:
    """The process-wide kill-on-close job, created on first use, its handle never closed.

    If the process-wide job cannot be created or configured, every child gets a job of
    its own instead (created, configured, assigned, kept on its Popen object): the leash
    holds either way, and ``status`` says which, with ``fallback_reason`` saying why.
    The process-wide job is tried once; a failure is not retried for later children.
    """

    def __init__(self, api: Kernel32Api) -> None:
        self._api = api
        self._lock = threading.Lock()
        self._shared: JobHandle | None = None
        self.status: JobStatus = "not created yet"
        self.fallback_reason: str | None = None

    def job_for_child(self) -> JobHandle:
        """The job the next child goes into; raises OSError if no job can be had at all."""
        with self._lock:
            if self.status == "not created yet":
                try:
                    self._shared = self._create_configured(shared=True)
                    self.status = "process-wide"
                except OSError as error:
                    self.status = "per-child"
                    self.fallback_reason = str(error)
            if self._shared is not None:
                return self._shared
        return self._create_configured(shared=False)

    def _create_configured(self, *, shared: bool) -> JobHandle:
        api = self._api
        what = "process-wide job" if shared else "per-child job"
        handle = api.CreateJobObjectW()
        if not handle:
            raise _win_error(api.GetLastError(), f"CreateJobObjectW failed for the {what}")
        if not api.SetInformationJobObject(
            handle, JobObjectExtendedLimitInformation, kill_on_close_limits()
        ):
            code = api.GetLastError()
            api.CloseHandle(handle)  # still empty: closing it ends nothing
            raise _win_error(code, f"SetInformationJobObject(kill-on-close) failed for the {what}")
        return JobHandle(api, handle, shared=shared)


class _Backend:
    def __init__(self, api: Kernel32Api) -> None:
        self.api = api
        self.job = ProcessJob(api)


_backend_lock = threading.Lock()
_backend: _Backend | None = None


def _get_backend() -> _Backend:
    global _backend
    with _backend_lock:
        if _backend is None:
            _backend = _Backend(_load_real_api())
        return _backend


def get_api() -> Kernel32Api:
    """The API in use: the real kernel32/ntdll one, loaded on first call (Windows only)."""
    return _get_backend().api


def set_api_for_tests(api: Kernel32Api | None) -> None:
    """Use ``api`` from now on, with a fresh job state; None returns to the real API."""
    global _backend
    with _backend_lock:
        _backend = None if api is None else _Backend(api)


# -- what the rest of the package calls ----------------------------------------------------


def prepare_creationflags(flags: int) -> int:
    """The caller's ``creationflags`` plus CREATE_SUSPENDED, so the child waits for its job.

    Every flag of the caller's is kept (CREATE_NEW_CONSOLE, CREATE_NO_WINDOW,
    CREATE_NEW_PROCESS_GROUP, ...). CREATE_BREAKAWAY_FROM_JOB is refused: a child that
    breaks away from the job is not leashed. If the caller passed CREATE_SUSPENDED
    themselves, they expect the child to stay suspended: see ``caller_wants_suspended``.
    """
    flags = int(flags)
    if flags & CREATE_BREAKAWAY_FROM_JOB:
        raise ValueError(
            "creationflags must not include CREATE_BREAKAWAY_FROM_JOB (0x01000000): "
            "a child that breaks away from the job would not be leashed"
        )
    return flags | CREATE_SUSPENDED


def caller_wants_suspended(flags: int) -> bool:
    """True if the caller's own ``creationflags`` asked for a suspended child: keep it so."""
    return bool(int(flags) & CREATE_SUSPENDED)


def attach_and_resume(process_handle: int, pid: int, *, keep_suspended: bool) -> JobHandle:
    """Put a child created CREATE_SUSPENDED into the kill-on-close job, then resume it.

    The child is resumed with ntdll's NtResumeProcess, by process handle, because
    ``subprocess`` closes the primary thread's handle inside ``_execute_child``. With
    ``keep_suspended`` (the caller asked for CREATE_SUSPENDED) it is assigned but not
    resumed. Returns the job; keep it as long as the child may run.

    If no job can be had, or the assignment or the resume fails, the child is terminated
    (TerminateProcess, exit code 1) and OSError is raised with ``winerror`` set, naming
    the call that failed: never an unleashed child, never one suspended for ever.

    Nested jobs: if the parent itself runs in a job (a CI runner, a service host, Task
    Scheduler), the child starts in that job too, and Windows 8 and later nest our job
    inside it. Where nesting is impossible -- Windows 7 and earlier, or a parent job with
    UI restrictions -- AssignProcessToJobObject fails with ERROR_ACCESS_DENIED. That is
    raised like any other failure (the child is terminated), never ignored: a child we
    cannot put in our job is a child we cannot leash.
    """
    backend = _get_backend()
    api = backend.api
    try:
        job = backend.job.job_for_child()
    except OSError as error:
        note = _terminate(api, process_handle)
        raise _win_error(
            _winerror_of(error),
            f"no kill-on-close job for child pid {pid} ({error.strerror or error}); "
            f"the child was {note}",
        ) from error

    if not api.AssignProcessToJobObject(job.handle, process_handle):
        code = api.GetLastError()
        note = _terminate(api, process_handle)
        job.close()
        message = f"AssignProcessToJobObject failed for child pid {pid}; the child was {note}"
        if code == ERROR_ACCESS_DENIED:
            message += (
                ". This process is probably in a job that forbids nested jobs (Windows 7 "
                "and earlier, or a job with UI restrictions), so its children cannot be "
                "leashed by a job object"
            )
        raise _win_error(code, message)

    if keep_suspended:
        return job
    status = api.NtResumeProcess(process_handle)
    if not _nt_success(status):
        code = api.RtlNtStatusToDosError(status)
        note = _terminate(api, process_handle)
        job.close()  # per-child job: closing it is one more kill
        raise _win_error(
            code,
            f"NtResumeProcess failed for child pid {pid} with NTSTATUS "
            f"{status & 0xFFFFFFFF:#010x}; the child was {note}",
        )
    return job


def _terminate(api: Kernel32Api, process_handle: int) -> str:
    """TerminateProcess(child, 1); describes the outcome for an error message."""
    if api.TerminateProcess(process_handle, TERMINATED_EXIT_CODE):
        return "terminated"
    return f"NOT terminated (TerminateProcess failed with winerror {api.GetLastError()})"


def _winerror_of(error: OSError) -> int:
    code = getattr(error, "winerror", None)
    return code if isinstance(code, int) else 0


def check_leash_options(tree: bool, grace: float | None, death_signal: int | None) -> None:
    """Refuse what a kill-on-close job cannot do, naming the argument.

    ``tree`` is accepted either way: on Windows the whole tree is always leashed. A
    ``grace`` (other than None or 0) and a ``death_signal`` other than None or SIGKILL
    (9) cannot be honoured: the kernel ends the job's processes at once, as
    TerminateProcess does, with no signal and no delay.
    """
    del tree  # always on
    if grace is not None and grace != 0:
        raise ValueError(
            "grace is not supported on Windows: a kill-on-close job ends its processes at once"
        )
    if death_signal is not None and int(death_signal) != SIGKILL:
        raise ValueError(
            f"death_signal={int(death_signal)} is not supported on Windows: a kill-on-close "
            "job ends its processes at once, as TerminateProcess does (only SIGKILL, 9)"
        )


def capabilities() -> dict[str, object]:
    """The Windows backend's report for leashed.capabilities(): the job object only."""
    return {
        "platform": sys.platform,
        "helper": None,
        "default": "job",
        "mechanisms": {"job": windows_capabilities()},
    }


def windows_capabilities() -> dict[str, object]:
    """What the job-object leash guarantees here, and which job scope is in use.

    Does not create the job: ``job_scope`` is "not created yet" before the first leashed
    child, then "process-wide", or "per-child" if the process-wide job failed (with
    ``job_fallback_reason``).
    """
    backend = _backend  # report without loading the API
    job = backend.job if backend is not None else None
    return {
        "available": True,
        "how": "job object, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE",
        "whole_tree": True,
        "race_free": True,
        "notes": [],
        "race_free_how": "child created CREATE_SUSPENDED, assigned to the job, then resumed",
        "any_death": True,
        "breakaway": "refused (no BREAKAWAY_OK limit; CREATE_BREAKAWAY_FROM_JOB rejected)",
        "grace": False,
        "grace_note": "unsupported: kill-on-close is immediate (TerminateProcess semantics)",
        "death_signals": (SIGKILL,),
        "death_signal_note": "only the default (SIGKILL): the job kills, it sends no signal",
        "nested_jobs": "Windows 8+; where the parent's job forbids nesting, spawning fails",
        "job_scope": job.status if job is not None else "not created yet",
        "job_fallback_reason": job.fallback_reason if job is not None else None,
    }


def open_parent_wait(stop_fd: int) -> tuple[int, Callable[[], bool], str]:
    """For ``leashed.watch_parent``: a handle on this process's parent, and a waiter.

    Returns ``(parent_pid, wait, method)``. ``wait()`` blocks until the parent exits
    (True) or ``stop_fd`` -- the read end of an ``os.pipe()`` -- becomes readable or
    broken (False); it closes the parent's handle when it returns. Identity: the handle
    names the process itself, and a parent created after this process cannot be ours (its
    pid was reused after our parent died), which is reported as an exited parent. Raises
    ProcessLookupError if the parent is already gone, OSError if it cannot be opened.
    """
    api = get_api()
    parent = os.getppid()
    handle = api.OpenProcess(SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION, False, parent)
    if not handle:
        code = api.GetLastError()
        if code == ERROR_INVALID_PARAMETER:  # no process with that pid
            raise ProcessLookupError(f"parent process {parent} has already exited")
        raise _win_error(code, f"OpenProcess failed for the parent process {parent}")
    try:
        parent_created = api.GetProcessTimes(handle)
        own_created = api.GetProcessTimes(api.GetCurrentProcess())
        if parent_created is None or own_created is None:
            raise _win_error(api.GetLastError(), "GetProcessTimes failed")
        # Creation times tick coarsely (~15.6 ms): a real parent may tie with us, so only
        # "strictly later" proves a reused pid.
        if parent_created > own_created:
            raise ProcessLookupError(
                f"parent process {parent} has already exited (its pid now names a newer process)"
            )
        if api.WaitForSingleObject(handle, 0) == WAIT_OBJECT_0:
            raise ProcessLookupError(f"parent process {parent} has already exited")
    except BaseException:
        api.CloseHandle(handle)
        raise

    def wait() -> bool:
        try:
            while True:
                result = api.WaitForSingleObject(handle, _STOP_POLL_MS)
                if result == WAIT_OBJECT_0:
                    return True
                if result != WAIT_TIMEOUT:
                    raise _win_error(
                        api.GetLastError(), f"WaitForSingleObject failed on parent {parent}"
                    )
                if api.PeekNamedPipe(stop_fd) != 0:
                    return False
        finally:
            api.CloseHandle(handle)

    return parent, wait, "process handle"


# -- the backend interface (as _posix's) ----------------------------------------------------


class ChildLeash:
    """What a Windows child's leash holds: the job it was put in (kept while it may run)."""

    def __init__(self, plan: LeashPlan) -> None:
        self.plan = plan
        self.job: JobHandle | None = None

    def close(self) -> None:
        """Nothing to release: the job is closed only by this process's death."""


def after_spawn(popen: Any, requested_flags: int) -> JobHandle:
    """Put a child created suspended by the stdlib (or by asyncio) into the job, resume it.

    On failure the child has been terminated and the error is raised; the caller reaps it.
    """
    return attach_and_resume(
        int(popen._handle), popen.pid, keep_suspended=caller_wants_suspended(requested_flags)
    )


def execute_child(popen: Any, call: dict[str, Any]) -> None:
    """The stdlib's own CreateProcess, suspended, then into the kill-on-close job."""
    requested = call["creationflags"]
    call["creationflags"] = prepare_creationflags(requested)
    _seam.STDLIB_EXECUTE_CHILD(popen, **call)
    try:
        popen._leash.job = after_spawn(popen, requested)
    except BaseException:
        _seam.reap_failed_start(popen)
        raise


def collect_after_timeout(popen: Any, exc: Any) -> None:
    """run()'s clean-up after a timeout and kill(), as subprocess's on Windows: the
    output read so far goes into the exception."""
    exc.stdout, exc.stderr = popen.communicate()


def send_signal(popen: Any, sig: int, stdlib_send: Callable[[int], None]) -> None:
    """As subprocess's (TerminateProcess for SIGTERM/SIGKILL, CTRL events)."""
    del popen
    stdlib_send(sig)


def drop(popen: Any) -> None:
    """A dropped child with kill_on_drop ends at once, as the job would end it."""
    if popen.poll() is None:
        popen.kill()
