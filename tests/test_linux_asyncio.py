"""leashed.asyncio: asyncio's subprocess interface, with the leash, on any loop.

Real processes only. Each child gets a per-test marker in its environment; every test
ends by killing, by pid, whatever still carries its marker.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from support import Parent, alive, marked, marked_env, new_marker, wait_until_gone

import leashed
import leashed.asyncio as la
from leashed import _procfs

LOOPS = ["asyncio", "uvloop"]
MECHANISMS = ["direct", "tree"]
PIPE = subprocess.PIPE


def _options(mechanism: str) -> dict[str, Any]:
    return {"tree": True} if mechanism == "tree" else {}


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.new_event_loop()  # type: ignore[no-any-return]
    return asyncio.new_event_loop()


def run(kind: str, main: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``main()`` to completion on a fresh loop of ``kind``, then close the loop."""
    loop = _new_loop(kind)
    try:
        return loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind == "uvloop":
        pytest.importorskip("uvloop")
    return kind


def _env(marker: str) -> dict[str, str]:
    return marked_env(marker)


def _zombie_children(pids: set[int]) -> list[int]:
    """Those of ``pids`` that are zombie children of this process."""
    stats = {pid: _procfs.read_stat(pid) for pid in pids}
    return [
        pid
        for pid, stat in stats.items()
        if stat is not None and stat.state == "Z" and stat.ppid == os.getpid()
    ]


# -- the leash holds: parent programs that are SIGKILLed ---------------------------------

PARENT_PRELUDE = """
import asyncio, os, sys, threading, time
import leashed.asyncio as la

LOOP = {loop!r}
OPTIONS = {options!r}
CHILD = {child!r}
SHELL_CHILD = {shell_child!r}

def run(coro):
    if LOOP == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()

async def spawn():
    procs = [await la.create_subprocess_exec(*CHILD, **OPTIONS) for _ in range(2)]
    procs.append(await la.create_subprocess_shell(SHELL_CHILD, **OPTIONS))
    return procs

def state(pid):
    from leashed._procfs import read_stat
    return read_stat(pid).state
"""

AT_REST = """
async def main():
    procs = await spawn()
    print(" ".join(str(p.pid) for p in procs), flush=True)
    await asyncio.sleep(300)

run(main())
"""

FROM_EXITED_THREAD = """
box = []
worker = threading.Thread(target=lambda: box.extend(run(spawn())))
worker.start()
worker.join()
time.sleep(0.3)
print(" ".join(f"{p.pid}:{state(p.pid)}" for p in box), flush=True)
time.sleep(300)
"""


def _async_parent(body: str, loop: str, mechanism: str) -> Parent:
    # Tree mode also proves that grandchildren go: the child is a shell with two sleeps.
    shell_child = "sleep 300 & sleep 300; wait" if mechanism == "tree" else "exec sleep 300"
    prelude = PARENT_PRELUDE.format(
        loop=loop,
        options=_options(mechanism),
        child=["sh", "-c", shell_child] if mechanism == "tree" else ["sleep", "300"],
        shell_child=shell_child,
    )
    return Parent(prelude + body, new_marker())


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_parent_sigkilled_children_from_main_thread_loop(loop_kind: str, mechanism: str) -> None:
    parent = _async_parent(AT_REST, loop_kind, mechanism)
    try:
        pids = [int(p) for p in parent.read_line().split()]
        assert len(pids) == 3 and all(alive(p) for p in pids)
        assert parent.killed_survivors(1.0) == []
    finally:
        parent.finish()


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_children_of_exited_loop_thread_live_then_die_with_parent(
    loop_kind: str, mechanism: str
) -> None:
    parent = _async_parent(FROM_EXITED_THREAD, loop_kind, mechanism)
    try:
        states = dict(item.split(":") for item in parent.read_line().split())
        assert len(states) == 3
        assert all(s in "SR" for s in states.values()), states
        time.sleep(0.2)
        assert all(alive(int(pid)) for pid in states)
        assert parent.killed_survivors(1.0) == []
    finally:
        parent.finish()


