"""leashed.install(): every child of the process, by any API, dies with it.

Each scenario runs a real Python parent that starts children through one API, then is
SIGKILLed; survivors are counted by the case marker. Each runs three ways: with
``leashed.install()`` called in the parent, with ``LEASHED_INSTALL=1`` in its environment
(no code change: the package's .pth file), and as a control without either, which must
leave survivors (else the scenario proves nothing).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import unittest.mock
from collections.abc import Iterator

import pytest
from support import Parent, marked, named, wait_for_count, wait_for_named, wait_until_gone

import leashed
import leashed._helper
from leashed import _install, _seam
from leashed._procfs import poll_until
from leashed._system import tree_mechanism

pytestmark = pytest.mark.skipif(
    leashed._helper.helper_path() is None, reason="leashed-helper is not built"
)

#: Seconds for a SIGKILLed parent's leashed processes to be gone (milliseconds when idle).
GONE = 10.0
#: Seconds a control waits before it counts what survived.
STAY = 1.0
#: A shell that backgrounds a job, then execs into the foreground one: two sleeps.
SHELL = "sleep 300 & exec sleep 300"

PRELUDE = """
import os, sys, threading, time
if HOW == "call":
    import leashed
    leashed.install()

def ready():
    active = sys.modules.get("leashed._install")
    print("ready", active.active_mechanism() if active else None, flush=True)
"""

#: scenario -> (the parent's code after the prelude, processes to see before the kill,
#: the name they are counted by or None for every marked process but the parent)
SCENARIOS: dict[str, tuple[str, int, str | None]] = {
    "subprocess-thread": (
        """
        import libmod
        t = threading.Thread(target=libmod.start, args=(SHELL,))
        t.start(); t.join()  # the thread that spawned exits
        ready()
        """,
        2,
        "sleep",
    ),
    "posix_spawn": (
        """
        os.posix_spawn("/bin/sh", ["sh", "-c", SHELL], os.environ)
        ready()
        """,
        2,
        "sleep",
    ),
    "posix_spawnp-thread": (
        """
        t = threading.Thread(target=os.posix_spawnp, args=("sh", ["sh", "-c", SHELL], os.environ))
        t.start(); t.join()
        ready()
        """,
        2,
        "sleep",
    ),
    "os.system": (
        """
        threading.Thread(target=os.system, args=(SHELL,), daemon=True).start()
        ready()
        """,
        2,
        "sleep",
    ),
    "os.spawn": (
        """
        os.spawnlp(os.P_NOWAIT, "sh", "sh", "-c", SHELL)
        ready()
        """,
        2,
        "sleep",
    ),
    "os.fork": (
        """
        if os.fork() == 0:
            time.sleep(300)
            os._exit(0)
        ready()
        """,
        1,
        None,
    ),
    "multiprocessing.fork": (
        """
        import multiprocessing
        import libmod
        pool = multiprocessing.get_context("fork").Pool(2)
        libmod.keep_busy(pool.apply_async, 2)
        ready()
        """,
        4,
        None,
    ),
    "multiprocessing.spawn": (
        """
        import multiprocessing
        import libmod
        pool = multiprocessing.get_context("spawn").Pool(2)
        libmod.keep_busy(pool.apply_async, 2)
        ready()
        """,
        4,
        None,
    ),
    "multiprocessing.forkserver": (
        """
        import multiprocessing
        import libmod
        pool = multiprocessing.get_context("forkserver").Pool(2)
        libmod.keep_busy(pool.apply_async, 2)
        ready()
        """,
        5,
        None,
    ),
    "concurrent.futures.ProcessPoolExecutor": (
        """
        import concurrent.futures
        import libmod
        ex = concurrent.futures.ProcessPoolExecutor(2)
        libmod.keep_busy(lambda f, a: ex.submit(f, *a), 2)
        ready()
        """,
        4,
        None,
    ),
    "anyio": (
        """
        import anyio

        async def main():
            await anyio.open_process(["sh", "-c", SHELL])
            ready()
            await anyio.sleep(600)

        anyio.run(main)
        """,
        2,
        "sleep",
    ),
    "trio": (
        """
        import trio

        async def main():
            await trio.lowlevel.open_process(["sh", "-c", SHELL])
            ready()
            await trio.sleep(600)

        trio.run(main)
        """,
        2,
        "sleep",
    ),
}

#: A library the program does not control: it starts a child with plain subprocess.
LIBMOD = """
import os, subprocess, time

