"""Windows, real processes: a leashed child and its grandchild die with their parent.

Each scenario starts a parent Python process (plain ``subprocess``) that starts a child,
which starts a grandchild with plain ``subprocess``; child and grandchild write their pids
to files and sleep. The test opens a handle on each as soon as its pid file appears (a
handle pins the process: its pid cannot be reused while we hold it), then ends the parent:

- ``sigkill``: SIGKILL of the parent's Unix process (Wine only: there each Windows process
  is one Unix process; found by a unique marker in its command line);
- ``taskkill``: ``taskkill /F /PID`` (TerminateProcess, the Windows analogue);
- ``exit``: the parent returns normally (exit code 0) with its children still running.

The leashed scenarios must leave no survivor; the same trees spawned with plain
``subprocess`` (or without ``watch_parent``) are the control: both processes must survive,
so the test can fail. Everything left is terminated through the handles we hold.
"""

from __future__ import annotations

import ctypes
import functools
import os
import subprocess
import sys
import textwrap
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "win32", reason="Windows job objects")

SYNCHRONIZE = 0x00100000
PROCESS_TERMINATE = 0x0001
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
WAIT_OBJECT_0 = 0
WAIT_TIMEOUT = 0x102

#: How long leashed processes may take to die after their parent (they take milliseconds).
DEATH_DEADLINE_S = 10.0
#: How long the control tree is watched once the leashed one is gone (which takes
#: milliseconds under Wine: gone when the parent's handle is signalled): it must live.
CONTROL_WATCH_S = 1.0
#: How long a scenario may take to get its child and grandchild running.
START_DEADLINE_S = 60.0
#: How a failed start in Wine's own process start-up shows (NtCreateUserProcess returns
#: STATUS_INTERNAL_ERROR when the new process dies before its initialisation is done).
ERROR_INTERNAL_ERROR = 1359
WINE_START_FAILURE = f"[WinError {ERROR_INTERNAL_ERROR}]"
#: How often a scenario is started before such failures count as the test's.
WINE_START_ATTEMPTS = 3


def _kernel32() -> ctypes.CDLL:
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
    handle = ctypes.c_void_p
    kernel32.OpenProcess.restype = handle
    kernel32.OpenProcess.argtypes = (ctypes.c_uint32, ctypes.c_int, ctypes.c_uint32)
    kernel32.WaitForSingleObject.restype = ctypes.c_uint32
    kernel32.WaitForSingleObject.argtypes = (handle, ctypes.c_uint32)
    kernel32.TerminateProcess.restype = ctypes.c_int
    kernel32.TerminateProcess.argtypes = (handle, ctypes.c_uint)
    kernel32.CloseHandle.restype = ctypes.c_int
    kernel32.CloseHandle.argtypes = (handle,)
    return kernel32


def _wine_version() -> str | None:
    if sys.platform != "win32":
        return None
    ntdll = ctypes.WinDLL("ntdll")  # type: ignore[attr-defined,unused-ignore]
    try:
        get_version = ntdll.wine_get_version
    except AttributeError:
        return None
    get_version.restype = ctypes.c_char_p
    return str(get_version().decode())


WINE = _wine_version()

T = TypeVar("T")


class WineStartFailed(Exception):
    """A process of the scenario died in Wine's start-up, before any of our code ran."""


def _wine_retry(start: Callable[[], T]) -> T:
    """``start()``, started again if Wine fails a process start with its internal error."""
    for _ in range(WINE_START_ATTEMPTS - 1):
        try:
            return start()
        except OSError as error:
            if WINE is None or getattr(error, "winerror", None) != ERROR_INTERNAL_ERROR:
                raise
            warnings.warn(f"Wine failed to start a process, started again: {error}", stacklevel=2)
    return start()