# -- pipes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_communicate_one_megabyte_each_way(loop_kind: str, mechanism: str, marker: str) -> None:
    data = os.urandom(1 << 20)

    async def main() -> tuple[bytes, bytes, int]:
        # tee writes what it reads to stdout and stderr as it goes: without concurrent
        # feeding and draining, the 64 KiB pipe buffers would deadlock it.
        proc = await la.create_subprocess_exec(
            "tee", "/dev/stderr", stdin=PIPE, stdout=PIPE, stderr=PIPE,
            env=_env(marker), **_options(mechanism),
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(data), 30)
        return out, err, await proc.wait()

    out, err, returncode = run(loop_kind, main)
    assert returncode == 0
    assert out == data and err == data


def test_streams_readline_write_drain_wait_closed(loop_kind: str, marker: str) -> None:
    async def main() -> list[Any]:
        proc = await la.create_subprocess_exec(
            sys.executable, "-c",
            "import sys\nfor line in sys.stdin: print(line.strip().upper(), flush=True)",
            stdin=PIPE, stdout=PIPE, env=_env(marker), limit=1024,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        got = []
        for word in (b"one", b"two"):
            proc.stdin.write(word + b"\n")
            await proc.stdin.drain()
            got.append(await proc.stdout.readline())
        proc.stdin.close()
        await proc.stdin.wait_closed()
        got.append(await proc.stdout.read())
        got.append(await proc.wait())
        with pytest.raises(ValueError):  # limit= reaches the StreamReader
            proc2 = await la.create_subprocess_exec(
                sys.executable, "-c", "print('x' * 5000)", stdout=PIPE, env=_env(marker),
                limit=1024,
            )  # fmt: skip
            assert proc2.stdout is not None
            try:
                await proc2.stdout.readline()
            finally:
                await proc2.wait()
        return got

    assert run(loop_kind, main) == [b"ONE\n", b"TWO\n", b"", 0]


def test_wait_returns_when_child_ignores_its_stdin(loop_kind: str, marker: str) -> None:
    async def main() -> tuple[int, Any, Any]:
        proc = await la.create_subprocess_exec(
            "true", stdin=PIPE, stdout=PIPE, stderr=subprocess.STDOUT, env=_env(marker)
        )
        returncode = await asyncio.wait_for(proc.wait(), 10)
        return returncode, proc.stderr, await proc.communicate()

    assert run(loop_kind, main) == (0, None, (b"", None))


def test_no_fd_of_ours_reaches_the_child(loop_kind: str, marker: str) -> None:
    """The child sees fds 0-2 only (3 is its own listdir), as under stock asyncio.

    (uvloop's own spawner lets some of the parent's fds through; ours does not.)
    """
    code = "import os; print(sorted(os.listdir('/proc/self/fd')))"

    def outcome(create: Any) -> Callable[[], Awaitable[bytes]]:
        async def main() -> bytes:
            proc = await create(
                sys.executable, "-c", code, stdin=PIPE, stdout=PIPE, env=_env(marker)
            )
            out, _ = await proc.communicate()
            return out  # type: ignore[no-any-return]

        return main

    plain = run("asyncio", outcome(asyncio.create_subprocess_exec))
    assert plain == b"['0', '1', '2', '3']\n"
    assert run(loop_kind, outcome(la.create_subprocess_exec)) == plain


# -- many children, reaping, no leaks -----------------------------------------------------


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_two_hundred_concurrent_children_all_reaped(
    loop_kind: str, mechanism: str, marker: str
) -> None:
    count = 200
    fds_before = len(os.listdir("/proc/self/fd"))

    async def one(i: int) -> tuple[int, int, bytes | None]:
        if i % 2:
            proc = await la.create_subprocess_exec(
                "sh", "-c", f"sleep 0.5; echo {i}", stdout=PIPE, env=_env(marker),
                **_options(mechanism),
            )  # fmt: skip
            out, _ = await proc.communicate()
        else:
            proc = await la.create_subprocess_exec(
                "sleep", "0.5", env=_env(marker), **_options(mechanism)
            )
            out = None
            await proc.wait()
        assert proc.returncode is not None
        return proc.pid, proc.returncode, out

    async def main() -> list[tuple[int, int, bytes | None]]:
        return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), 120)

    results = run(loop_kind, main)
    assert [rc for _, rc, _ in results] == [0] * count
    assert [out for _, _, out in results] == [
        f"{i}\n".encode() if i % 2 else None for i in range(count)
    ]
    pids = {pid for pid, _, _ in results}
    assert len(pids) == count
    assert _zombie_children(pids) == []
    assert marked(marker) == []
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= fds_before