def start(command):
    return subprocess.Popen(["sh", "-c", command])

def busy(directory):
    subprocess.Popen(["sleep", "300"])  # a grandchild of the parent's
    open(os.path.join(directory, str(os.getpid())), "w").close()
    time.sleep(300)

def keep_busy(submit, workers):
    # busy workers (idle ones of a Pool end by themselves on their parent's death)
    directory = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'busy')
    os.makedirs(directory)
    for _ in range(workers):
        submit(busy, (directory,))
    while len(os.listdir(directory)) < workers:
        time.sleep(0.01)
"""


def _parent(scenario: str, how: str, marker: str, tmp_path: object) -> Parent:
    code, _, _ = SCENARIOS[scenario]
    env = dict(os.environ)
    env.pop(_install.INSTALL_ENV, None)
    if how == "env":
        env[_install.INSTALL_ENV] = "1"
    directory = str(tmp_path)
    with open(os.path.join(directory, "libmod.py"), "w") as f:
        f.write(LIBMOD)
    head = f"HOW = {how!r}\nSHELL = {SHELL!r}\nimport sys; sys.path.insert(0, {directory!r})\n"
    full = head + PRELUDE + textwrap.dedent(code) + "\ntime.sleep(600)\n"
    return Parent(full, marker, env=env)


def _children(marker: str, name: str | None, parent: int) -> list[int]:
    found = marked(marker)
    return named(found, name) if name else [pid for pid in found if pid != parent]


#: install() called in the parent on every CPython; the environment activation and the
#: controls in the slow runs (CI time: they double the count, and prove the same code).
HOWS = [
    "call",
    pytest.param("env", marks=pytest.mark.slow),
    pytest.param("none", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_children_die_with_the_sigkilled_parent(
    scenario: str, how: str, case_marker: str, tmp_path: object
) -> None:
    if scenario in ("anyio", "trio"):
        pytest.importorskip(scenario)
    _, count, name = SCENARIOS[scenario]
    with _parent(scenario, how, case_marker, tmp_path) as parent:
        line = parent.read_line(timeout=60)
        assert line == ("ready None" if how == "none" else "ready patch"), line
        pid = parent.proc.pid
        if name:
            wait_for_named(case_marker, name, count)
        else:
            wait_for_count(case_marker, count + 1)
        seen = _children(case_marker, name, pid)
        assert len(seen) >= count, seen
        parent.kill()
        if how == "none":  # the control: without install(), they outlive the parent
            wait_until_gone(case_marker, STAY)
            assert _children(case_marker, name, pid), "the control left no survivor"
        else:
            assert wait_until_gone(case_marker, GONE) == []


#: Which scenarios prove each API that capabilities()["install"] names.
PROOF = {
    "subprocess": ("subprocess-thread", "anyio", "trio"),
    "os.posix_spawn": ("posix_spawn", "posix_spawnp-thread"),
    "os.system": ("os.system",),
    "os.spawn": ("os.spawn",),
    "os.fork": ("os.fork",),
    "multiprocessing.fork": ("multiprocessing.fork",),
    "multiprocessing.spawn": ("multiprocessing.spawn",),
    "multiprocessing.forkserver": ("multiprocessing.forkserver",),
    "concurrent.futures.ProcessPoolExecutor": ("concurrent.futures.ProcessPoolExecutor",),
}


def test_capabilities_name_exactly_the_apis_the_scenarios_prove() -> None:
    """Every API capabilities()["install"] reports covered has its scenarios above; those
    it reports whole_tree count a grandchild (a shell's background job, a pool worker's
    subprocess, the forkserver's workers)."""
    report = leashed.capabilities()["install"]
    assert report["mechanism"] == "patch" and report["env"] == "LEASHED_INSTALL"
    assert set(report["apis"]) == set(PROOF)
    assert {s for names in PROOF.values() for s in names} == set(SCENARIOS)
    for api, entry in report["apis"].items():
        assert entry["covered"] is True, api
        if entry["whole_tree"]:
            for name in PROOF[api]:
                code, count, _ = SCENARIOS[name]
                assert count >= 2 and ("SHELL" in code or "keep_busy" in code), name


# -- in this process: identity, mocks, idempotence, threads ---------------------------------


@pytest.fixture
def installed() -> Iterator[None]:
    try:
        yield
    finally:
        leashed.uninstall()


def _patched_attributes() -> dict[str, object]:
    import multiprocessing.util

    return {
        "Popen._execute_child": vars(subprocess.Popen)["_execute_child"],
        "os.posix_spawn": os.posix_spawn,
        "os.posix_spawnp": os.posix_spawnp,
        "os.system": os.system,
        "os._spawnvef": os._spawnvef,  # type: ignore[attr-defined]
        "spawnv_passfds": multiprocessing.util.spawnv_passfds,
    }


def test_uninstall_restores_every_attribute_by_identity(installed: None) -> None:
    before = _patched_attributes()
    assert leashed.install() == "patch"
    during = _patched_attributes()
    assert all(during[name] is not before[name] for name in before), "not every point patched"
    leashed.uninstall()
    after = _patched_attributes()
    assert all(after[name] is before[name] for name in before)
    assert subprocess.Popen._execute_child is _seam.STDLIB_EXECUTE_CHILD  # type: ignore[attr-defined]
    leashed.uninstall()  # a no-op when not installed


def test_install_is_idempotent_and_refuses_other_options(installed: None) -> None:
    assert leashed.install() == "patch"
    patched = _patched_attributes()
    assert leashed.install(tree=True) == "patch"
    assert _patched_attributes() == patched
    with pytest.raises(ValueError, match=r"tree=False \(active: True\)"):
        leashed.install(tree=False)
    with pytest.raises(ValueError, match=r"grace=2.0 \(active: None\)"):
        leashed.install(grace=2)
    assert _install.installed() == _install.INSTALL_DEFAULTS


def test_bad_options_raise_what_popen_raises() -> None:
    with pytest.raises(TypeError, match="tree must be a bool"):
        leashed.install(tree=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keep_leftovers=True needs tree=True"):
        leashed.install(tree=False, keep_leftovers=True)
    with pytest.raises(ValueError, match="death_signal"):
        leashed.install(death_signal=0)
    assert _install.installed() is None


def test_popen_stays_the_class_and_mock_patch_works(installed: None) -> None:
    leashed.install()
    p = subprocess.Popen(["true"])
    assert type(p) is subprocess.Popen and isinstance(p, subprocess.Popen)
    assert p.wait() == 0

    class Sub(subprocess.Popen):  # type: ignore[type-arg]
        pass

    s = Sub(["sh", "-c", "exit 3"])
    assert s.wait() == 3
    with unittest.mock.patch("subprocess.Popen") as fake:
        process = fake.return_value.__enter__.return_value
        process.communicate.return_value = (b"mocked", b"")
        process.wait.return_value = 0
        assert subprocess.run(["never-run"], capture_output=True).stdout == b"mocked"
    assert subprocess.Popen is not fake
    with pytest.raises(FileNotFoundError) as info:
        subprocess.run(["leashed-no-such-program"])
    assert info.value.filename == "leashed-no-such-program"


def test_pid_follows_the_tree_mechanism(installed: None) -> None:
    """The cgroup mechanism gives the target's own pid; the supervisor its front's."""
    leashed.install()
    expected = {"cgroup": "sleep", "supervisor": "leashed-helper"}[tree_mechanism()]
    with subprocess.Popen(["sleep", "30"]) as p:
        # the kernel names the process after its exec lets the stdlib's error pipe close
        comm = f"/proc/{p.pid}/comm"
        assert poll_until(lambda: open(comm).read().strip() == expected, 5.0), open(comm).read()
        p.kill()
    assert p.returncode == -9


def test_stdlib_results_are_kept(installed: None) -> None:
    leashed.install()
    assert os.waitstatus_to_exitcode(os.system("exit 5")) == 5
    assert os.spawnlp(os.P_WAIT, "sh", "sh", "-c", "exit 6") == 6
    assert os.spawnv(os.P_WAIT, "/nonexistent-program", ["x"]) == 127
    pid = os.posix_spawnp("sh", ["sh", "-c", "exit 7"], os.environ)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7
    with pytest.raises(FileNotFoundError):
        os.posix_spawn("/nonexistent-program", ["x"], os.environ)
    with pytest.raises(FileNotFoundError):
        os.posix_spawnp("leashed-no-such-program", ["x"], os.environ)
    with pytest.raises(TypeError):
        os.posix_spawn("/bin/true", "not-a-list", os.environ)
    assert os.popen("echo hi").read() == "hi\n"


def test_install_while_threads_spawn(installed: None) -> None:
    """Threads spawning before, during and after install() all get working children."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def spawn() -> None:
        try:
            while not stop.is_set():
                assert subprocess.run(["true"]).returncode == 0
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=spawn) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        leashed.install()
        leashed.install()
        assert subprocess.run(["true"]).returncode == 0
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []


# -- the environment activation -----------------------------------------------------------


def _python(code: str, value: str | None, *flags: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop(_install.INSTALL_ENV, None)
    if value is not None:
        env[_install.INSTALL_ENV] = value
    return subprocess.run(
        [sys.executable, *flags, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


SHOW = (
    "import sys; m = sys.modules.get('leashed._install'); "
    "print(m and m.active_mechanism(), m and m.installed())"
)


@pytest.mark.parametrize(
    ("value", "tree", "grace"),
    [("1", True, None), ("tree,grace=5", True, 5.0), ("notree", False, None)],
)
def test_environment_activation_reads_the_options(value: str, tree: bool, grace: object) -> None:
    out = _python(SHOW, value)
    assert out.returncode == 0 and out.stderr == "", out
    assert out.stdout.startswith("patch LeashOptions(")
    assert f"tree={tree}" in out.stdout and f"grace={grace}" in out.stdout


def test_environment_activation_off_costs_no_import() -> None:
    for value in (None, "0", ""):
        out = _python("import sys; print('leashed' in sys.modules)", value)
        assert out.stdout == ("False\n" if value is None else out.stdout), out
    assert _python(SHOW, None).stdout == "None None\n"
    assert _python(SHOW, "0").stdout == "None None\n"


def test_environment_activation_is_ignored_under_E_and_I() -> None:
    for flag in ("-E", "-I"):
        assert _python(SHOW, "1", flag).stdout == "None None\n"


@pytest.mark.parametrize("value", ["bogus", "grace=x", "signal=NOPE", "grace=-1", "tree=2"])
def test_a_bad_environment_value_says_so_and_start_up_goes_on(value: str) -> None:
    out = _python("print('started')", value)
    assert out.returncode == 0 and out.stdout == "started\n"
    assert out.stderr.startswith(f"leashed: LEASHED_INSTALL={value!r}: "), out.stderr
    assert "NOT leashed" in out.stderr


def test_the_resource_tracker_outlives_the_parent_and_unlinks_its_leak(case_marker: str) -> None:
    """multiprocessing's resource tracker is left unleashed: shared memory a SIGKILLed
    parent leaked is still unlinked by it (then it exits by itself)."""
    name = "leashed-test-" + case_marker[-12:]
    code = f"""
        import leashed, multiprocessing.shared_memory, time
        leashed.install()
        shm = multiprocessing.shared_memory.SharedMemory({name!r}, create=True, size=4096)
        print("ready", flush=True)
        time.sleep(300)
        """
    parent = Parent(code, case_marker)
    try:
        assert parent.read_line() == "ready"
        assert os.path.exists(f"/dev/shm/{name}")
        assert parent.killed_survivors(10.0) == []  # the tracker too, after its cleanup
        assert not os.path.exists(f"/dev/shm/{name}")
    finally:
        parent.kill()
        if os.path.exists(f"/dev/shm/{name}"):
            os.unlink(f"/dev/shm/{name}")