@functools.cache
def getppid_dies() -> bool:
    """CPython 3.12+ implements os.getppid() with PssCaptureSnapshot, which Wine 8 lacks:
    the process dies. watch_parent needs getppid; see whether it works here."""
    if WINE is None or sys.version_info < (3, 12):
        return False
    # No pipes: Wine's crash handler may start processes that inherit and keep them open.
    probe = _wine_retry(
        lambda: subprocess.run(
            [sys.executable, "-c", "import os; os.getppid()"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
    )
    return probe.returncode != 0


class Tracked:
    """A process we hold a handle on, by pid; terminated through that handle at the end."""

    def __init__(self, kernel32: ctypes.CDLL, pid: int, what: str) -> None:
        self.pid = pid
        self.what = what
        self._kernel32 = kernel32
        access = SYNCHRONIZE | PROCESS_TERMINATE | PROCESS_QUERY_LIMITED_INFORMATION
        handle = kernel32.OpenProcess(access, False, pid)
        if not handle:
            raise OSError(f"OpenProcess({what} pid {pid}) failed: {ctypes.get_last_error()}")
        self.handle: int = handle

    def wait_dead(self, timeout: float) -> bool:
        result = self._kernel32.WaitForSingleObject(self.handle, int(timeout * 1000))
        if result not in (WAIT_OBJECT_0, WAIT_TIMEOUT):
            raise OSError(f"WaitForSingleObject({self.what}) failed: {ctypes.get_last_error()}")
        return bool(result == WAIT_OBJECT_0)

    def alive(self) -> bool:
        return not self.wait_dead(0)

    def terminate(self) -> None:
        if self.alive():
            self._kernel32.TerminateProcess(self.handle, 1)
            self.wait_dead(10)

    def close(self) -> None:
        self._kernel32.CloseHandle(self.handle)


TREES = ("leashed", "control")


@dataclass
class Scenario:
    """One parent with two trees: one leashed, one not (the control), ended together."""

    tmp: Path
    kernel32: ctypes.CDLL
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    parent: subprocess.Popen[bytes] | None = None
    tracked: dict[str, list[Tracked]] = field(default_factory=dict)

    def start(self, parent_code: str, children: dict[str, str], end: str) -> None:
        """Start the parent; return once both trees run and each process is tracked.

        Under Wine a process now and then dies in Wine's own start-up, before any code
        of ours runs (CreateProcess: ERROR_INTERNAL_ERROR; plain subprocess does it too,
        about once in 1,500 starts when several Windows programs start at once). Such an
        attempt is ended and the scenario started again in a fresh directory.
        """
        root = self.tmp
        for attempt in range(1, WINE_START_ATTEMPTS + 1):
            self.tmp = root / f"attempt{attempt}"
            self.tmp.mkdir()
            self.marker = uuid.uuid4().hex
            try:
                self._start_once(parent_code, children, end)
                return
            except WineStartFailed as failure:
                self.cleanup()
                self.tracked = {}
                if attempt == WINE_START_ATTEMPTS:
                    raise AssertionError(f"{attempt} starts failed in Wine: {failure}") from None
                warnings.warn(f"Wine failed to start a process, scenario started again: "
                              f"{failure}", stacklevel=2)  # fmt: skip

    def _start_once(self, parent_code: str, children: dict[str, str], end: str) -> None:
        (self.tmp / "grandchild.py").write_text(GRANDCHILD)
        for tree in TREES:
            (self.tmp / tree).mkdir()
            (self.tmp / tree / "child.py").write_text(children[tree])
        with open(self.tmp / "parent.err", "wb") as err:
            self.parent = _wine_retry(
                lambda: subprocess.Popen(
                    [sys.executable, "-c", parent_code, str(self.tmp), end, self.marker],
                    stdin=subprocess.DEVNULL,
                    stdout=err,
                    stderr=err,
                )
            )
        for tree in TREES:
            self.tracked[tree] = []
            for what in ("child", "grandchild"):
                pid = int(self._wait_for(f"{tree}/{what}.pid").read_text())
                self.tracked[tree].append(Tracked(self.kernel32, pid, what))
        self._wait_for("parent.ready")

    def _wait_for(self, name: str) -> Path:
        path = self.tmp / name
        deadline = time.monotonic() + START_DEADLINE_S
        while not path.exists():
            assert self.parent is not None
            errors = self.errors()
            if WINE is not None and WINE_START_FAILURE in errors:
                raise WineStartFailed(errors)
            if self.parent.poll() is not None and not path.exists():
                raise AssertionError(f"parent exited ({self.parent.returncode}): {self.errors()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {name} in {START_DEADLINE_S}s: {self.errors()}")
            time.sleep(0.02)
        return path

    def errors(self) -> str:
        path = self.tmp / "parent.err"
        return path.read_text(errors="replace") if path.exists() else ""

    def end_parent(self, how: str) -> None:
        assert self.parent is not None
        if how == "sigkill":
            sigkill_unix_process(self.tmp, self.marker)
        elif how == "taskkill":
            pid = self.parent.pid
            result = _wine_retry(
                lambda: subprocess.run(
                    ["taskkill", "/F", "/PID", str(pid)],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=60,
                )
            )
            assert result.returncode == 0, result
        returncode = self.parent.wait(timeout=60)
        if how == "exit":
            assert returncode == 0, self.errors()

    def survivors(self) -> dict[str, list[str]]:
        """Who lives once the leashed tree is gone (or DEATH_DEADLINE_S passed), and
        CONTROL_WATCH_S more: the control tree is watched at least that long."""
        deadline = time.monotonic() + DEATH_DEADLINE_S
        for process in self.tracked["leashed"]:
            process.wait_dead(max(0.0, deadline - time.monotonic()))
        time.sleep(CONTROL_WATCH_S)
        return {tree: [p.what for p in self.tracked[tree] if p.alive()] for tree in TREES}

    def cleanup(self) -> None:
        for processes in self.tracked.values():
            for process in processes:
                process.terminate()
                process.close()
        if self.parent is not None and self.parent.poll() is None:
            self.parent.kill()
            self.parent.wait(timeout=30)


@pytest.fixture
def scenario(tmp_path: Path) -> Iterator[Scenario]:
    made = Scenario(tmp_path, _kernel32())
    try:
        yield made
    finally:
        made.cleanup()


def _wine_unix_path(path: Path) -> str:
    kernel32 = ctypes.WinDLL("kernel32")  # type: ignore[attr-defined,unused-ignore]
    to_unix = kernel32.wine_get_unix_file_name
    to_unix.restype = ctypes.c_void_p
    to_unix.argtypes = (ctypes.c_wchar_p,)
    buffer = to_unix(str(path))
    assert buffer, f"no Unix path for {path}"
    return ctypes.string_at(buffer).decode()


def _wine_dos_path(path: str) -> Path:
    kernel32 = ctypes.WinDLL("kernel32")  # type: ignore[attr-defined,unused-ignore]
    to_dos = kernel32.wine_get_dos_file_name
    to_dos.restype = ctypes.c_void_p
    to_dos.argtypes = (ctypes.c_char_p,)
    buffer = to_dos(path.encode())
    assert buffer, f"no DOS path for {path}"
    return Path(ctypes.wstring_at(buffer))


_KILL_SCRIPT = """\
kill -KILL "$1"
echo $? > "$2.tmp" && mv "$2.tmp" "$2"
"""


class _StartupInfoW(ctypes.Structure):
    _fields_ = (
        ("cb", ctypes.c_uint32),
        ("lpReserved", ctypes.c_wchar_p),
        ("lpDesktop", ctypes.c_wchar_p),
        ("lpTitle", ctypes.c_wchar_p),
        *((name, ctypes.c_uint32) for name in ("dwX", "dwY", "dwXSize", "dwYSize")),
        *((name, ctypes.c_uint32) for name in ("dwXCountChars", "dwYCountChars")),
        ("dwFillAttribute", ctypes.c_uint32),
        ("dwFlags", ctypes.c_uint32),
        ("wShowWindow", ctypes.c_uint16),
        ("cbReserved2", ctypes.c_uint16),
        ("lpReserved2", ctypes.c_void_p),
        ("hStdInput", ctypes.c_void_p),
        ("hStdOutput", ctypes.c_void_p),
        ("hStdError", ctypes.c_void_p),
    )


class _ProcessInformation(ctypes.Structure):
    _fields_ = (
        ("hProcess", ctypes.c_void_p),
        ("hThread", ctypes.c_void_p),
        ("dwProcessId", ctypes.c_uint32),
        ("dwThreadId", ctypes.c_uint32),
    )


def _start_unix_program(argv: list[str]) -> None:
    """Run a Unix program from inside Wine, which starts it as a plain Unix process.

    Wine's CreateProcessW then succeeds with a NULL process handle and leaves the thread
    handle unset: subprocess and os.spawnv would close that stale value, which can be one
    of our own handles. So: CreateProcessW directly, zeroed output, nothing to close.
    """
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
    create = kernel32.CreateProcessW
    create.restype = ctypes.c_int
    startup = _StartupInfoW()
    startup.cb = ctypes.sizeof(startup)
    info = _ProcessInformation()
    command = ctypes.create_unicode_buffer(subprocess.list2cmdline(argv))
    ok = create(None, command, None, None, False, 0, None, None, ctypes.byref(startup),
                ctypes.byref(info))  # fmt: skip
    assert ok, f"CreateProcessW({argv}) failed: {ctypes.get_last_error()}"
    assert not info.hProcess, "a Windows process handle for a Unix program?"


def sigkill_unix_process(tmp: Path, marker: str) -> None:
    """SIGKILL the one Unix process whose command line holds ``marker`` (Wine only).

    /bin/sh runs kill(1) and writes kill's exit status to a file.
    """
    proc = _wine_dos_path("/proc")
    found = []
    for entry in os.listdir(proc):
        if entry.isdigit():
            try:
                command = (proc / entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker.encode() in command:
                found.append(entry)
    assert len(found) == 1, f"Unix processes with the parent's marker: {found}"
    script = tmp / "kill.sh"
    script.write_text(_KILL_SCRIPT, newline="\n")
    status = tmp / "kill.status"
    _start_unix_program(["/bin/sh", _wine_unix_path(script), found[0], _wine_unix_path(status)])
    deadline = time.monotonic() + 30
    while not status.exists():
        assert time.monotonic() < deadline, "kill(1) did not report"
        time.sleep(0.02)
    assert status.read_text().strip() == "0", f"kill -KILL {found[0]} failed"


# -- the programs ---------------------------------------------------------------------------

_WRITE_PID = """
def write_pid(directory, what):
    path = os.path.join(directory, what + ".pid")
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
"""

GRANDCHILD = (
    "import os, sys, time\n"
    + _WRITE_PID
    + textwrap.dedent("""
    write_pid(sys.argv[1], "grandchild")
    time.sleep(300)
    """)
)

#: The child: starts the grandchild with plain subprocess, writes its pid, sleeps.
CHILD = (
    "import os, subprocess, sys, time\n"
    + _WRITE_PID
    + textwrap.dedent("""
    directory = sys.argv[1]
    grandchild = os.path.join(directory, "..", "grandchild.py")
    subprocess.Popen([sys.executable, grandchild, directory], stdin=subprocess.DEVNULL)
    write_pid(directory, "child")
    time.sleep(300)
    """)
)

#: The child of the watch_parent scenarios: the leashed one watches its parent and leashes
#: the grandchild; the control one does neither.
_WATCH_CHILD = (
    "import os, subprocess, sys, time\n"
    "import leashed\n"
    + _WRITE_PID
    + textwrap.dedent("""
    directory = sys.argv[1]
    WATCH
    SPAWN([sys.executable, os.path.join(directory, "..", "grandchild.py"), directory],
          stdin=subprocess.DEVNULL)
    write_pid(directory, "child")
    time.sleep(300)
    """)
)
WATCHING_CHILD = _WATCH_CHILD.replace("WATCH\n", "watch = leashed.watch_parent()\n").replace(
    "SPAWN(", "grandchild = leashed.Popen(kill_on_drop=False, args="
)
UNWATCHED_CHILD = _WATCH_CHILD.replace("WATCH\n", "").replace("SPAWN(", "subprocess.Popen(")

#: The parent's common part: wait for every pid file, say ready, then sleep or return.
_PARENT_COMMON = """
def wait_started(directory):
    while not all(os.path.exists(os.path.join(directory, tree, what + ".pid"))
                  for tree in ("leashed", "control") for what in ("child", "grandchild")):
        time.sleep(0.01)
    with open(os.path.join(directory, "parent.ready"), "w"):
        pass

def child_argv(tree):
    return [sys.executable, os.path.join(directory, tree, "child.py"),
            os.path.join(directory, tree)]
"""


def _parent(body: str) -> str:
    return (
        "import asyncio, os, subprocess, sys, time\n"
        "import leashed, leashed.asyncio\n"
        + "directory, end = sys.argv[1], sys.argv[2]\n"
        + _PARENT_COMMON
        + textwrap.dedent(body)
    )


#: kill_on_drop=False: at a normal exit only the job may end the leashed child.
POPEN_PARENT = _parent("""
    leashed_child = leashed.Popen(child_argv("leashed"), stdin=subprocess.DEVNULL,
                                  kill_on_drop=False)
    control_child = subprocess.Popen(child_argv("control"), stdin=subprocess.DEVNULL)
    wait_started(directory)
    if end != "exit":
        time.sleep(300)
    """)

#: asyncio's transport kills its child when it is closed or collected; the "exit" end
#: leaves with ExitProcess (os._exit(0)) before that, so only the job can end the child.
ASYNCIO_PARENT = _parent("""
    async def main():
        assert isinstance(asyncio.get_running_loop(), asyncio.ProactorEventLoop)
        leashed_child = await leashed.asyncio.create_subprocess_exec(
            *child_argv("leashed"), stdin=subprocess.DEVNULL)
        control_child = await asyncio.create_subprocess_exec(
            *child_argv("control"), stdin=subprocess.DEVNULL)
        wait_started(directory)
        if end == "exit":
            os._exit(0)
        await asyncio.sleep(300)

    asyncio.run(main())
    """)

#: watch_parent: the parent starts both children with plain subprocess; one watches.
WATCH_PARENT = _parent("""
    children = [subprocess.Popen(child_argv(tree), stdin=subprocess.DEVNULL)
                for tree in ("leashed", "control")]
    wait_started(directory)
    if end != "exit":
        time.sleep(300)
    """)

#: install(): the control is started before it (a child started earlier is not in the
#: job), the leashed child after it, with plain subprocess; the parent itself is in the job.
INSTALL_PARENT = _parent("""
    control_child = subprocess.Popen(child_argv("control"), stdin=subprocess.DEVNULL)
    assert leashed.install() == "job"
    assert leashed.capabilities()["install"]["active"] == "job"
    leashed_child = subprocess.Popen(child_argv("leashed"), stdin=subprocess.DEVNULL)
    wait_started(directory)
    if end != "exit":
        time.sleep(300)
    """)

ENDS = ["sigkill", "taskkill", "exit"]

CASES = {
    "popen": (POPEN_PARENT, {"leashed": CHILD, "control": CHILD}),
    "asyncio": (ASYNCIO_PARENT, {"leashed": CHILD, "control": CHILD}),
    "watch_parent": (WATCH_PARENT, {"leashed": WATCHING_CHILD, "control": UNWATCHED_CHILD}),
    "install": (INSTALL_PARENT, {"leashed": CHILD, "control": CHILD}),
}


def _run_case(scenario: Scenario, name: str, end: str) -> None:
    if end == "sigkill" and WINE is None:
        pytest.skip("SIGKILL of a Unix process: only under Wine (taskkill /F is the analogue)")
    if name == "watch_parent" and getppid_dies():
        pytest.skip(f"os.getppid() dies on CPython {sys.version_info[:2]} under Wine {WINE}")
    parent_code, children = CASES[name]
    scenario.start(parent_code, children, end)
    scenario.end_parent(end)
    left = scenario.survivors()
    assert left["leashed"] == [], f"{name}/{end}: leashed survivors {left}\n{scenario.errors()}"
    # The control: the same tree, not leashed, outlives the same parent death.
    assert left["control"] == ["child", "grandchild"], f"{name}/{end}: control {left}"


@pytest.mark.parametrize("end", ENDS)
def test_popen_child_and_grandchild_die_with_parent(scenario: Scenario, end: str) -> None:
    _run_case(scenario, "popen", end)


@pytest.mark.parametrize("end", ENDS)
def test_asyncio_child_and_grandchild_die_with_parent(scenario: Scenario, end: str) -> None:
    _run_case(scenario, "asyncio", end)


@pytest.mark.parametrize("end", ENDS)
def test_install_child_and_grandchild_of_plain_subprocess_die_with_parent(
    scenario: Scenario, end: str
) -> None:
    _run_case(scenario, "install", end)


@pytest.mark.parametrize("end", ENDS)
def test_watch_parent_child_and_grandchild_die_with_parent(scenario: Scenario, end: str) -> None:
    _run_case(scenario, "watch_parent", end)


def test_capabilities_report_the_job() -> None:
    import leashed

    caps = leashed.capabilities()
    assert caps["platform"] == "win32"
    assert caps["helper"] is None
    assert caps["default"] == "job"
    job = caps["mechanisms"]["job"]
    assert job["how"] == "job object, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE"
    assert job["whole_tree"] is True and job["race_free"] is True and job["available"] is True
    with leashed.Popen([sys.executable, "-c", "pass"]) as child:
        assert child.mechanism == "job"
    assert child.returncode == 0
    assert leashed.capabilities()["mechanisms"]["job"]["job_scope"] == "process-wide"


def test_a_start_failing_in_wine_is_started_again(scenario: Scenario) -> None:
    """The first attempt's parent fails as Wine's start-up does; the second one runs."""
    if WINE is None:
        pytest.skip("the retry is for Wine's process start-up only")
    parent_code, children = CASES["popen"]
    failing_first = (
        "import os, sys\n"
        "if os.path.basename(sys.argv[1]) == 'attempt1':\n"
        f"    sys.exit('OSError: {WINE_START_FAILURE} Internal error')\n" + parent_code
    )
    with pytest.warns(UserWarning, match="scenario started again"):
        scenario.start(failing_first, children, "taskkill")
    assert scenario.tmp.name == "attempt2"
    scenario.end_parent("taskkill")
    left = scenario.survivors()
    assert left == {"leashed": [], "control": ["child", "grandchild"]}, left


def test_a_start_failing_otherwise_is_not_started_again(scenario: Scenario) -> None:
    """Any other failure of a scenario's start fails the test at once."""
    _, children = CASES["popen"]
    with pytest.raises(AssertionError, match="parent exited"):
        scenario.start("import sys; sys.exit('not a start-up failure')", children, "exit")
    assert scenario.tmp.name == "attempt1"