# -- cancellation and dropping ------------------------------------------------------------


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("what", ["wait", "communicate"])
def test_cancelled_then_dropped_leaves_no_survivor(
    loop_kind: str, mechanism: str, what: str, marker: str
) -> None:
    child = ["sh", "-c", "sleep 300 & sleep 300; wait"] if mechanism == "tree" else ["sleep", "300"]

    async def main() -> tuple[list[int], list[int]]:
        proc = await la.create_subprocess_exec(
            *child, stdin=PIPE, stdout=PIPE, env=_env(marker), **_options(mechanism)
        )
        call = proc.wait() if what == "wait" else proc.communicate(b"input")
        timed_out = False
        try:
            await asyncio.wait_for(call, 0.3)
        except asyncio.TimeoutError:
            timed_out = True
        assert timed_out
        running = marked(marker)
        del proc, call
        gc.collect()  # the cancellation's tracebacks form cycles that held the Process
        for _ in range(200):
            if not marked(marker):
                break
            await asyncio.sleep(0.01)
        return running, marked(marker)

    running, survivors = run(loop_kind, main)
    assert len(running) >= (3 if mechanism == "tree" else 1)
    assert survivors == []


def test_cancellation_alone_does_not_end_the_child(loop_kind: str, marker: str) -> None:
    """asyncio's own pattern (wait_for, then terminate, then wait) keeps working."""

    async def main() -> tuple[int | None, int]:
        proc = await la.create_subprocess_exec("sleep", "300", env=_env(marker))
        try:
            await asyncio.wait_for(proc.wait(), 0.2)
        except asyncio.TimeoutError:
            pass
        before = proc.returncode
        proc.terminate()
        return before, await proc.wait()

    assert run(loop_kind, main) == (None, -signal.SIGTERM)


@pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning")
def test_dropped_with_kill_on_drop_false_keeps_running(loop_kind: str, marker: str) -> None:
    async def main() -> int:
        proc = await la.create_subprocess_exec("sleep", "300", env=_env(marker), kill_on_drop=False)
        pid = proc.pid
        del proc
        gc.collect()
        await asyncio.sleep(0.2)
        return pid

    pid = run(loop_kind, main)
    assert alive(pid)
    assert marked(marker) == [pid]


def test_dropped_in_a_loop_thread_task_cancelled_at_shutdown(loop_kind: str, marker: str) -> None:
    """A task blocked in communicate() is cancelled when its loop thread ends: no orphan."""
    import threading

    started = threading.Event()

    async def main() -> None:
        async def holder() -> None:
            proc = await la.create_subprocess_exec(
                "sleep", "300", stdout=PIPE, env=_env(marker), tree=True
            )
            started.set()
            await proc.communicate()

        task = asyncio.ensure_future(holder())
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        del task

    worker = threading.Thread(target=run, args=(loop_kind, main))
    worker.start()
    worker.join()
    gc.collect()
    assert wait_until_gone(marker, 2.0) == []


