"""leashed.wrap: the children of anyio, trio and subprocess die with a SIGKILLed parent."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from functools import partial
from typing import Any

import pytest
from support import (
    CASE_VAR,
    Parent,
    alive,
    kill_marked,
    marked_env,
    new_marker,
    wait_for_count,
    wait_until_gone,
)

import leashed
import leashed._helper
from leashed._wrap import wrap

pytest.importorskip("anyio")
pytest.importorskip("trio")

HELPER_MISSING = leashed._helper.helper_path() is None
pytestmark = pytest.mark.skipif(HELPER_MISSING, reason="leashed-helper is not built")

TREE = "sleep 300 & sleep 301; wait"


def _mode_and_options(cmd: list[str]) -> tuple[str, dict[str, str | None]]:
    """Parse a helper command line back: (mode, {option: value}), checking the target."""
    assert cmd[0] == leashed._helper.helper_path()
    mode = cmd[1]
    cut = cmd.index("--")
    options: dict[str, str | None] = {}
    i = 2
    while i < cut:
        if cmd[i] == "-t":
            options["-t"] = None
            i += 1
        else:
            options[cmd[i]] = cmd[i + 1]
            i += 2
    return mode, options


def test_wrap_is_public() -> None:
    assert leashed.wrap is wrap  # type: ignore[attr-defined]


# -- which mechanism, when -----------------------------------------------------------------


def test_default_is_the_guardian_tied_to_this_process() -> None:
    """wrap() cannot know which thread will fork: its leash is on this process."""
    cmd = wrap(["sleep", "1"])
    mode, options = _mode_and_options(cmd)
    assert mode == "guardian"
    assert options == {"-s": "9", "-w": str(os.getpid())}
    assert cmd[cmd.index("--") + 1 :] == ["sleep", "sleep", "1"]
    assert all(isinstance(item, str) for item in cmd)


def test_worker_thread_gets_the_guardian_watching_this_process() -> None:
    box: list[list[str]] = []
    worker = threading.Thread(target=lambda: box.append(wrap(["sleep", "1"])))
    worker.start()
    worker.join()
    mode, options = _mode_and_options(box[0])
    assert mode == "guardian"
    assert options == {"-s": "9", "-w": str(os.getpid())}


def test_inside_trio_gets_the_guardian_even_on_the_main_thread() -> None:
    import trio

    async def main() -> list[str]:
        return wrap(["sleep", "1"])

    mode, options = _mode_and_options(trio.run(main))
    assert mode == "guardian" and options["-w"] == str(os.getpid())


def test_direct_only_when_forced() -> None:
    mode, options = _mode_and_options(wrap(["sleep", "1"], mechanism="direct"))
    assert mode == "direct"
    assert options == {"-p": str(os.getpid()), "-s": "9"}


def test_tree_and_grace_use_the_supervisor_watching_this_process() -> None:
    mode, options = _mode_and_options(wrap(["make"], tree=True, grace=1.5))
    assert mode == "supervisor"
    assert options == {"-s": "15", "-g": "1500", "-w": str(os.getpid()), "-t": None}
    mode, options = _mode_and_options(wrap(["make"], grace=0, death_signal=2))
    assert mode == "supervisor" and options["-s"] == "2" and "-t" not in options


def test_mechanism_can_be_forced() -> None:
    assert _mode_and_options(wrap(["x"], mechanism="guardian"))[0] == "guardian"
    assert _mode_and_options(wrap(["x"], mechanism="supervisor"))[0] == "supervisor"


def test_path_like_and_bytes_items_become_str() -> None:
    from pathlib import Path

    cmd = wrap([Path("/bin/echo"), b"hi"])
    assert cmd[cmd.index("--") + 1 :] == ["/bin/echo", "/bin/echo", "hi"]


@pytest.mark.parametrize(
    ("argv", "options", "error", "names"),
    [
        ("sleep 1", {}, TypeError, "argv"),
        (b"sleep", {}, TypeError, "argv"),
        (None, {}, TypeError, "argv"),
        ([], {}, ValueError, "argv"),
        ([""], {}, ValueError, "argv[0]"),
        (["sleep", 1], {}, TypeError, "argv[1]"),
        (["sle\0ep"], {}, ValueError, "argv[0]"),
        (["sleep"], {"tree": "yes"}, TypeError, "tree"),
        (["sleep"], {"grace": -1}, ValueError, "grace"),
        (["sleep"], {"grace": float("nan")}, ValueError, "grace"),
        (["sleep"], {"grace": "5"}, TypeError, "grace"),
        (["sleep"], {"death_signal": "TERM"}, TypeError, "death_signal"),
        (["sleep"], {"death_signal": 0}, ValueError, "death_signal"),
        (["sleep"], {"mechanism": "direct", "grace": 1}, ValueError, "grace"),
        (["sleep"], {"mechanism": "nope"}, ValueError, "mechanism"),
    ],
)
def test_bad_arguments_are_rejected_naming_them(
    argv: Any, options: dict[str, Any], error: type[Exception], names: str
) -> None:
    with pytest.raises(error, match=rf"(?i){__import__('re').escape(names)}"):
        wrap(argv, **options)


def test_exec_failure_is_exit_status_127() -> None:
    missing = ["leashed-no-such-program-xyz"]
    assert subprocess.run(wrap(missing)).returncode == 127
    assert subprocess.run(wrap(missing, tree=True)).returncode == 127


def test_exit_status_and_stdio_pass_through_the_supervisor() -> None:
    out = subprocess.run(
        wrap(["sh", "-c", "cat; echo err >&2; exit 3"], tree=True),
        input=b"in\n",
        capture_output=True,
    )
    assert (out.returncode, out.stdout, out.stderr) == (3, b"in\n", b"err\n")
    killed = subprocess.run(wrap(["sh", "-c", "kill -TERM $$"], tree=True))
    assert killed.returncode == -15


# -- real parents, SIGKILLed -----------------------------------------------------------------

ANYIO_PARENT = """
    import subprocess, anyio
    from leashed._wrap import wrap

    async def child(argv, options, *, task_status=anyio.TASK_STATUS_IGNORED):
        proc = await anyio.open_process(
            wrap(argv, **options),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        task_status.started(proc.pid)
        await proc.wait()

    async def main():
        async with anyio.create_task_group() as tg:
            direct = await tg.start(child, ["sleep", "300"], {{}})
            tree = await tg.start(child, ["sh", "-c", {tree!r}], {{"tree": True}})
            grace = await tg.start(child, ["sleep", "300"], {{"grace": 5.0}})
            print(direct, tree, grace, flush=True)
            await anyio.sleep(300)

    anyio.run(main, backend="asyncio")
"""

TRIO_PARENT = """
    import subprocess, trio
    from leashed._wrap import wrap

    async def main():
        async with trio.open_nursery() as nursery:
            procs = [
                await nursery.start(trio.run_process, wrap(argv, **options))
                for argv, options in [
                    (["sleep", "300"], {{}}),
                    (["sh", "-c", {tree!r}], {{"tree": True}}),
                    (["sleep", "300"], {{"grace": 5.0}}),
                ]
            ]
            print(*(p.pid for p in procs), flush=True)
            await trio.sleep(300)

    trio.run(main)
"""


@pytest.mark.parametrize("spawner", ["anyio", "trio"])
def test_parent_sigkilled_while_its_spawner_runs(spawner: str) -> None:
    code = (ANYIO_PARENT if spawner == "anyio" else TRIO_PARENT).format(tree=TREE)
    parent = Parent(code, new_marker())
    try:
        direct, tree, grace = (int(p) for p in parent.read_line().split())
        # the parent; sleep and its guardian; front, supervisor, sh and two sleeps; front,
        # supervisor and sleep.
        expected = 11
        found = wait_for_count(parent.marker, expected)
        assert len(found) == expected, found
        assert all(alive(p) for p in (direct, tree, grace))
        parent.kill()
        assert wait_until_gone(parent.marker, 2.0) == []
    finally:
        parent.finish()


EXITED_THREAD_PARENT = """
    import os, subprocess, threading, time, trio
    from leashed._wrap import wrap

    spawner, options = {spawner!r}, {options!r}
    box = []

    def spawn_with_subprocess():
        proc = subprocess.Popen(wrap(["sleep", "300"], **options))
        box.append(proc.pid)
        time.sleep(0.2)  # let the helper arm before this thread exits

    async def spawn_with_trio():
        proc = await trio.lowlevel.open_process(wrap(["sleep", "300"], **options))
        box.append(proc.pid)
        await trio.sleep(0.2)

    if spawner == "trio":
        worker = threading.Thread(target=trio.run, args=(spawn_with_trio,))
    else:
        worker = threading.Thread(target=spawn_with_subprocess)
    worker.start()
    worker.join()
    time.sleep(0.3)
    from leashed._procfs import read_stat
    state = read_stat(box[0]).state
    print(box[0], "dead" if state in "ZX" else "alive", flush=True)
    time.sleep(300)
"""


@pytest.mark.parametrize("spawner", ["trio", "subprocess"])
def test_wrap_called_on_a_worker_thread_that_exits(spawner: str) -> None:
    code = EXITED_THREAD_PARENT.format(spawner=spawner, options={})
    parent = Parent(code, new_marker())
    try:
        pid, state = parent.read_line().split()
        assert state == "alive"
        time.sleep(0.2)
        assert alive(int(pid))
        parent.kill()
        assert wait_until_gone(parent.marker, 2.0) == []
    finally:
        parent.finish()


def test_forcing_pdeathsig_on_an_exiting_thread_shows_why_wrap_avoids_it() -> None:
    """The counterfactual: PDEATHSIG follows the forking thread, so this child dies early."""
    code = EXITED_THREAD_PARENT.format(spawner="subprocess", options={"mechanism": "direct"})
    parent = Parent(code, new_marker())
    try:
        _pid, state = parent.read_line().split()
        assert state == "dead"
    finally:
        parent.finish()


TRIO_WORKER_IDLE_PARENT = """
    import trio
    import trio._core._thread_cache as thread_cache
    from leashed._wrap import wrap

    thread_cache.IDLE_TIMEOUT = 0.2  # trio's forking worker thread exits soon

    async def main():
        proc = await trio.lowlevel.open_process(wrap(["sleep", "300"], **{options!r}))
        await trio.sleep(1.0)
        print(proc.pid, "alive" if proc.poll() is None else "dead", flush=True)
        await trio.sleep(300)

    trio.run(main)
"""


@pytest.mark.parametrize("forced", [False, True])
def test_trio_forks_on_a_worker_thread_that_exits_when_idle(forced: bool) -> None:
    import trio._core._thread_cache as thread_cache

    if not hasattr(thread_cache, "IDLE_TIMEOUT"):
        pytest.skip("this trio has no IDLE_TIMEOUT to shorten")
    options = {"mechanism": "direct"} if forced else {}
    parent = Parent(TRIO_WORKER_IDLE_PARENT.format(options=options), new_marker())
    try:
        pid, state = parent.read_line().split()
        if forced:  # the counterfactual: the direct mode dies with trio's worker thread
            assert state == "dead"
            return
        assert state == "alive" and alive(int(pid))
        parent.kill()
        assert wait_until_gone(parent.marker, 2.0) == []
    finally:
        parent.finish()


def test_trio_cancellation_ends_the_whole_tree() -> None:
    """trio's cancel sends SIGTERM: the supervisor forwards it, then ends the descendants."""
    import trio

    marker = new_marker()
    env = marked_env(marker)

    async def main() -> int:
        async with trio.open_nursery() as nursery:
            proc = await nursery.start(
                partial(trio.run_process, wrap(["sh", "-c", TREE], tree=True), env=env, check=False)
            )
            # front, supervisor, sh, two sleeps
            found = await trio.to_thread.run_sync(wait_for_count, marker, 5)
            nursery.cancel_scope.cancel()
        assert proc.returncode == -signal.SIGTERM
        return len(found)

    try:
        assert trio.run(main) == 5
        assert wait_until_gone(marker, 2.0) == []
    finally:
        kill_marked(CASE_VAR, marker)