# -- parity with asyncio: pid, returncode, signals, errors --------------------------------


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("action", ["terminate", "kill", "sigint", "sigusr1", "exit3", "wait"])
def test_returncodes_and_signals_match_asyncio(
    loop_kind: str, mechanism: str, action: str, marker: str
) -> None:
    argv = ["sh", "-c", "exit 3"] if action == "exit3" else ["sleep", "300"]
    if action == "wait":
        argv = ["true"]

    async def scenario(create: Any, **options: Any) -> dict[str, Any]:
        proc = await create(*argv, env=_env(marker), **options)
        seen: dict[str, Any] = {
            "type": isinstance(proc, asyncio.subprocess.Process),
            "repr": repr(proc) == f"<Process {proc.pid}>",
            # a quick child may be seen exiting before create returns (uvloop does)
            "before": proc.returncode if argv[0] == "sleep" else "racy",
        }
        if action == "terminate":
            proc.terminate()
        elif action == "kill":
            proc.kill()
        elif action == "sigint":
            proc.send_signal(signal.SIGINT)
        elif action == "sigusr1":
            proc.send_signal(signal.SIGUSR1)
        seen["wait"] = await asyncio.wait_for(proc.wait(), 10)
        seen["after"] = proc.returncode
        seen["wait_again"] = await proc.wait()
        for method in ("kill", "terminate"):
            try:
                getattr(proc, method)()
                seen[method] = "ok"
            except ProcessLookupError:
                seen[method] = "ProcessLookupError"
        return seen

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        plain = await scenario(asyncio.create_subprocess_exec)
        ours = await scenario(la.create_subprocess_exec, **_options(mechanism))
        return plain, ours

    plain, ours = run(loop_kind, main)
    if action in ("wait", "exit3") and la._SIGNAL_AFTER_EXIT_IS_SILENT:
        # From gh-119710/gh-127049 (3.14.7+, 3.15) asyncio's own answer to a signal sent
        # right after wait() depends on whether its transport closed first: a child that
        # exits at once gives "ok" or ProcessLookupError from run to run (measured: both,
        # with plain asyncio). Either is asyncio's behaviour; everything else must match.
        for method in ("kill", "terminate"):
            assert ours.pop(method) in ("ok", "ProcessLookupError")
            plain.pop(method)
    assert ours == plain
    expected = {"terminate": -15, "kill": -9, "sigint": -2, "sigusr1": -10, "exit3": 3, "wait": 0}
    assert ours["wait"] == expected[action]


def test_pid_is_the_targets_own(loop_kind: str, marker: str) -> None:
    async def main() -> tuple[int, bytes, str]:
        proc = await la.create_subprocess_shell("echo $$", stdout=PIPE, env=_env(marker))
        out, _ = await proc.communicate()
        return proc.pid, out, proc.mechanism

    pid, out, mechanism = run(loop_kind, main)
    assert int(out) == pid
    assert mechanism == "direct"


def _describe(exc: BaseException) -> tuple[Any, ...]:
    return (type(exc), getattr(exc, "errno", None), getattr(exc, "filename", None), str(exc))


ERROR_CASES: dict[str, tuple[list[Any], dict[str, Any]]] = {
    "missing_path": (["/nonexistent/leashed-prog"], {}),
    "missing_on_PATH": (["leashed-no-such-program"], {}),
    "bad_cwd": (["true"], {"cwd": "/nonexistent-leashed-dir"}),
    "directory": (["/tmp"], {}),
    "not_executable": (["/etc/hostname"], {}),
    "universal_newlines": (["true"], {"universal_newlines": True}),
    "shell": (["true"], {"shell": True}),
    "bufsize": (["true"], {"bufsize": 1}),
    "text": (["true"], {"text": True}),
    "encoding": (["true"], {"encoding": "utf-8"}),
    "errors": (["true"], {"errors": "strict"}),
    "bad_arg_type": (["true", 3], {}),
    "bad_stdout": (["true"], {"stdout": "nope"}),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_match_asyncio_exec(loop_kind: str, case: str, marker: str) -> None:
    argv, kwargs = ERROR_CASES[case]

    async def outcome(create: Any) -> tuple[Any, ...]:
        try:
            proc = await create(*argv, env=_env(marker), **kwargs)
        except BaseException as exc:
            return _describe(exc)
        await proc.wait()
        return ("no error",)

    # Always against stock asyncio: uvloop's own spawner words some errors its own way.
    plain = run("asyncio", lambda: outcome(asyncio.create_subprocess_exec))
    ours = run(loop_kind, lambda: outcome(la.create_subprocess_exec))
    assert plain != ("no error",)
    assert ours == plain


@pytest.mark.parametrize(
    ("cmd", "kwargs"),
    [(["true"], {}), (b"true", {"shell": False}), ("true", {"universal_newlines": True})],
)
def test_errors_match_asyncio_shell(cmd: Any, kwargs: dict[str, Any]) -> None:
    async def outcome(create: Any) -> tuple[Any, ...]:
        try:
            await create(cmd, **kwargs)
        except BaseException as exc:
            return _describe(exc)
        return ("no error",)

    plain = run("asyncio", lambda: outcome(asyncio.create_subprocess_shell))
    ours = run("asyncio", lambda: outcome(la.create_subprocess_shell))
    assert plain != ("no error",)
    assert ours == plain


def test_missing_program_via_shell_is_127(loop_kind: str, marker: str) -> None:
    async def main() -> tuple[int, int]:
        codes = []
        for create in (asyncio.create_subprocess_shell, la.create_subprocess_shell):
            proc = await create(  # type: ignore[operator]
                "leashed-no-such-program", stderr=subprocess.DEVNULL, env=_env(marker)
            )
            codes.append(await proc.wait())
        return codes[0], codes[1]

    assert run(loop_kind, main) == (127, 127)


@pytest.mark.parametrize(
    "options",
    [{"tree": "yes"}, {"kill_on_drop": 1}, {"grace": -1}, {"death_signal": "TERM"},
     {"mechanism": "magic"}, {"tree": True, "mechanism": "direct"}],
)  # fmt: skip
def test_leash_options_validated_as_popen(options: dict[str, Any], marker: str) -> None:
    with pytest.raises((TypeError, ValueError)) as sync_error:
        leashed.Popen(["true"], env=_env(marker), **options)

    async def main() -> None:
        await la.create_subprocess_exec("true", env=_env(marker), **options)

    with pytest.raises(sync_error.type, match="^" + re.escape(str(sync_error.value))):
        run("asyncio", main)


def test_popen_keywords_pass_through(loop_kind: str, marker: str, tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()

    async def main() -> bytes:
        proc = await la.create_subprocess_exec(
            sys.executable, "-c",
            "import os, sys; os.write(int(sys.argv[1]), b'fd'); "
            "print(os.getcwd(), os.environ['X'], os.getsid(0) == os.getpid())",
            str(write_fd), stdout=PIPE, cwd=str(tmp_path), pass_fds=[write_fd],
            env={**_env(marker), "X": "y"}, start_new_session=True,
        )  # fmt: skip
        out, _ = await proc.communicate()
        return out

    try:
        out = run(loop_kind, main)
        assert os.read(read_fd, 10) == b"fd"
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert out.decode().split() == [str(tmp_path), "y", "True"]


# -- the thread fallback (platforms without pidfd) ------------------------------------------


def test_thread_fallback_without_pidfd(
    loop_kind: str, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(la, "_pidfd_open", None)
    data = os.urandom(300_000)

    async def main() -> tuple[bytes, int, int, int]:
        proc = await la.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE, env=_env(marker))
        out, _ = await proc.communicate(data)
        sleeper = await la.create_subprocess_exec("sleep", "300", env=_env(marker), tree=True)
        sleeper.terminate()
        many = await asyncio.gather(
            *[(await la.create_subprocess_exec("true", env=_env(marker))).wait() for _ in range(20)]
        )
        return out, proc.returncode or 0, await sleeper.wait(), sum(many)

    assert run(loop_kind, main) == (data, 0, -signal.SIGTERM, 0)
