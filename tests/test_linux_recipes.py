"""The recipes of docs/recipes.md, run against the real clients and servers.

Each test takes the recipe's files from the page verbatim, runs them under a real parent
process (a Python program, a bash script, pytest), SIGKILLs that parent and counts the
processes that still carry the case marker. The controls run the obvious code without
leashed (or without ``tree=True``) and check that it does leave processes behind, so that
the recipes' own tests can fail.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import sys
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import (
    CASE_VAR,
    SUITE_VAR,
    Parent,
    alive,
    marked,
    named,
    wait_until_gone,
)

import leashed._helper
from leashed._procfs import poll_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(leashed._helper.helper_path() is None, reason="leashed-helper is not built"),
]

DOC = Path(__file__).resolve().parent.parent / "docs" / "recipes.md"
#: Seconds for a SIGKILLed parent's leashed processes to be gone (milliseconds when idle).
GONE = 5.0
#: Seconds a control waits before it counts what survived.
STAY = 1.0
#: Seconds to start a real client or server (imports are slow on a busy 2-core machine).
START = 90.0


# -- the recipes' files, from the page -------------------------------------------------------


def recipe(name: str) -> str:
    """The code block that follows the line ``\\`name\\`:`` in docs/recipes.md."""
    text = DOC.read_text(encoding="utf-8")
    found = re.search(rf"^`{re.escape(name)}`:\n\n```[\w-]*\n(.*?)^```", text, re.M | re.S)
    assert found, f"no block for {name} in {DOC}"
    return found.group(1)


def write_recipes(directory: Path, *names: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_text(recipe(name), encoding="utf-8")
    return directory


def test_every_named_block_is_used() -> None:
    """A file the page names but no test runs would be an untested recipe."""
    names = re.findall(r"^`([\w.\-]+)`:\n\n```", DOC.read_text(encoding="utf-8"), re.M)
    source = Path(__file__).read_text(encoding="utf-8")
    unused = [name for name in names if f'"{name}"' not in source]
    assert names and not unused, unused


# -- parents, their output, the network --------------------------------------------------------


def start_parent(
    code: str, marker: str, cwd: Path, env: dict[str, str] | None = None, **values: Any
) -> Parent:
    """A real Python parent running ``code`` in ``cwd``, with ``values`` as globals."""
    prelude = [
        "import os, sys, time",
        f"os.chdir({str(cwd)!r})",
        f"sys.path.insert(0, {str(cwd)!r})",
        *(f"{name} = {value!r}" for name, value in values.items()),
    ]
    return Parent("\n".join(prelude) + "\n" + textwrap.dedent(code), marker, env=env)


class Lines:
    """What a parent, and every process that inherited its stdout, prints, line by line.

    Reads the pipe's descriptor directly: a buffered reader could hold lines that select()
    does not see. ``expect`` takes the first line not taken yet that matches, so lines
    from several processes may come in any order.
    """

    def __init__(self, parent: Parent) -> None:
        assert parent.proc.stdout is not None
        self.parent = parent
        self.fd = parent.proc.stdout.fileno()
        self.pending = b""
        self.untaken: list[str] = []
        self.seen: list[str] = []

    def expect(self, pattern: str, timeout: float = START) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.pending:
                raw, self.pending = self.pending.split(b"\n", 1)
                line = raw.decode(errors="replace")
                self.seen.append(line)
                self.untaken.append(line)
            for index, line in enumerate(self.untaken):
                found = regex.search(line)
                if found:
                    del self.untaken[index]
                    return found
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self.fd, 65536) if ready else b""
            if not chunk:
                why = "output ended" if ready else f"nothing in {timeout}s"
                raise AssertionError(
                    f"{why} before a line matching {pattern!r}: {self.seen}\n{self.errors()}"
                )
            self.pending += chunk

    def errors(self) -> str:
        """What the parent wrote on stderr so far (for a failure's message)."""
        assert self.parent.proc.stderr is not None
        fd, out = self.parent.proc.stderr.fileno(), b""
        while select.select([fd], [], [], 0.5)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out += chunk
        return out.decode(errors="replace")[-4000:]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


def refused(url: str, timeout: float = 5.0) -> bool:
    """Whether nothing serves ``url`` any more. A connection reset is a server still in its
    exit (its listening socket not yet closed): asked again until refused or ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            get(url)
        except urllib.error.URLError as exc:
            return isinstance(exc.reason, ConnectionRefusedError)
        except ConnectionResetError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
        return False


def wait_log(path: Path, pattern: str, count: int = 1, timeout: float = START) -> list[str]:
    """The matches of ``pattern`` in the file, once there are ``count`` of them."""

    def matches() -> list[str]:
        text = path.read_text(errors="replace") if path.exists() else ""
        return re.findall(pattern, text, re.M)

    found = poll_until(lambda: len(matches()) >= count, timeout)
    log = path.read_text(errors="replace") if path.exists() else "(no log)"
    assert found, f"{count} x {pattern!r} not in {path} within {timeout}s:\n{log}"
    return matches()


def shell_bin(directory: Path) -> dict[str, str]:
    """An environment whose PATH finds ``leashed`` and ``python3`` of this interpreter."""
    directory.mkdir(parents=True, exist_ok=True)
    script = Path(sys.executable).with_name("leashed")
    commands = {"python3": f'exec "{sys.executable}" "$@"'}
    if script.exists():
        commands["leashed"] = f'exec "{script}" "$@"'
    else:  # a source checkout run without installing: the module is the same program
        commands["leashed"] = f'exec "{sys.executable}" -m leashed "$@"'
    for name, line in commands.items():
        path = directory / name
        path.write_text(f"#!/bin/sh\n{line}\n")
        path.chmod(0o755)
    return dict(os.environ, PATH=f"{directory}{os.pathsep}{os.environ['PATH']}")


def helpers(marker: str) -> list[int]:
    """The marked processes that show a leash: leashed-helper processes (guardian, front,
    supervisor), or targets in a leash cgroup (the cgroup mechanism adds no process)."""
    return named(marked(marker), "leashed-helper") + in_leash_cgroups(marked(marker))


def in_leash_cgroups(pids: list[int]) -> list[int]:
    """The pids whose cgroup v2 is a leash cgroup (a leashed-PID-START directory)."""
    found = []
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            continue
        if any(line.startswith("0::") and "/leashed-" in line for line in lines):
            found.append(pid)
    return found


# -- 1. MCP over stdio ---------------------------------------------------------------------

MCP_PARENT = """
    import anyio
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp_client import leashed_server

    async def main():
        env = {var: os.environ[var] for var in MARKERS}  # stdio_client passes little else
        argv = [sys.executable, "mcp_server.py"]
        if LEASHED:
            params = leashed_server(argv, env=env)
        else:
            params = StdioServerParameters(command=argv[0], args=argv[1:], env=env)
        with open("server.log", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    added = await session.call_tool("add", {"a": 2, "b": 3})
                    job = await session.call_tool("start_job", {"seconds": 300})
                    print("ready", added.content[0].text, job.content[0].text, flush=True)
                    if not CLOSE:
                        await anyio.sleep(600)
        print("closed", flush=True)

    anyio.run(main, backend=BACKEND)
"""


def _mcp_parent(tmp_path: Path, marker: str, **values: Any) -> tuple[Parent, Lines, int]:
    write_recipes(tmp_path, "mcp_server.py", "mcp_client.py")
    values = {"LEASHED": True, "BACKEND": "asyncio", "CLOSE": False, **values}
    parent = start_parent(MCP_PARENT, marker, tmp_path, MARKERS=[CASE_VAR, SUITE_VAR], **values)
    lines = Lines(parent)
    try:
        ready = lines.expect(r"^ready (\S+) (\d+)$")
    except AssertionError:
        parent.finish()
        raise AssertionError((tmp_path / "server.log").read_text(errors="replace")) from None
    assert ready[1] == "5"
    job = int(ready[2])
    assert job in marked(marker), "the server's job did not get the case marker"
    return parent, lines, job


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_mcp_server_and_its_job_die_with_a_sigkilled_client(
    tmp_path: Path, marker: str, backend: str
) -> None:
    pytest.importorskip(backend)
    parent, _, job = _mcp_parent(tmp_path, marker, BACKEND=backend)
    with parent:
        assert helpers(marker), "the server runs with no leash"
        assert parent.killed_survivors(GONE) == []
        assert not alive(job)


def test_mcp_clean_close_also_ends_what_the_server_left(tmp_path: Path, marker: str) -> None:
    parent, lines, job = _mcp_parent(tmp_path, marker, CLOSE=True)
    with parent:
        lines.expect(r"^closed$")
        assert parent.proc.wait(timeout=30) == 0
        assert wait_until_gone(marker, GONE) == []
        assert not alive(job)


MCP_MAIN = """
    import anyio
    import mcp_client

    # the recipe's main() as printed; only the markers are added to the server's environment
    recipe_server = mcp_client.leashed_server
    markers = {var: os.environ[var] for var in MARKERS}

    def marked_server(argv, env=None):
        return recipe_server(argv, {**(env or {}), **markers})

    mcp_client.leashed_server = marked_server
    anyio.run(mcp_client.main)
"""


def test_mcp_client_recipe_runs_as_printed(tmp_path: Path, marker: str) -> None:
    write_recipes(tmp_path, "mcp_server.py", "mcp_client.py")
    with start_parent(MCP_MAIN, marker, tmp_path, MARKERS=[CASE_VAR, SUITE_VAR]) as parent:
        lines = Lines(parent)
        lines.expect(r"^5$")
        assert parent.proc.wait(timeout=START) == 0, lines.errors()
        assert wait_until_gone(marker, GONE) == []


def test_control_mcp_without_leashed_leaves_the_job_running(tmp_path: Path, marker: str) -> None:
    parent, _, job = _mcp_parent(tmp_path, marker, LEASHED=False)
    with parent:
        survivors = parent.killed_survivors(STAY)
        assert job in survivors


# -- 2. Jupyter kernels --------------------------------------------------------------------

KERNEL_PARENT = """
    if SPEC:
        from pathlib import Path
        from install_leashed_kernel import install

        install(Path("jupyter", "kernels"))
        os.environ["JUPYTER_PATH"] = os.path.abspath("jupyter")
        from jupyter_client import KernelManager

        km = KernelManager(kernel_name="python3-leashed")
    else:
        from leashed_kernel import LeashedKernelManager

        km = LeashedKernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)

    def run(code):
        out = []
        def keep(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
        reply = kc.execute_interactive(code, output_hook=keep, timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
        return "".join(out).strip()

    # an interrupt still reaches a running cell, and the kernel lives on
    # (stop_on_error=False: else ipykernel may abort the next request, with or without leashed)
    code = "import time; print('sleeping', flush=True); time.sleep(60)"
    msg_id = kc.execute(code, stop_on_error=False)
    while True:
        msg = kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            break
    km.interrupt_kernel()
    while True:
        reply = kc.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    # a process started from a cell: the kernel's child, the manager's grandchild
    job = run("import subprocess; job = subprocess.Popen(['sleep', '300']); print(job.pid)")
    print("ready", job, reply["content"].get("ename"), run("print(6 * 7)"), flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("how", ["kernel-manager-subclass", "kernel-spec"])
def test_jupyter_kernel_and_its_children_die_with_a_sigkilled_manager(
    tmp_path: Path, marker: str, how: str
) -> None:
    pytest.importorskip("jupyter_client")
    pytest.importorskip("ipykernel")
    write_recipes(tmp_path, "leashed_kernel.py", "install_leashed_kernel.py")
    # connection files and IPython's profile go to this test's directory, not to ~
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "run"))
    env["IPYTHONDIR"] = str(tmp_path / "ipython")
    spec = how == "kernel-spec"
    with start_parent(KERNEL_PARENT, marker, tmp_path, env=env, SPEC=spec) as parent:
        ready = Lines(parent).expect(r"^ready (\d+) (\S+) (\S+)$")
        job = int(ready[1])
        assert ready.groups()[1:] == ("KeyboardInterrupt", "42")
        assert job in marked(marker) and helpers(marker)
        assert parent.killed_survivors(GONE) == []


# -- 3. uvicorn and gunicorn -----------------------------------------------------------------

SERVER_PARENT = """
    import serve

    server = getattr(serve, START)(open("server.log", "ab"), port=0)
    print("ready", server.pid, flush=True)
    time.sleep(600)
"""


@dataclass(frozen=True)
class Server:
    """A server recipe and the log lines that show its start and its clean shutdown."""

    app: str
    port: str
    started: str
    per_worker: tuple[str, ...]
    once: tuple[str, ...]


SERVERS = {
    "uvicorn": Server(
        app="asgi_app.py",
        port=r"Uvicorn running on http://127\.0\.0\.1:(\d+)",
        started=r"Application startup complete\.",
        per_worker=(r"Application shutdown complete\.", r"Finished server process \[\d+\]"),
        once=(r"Stopping parent process \[\d+\]",),
    ),
    "gunicorn": Server(
        app="wsgi_app.py",
        port=r"Listening at: http://127\.0\.0\.1:(\d+)",
        started=r"Booting worker with pid: \d+",
        per_worker=(r"Worker exiting \(pid: \d+\)",),
        once=(r"Handling signal: term", r"Shutting down: Master"),
    ),
}


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_server_shuts_down_cleanly_when_its_parent_is_sigkilled(
    tmp_path: Path, marker: str, server: str
) -> None:
    pytest.importorskip(server)
    spec = SERVERS[server]
    write_recipes(tmp_path, "serve.py", spec.app)
    log = tmp_path / "server.log"
    env = dict(os.environ, HOME=str(tmp_path))  # gunicorn keeps a control socket in ~
    parent = start_parent(SERVER_PARENT, marker, tmp_path, env=env, START=f"start_{server}")
    with parent:
        Lines(parent).expect(r"^ready \d+$")
        port = wait_log(log, spec.port)[0]
        workers = len(wait_log(log, spec.started, count=2))
        url = f"http://127.0.0.1:{port}/"
        assert get(url) == b"hello"
        parent.kill()
        grace = 10  # serve.GRACE
        assert wait_until_gone(marker, grace + GONE) == []
        assert refused(url)
    text = log.read_text()
    for pattern in spec.per_worker:
        assert len(re.findall(pattern, text)) == workers, (pattern, text)
    for pattern in spec.once:
        assert re.search(pattern, text), (pattern, text)


# -- 4. multiprocessing Pool and ProcessPoolExecutor ---------------------------------------

POOL_PARENT = """
    import subprocess
    import leashed

    argv = [sys.executable, "pool_app.py", KIND, "300"]
    if HOW == "cli":  # the recipe's shell line, run by bash
        line = f"leashed run --tree -- python3 pool_app.py {KIND} 300 & wait"
        os.execvp("bash", ["bash", "-c", line])
    elif HOW == "tree":
        app = leashed.Popen(argv, tree=True)
    elif HOW == "default":
        app = leashed.Popen(argv)
    else:
        app = subprocess.Popen(argv)
    print("ready", app.pid, flush=True)
    time.sleep(600)
"""


def _pool_parent(
    tmp_path: Path, marker: str, kind: str, how: str
) -> tuple[Parent, int | None, set[int]]:
    """The parent, the pid it started (None when bash started it), the two busy workers."""
    write_recipes(tmp_path, "pool_app.py")
    env = shell_bin(tmp_path / "bin")
    parent = start_parent(POOL_PARENT, marker, tmp_path, env=env, KIND=kind, HOW=how)
    lines = Lines(parent)
    app = None if how == "cli" else int(lines.expect(r"^ready (\d+)$")[1])
    workers = {int(lines.expect(r"^worker (\d+) busy$")[1]) for _ in range(2)}
    assert len(workers) == 2 and workers <= set(marked(marker))
    return parent, app, workers


@pytest.mark.parametrize(
    ("kind", "how"), [("pool", "tree"), ("executor", "tree"), ("executor", "cli")]
)
def test_pool_workers_die_with_the_sigkilled_parent(
    tmp_path: Path, marker: str, kind: str, how: str
) -> None:
    parent, _, _ = _pool_parent(tmp_path, marker, kind, how)
    with parent:
        assert helpers(marker), "the program runs with no leash"
        assert parent.killed_survivors(GONE) == []


@pytest.mark.parametrize("how", ["plain", "default"])
def test_control_pool_workers_outlive_their_parent_without_tree(
    tmp_path: Path, marker: str, how: str
) -> None:
    """Plain subprocess: the program and its workers stay. tree=False: the workers stay."""
    parent, app, workers = _pool_parent(tmp_path, marker, "executor", how)
    with parent:
        survivors = parent.killed_survivors(STAY)
        assert workers <= set(survivors), survivors
        assert (app in survivors) == (how == "plain"), (app, survivors)


# -- 5. npm run and sh launchers ----------------------------------------------------------

LAUNCHER_PARENT = """
    import leashed

    app = leashed.Popen(ARGV, tree=TREE)
    print("ready", app.pid, flush=True)
    time.sleep(600)
"""

LAUNCHERS = {
    "npm": (["npm", "run", "start"], ["package.json", "server.js"], r"listening on (\S+)"),
    "sh": (["sh", "start-site.sh"], ["start-site.sh"], r"Serving HTTP on \S+ port (\d+)"),
}


def _launcher(tmp_path: Path, marker: str, launcher: str, tree: bool) -> tuple[Parent, str]:
    argv, files, banner = LAUNCHERS[launcher]
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    write_recipes(tmp_path, *files)
    env = shell_bin(tmp_path / "bin")
    env.update(PORT="0", npm_config_update_notifier="false", npm_config_fund="false")
    env["npm_config_cache"] = str(tmp_path / "npm-cache")
    parent = start_parent(LAUNCHER_PARENT, marker, tmp_path, env=env, ARGV=argv, TREE=tree)
    found = Lines(parent).expect(banner)[1]
    url = found if found.startswith("http") else f"http://127.0.0.1:{found}/"
    assert get(url)
    return parent, url


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_launched_server_dies_with_the_parent_with_tree(
    tmp_path: Path, marker: str, launcher: str
) -> None:
    parent, url = _launcher(tmp_path, marker, launcher, tree=True)
    with parent:
        assert parent.killed_survivors(GONE) == []
        assert refused(url)


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_control_launched_server_outlives_the_parent_without_tree(
    tmp_path: Path, marker: str, launcher: str
) -> None:
    """The default leash ends the launcher; the server below it keeps serving."""
    parent, url = _launcher(tmp_path, marker, launcher, tree=False)
    with parent:
        survivors = parent.killed_survivors(STAY)
        assert survivors
        assert get(url)


# -- 6. a pytest fixture -------------------------------------------------------------------

HOLD = """
import time


def test_hold(http_server):
    print("serving", http_server, flush=True)
    time.sleep(600)
"""

PYTEST_PARENT = """
    import pytest

    sys.exit(pytest.main(["-q", "-s", "-p", "no:cacheprovider", *ARGS]))
"""


def test_pytest_fixture_server_dies_with_a_sigkilled_pytest(tmp_path: Path, marker: str) -> None:
    site = write_recipes(tmp_path / "site", "conftest.py", "test_site.py")
    (site / "pytest.ini").write_text("[pytest]\n")  # keeps this project's configuration out
    # a normal run: the test passes, the teardown stops the server
    with start_parent(PYTEST_PARENT, marker, site, ARGS=["test_site.py"]) as parent:
        assert parent.proc.wait(timeout=START) == 0, parent.proc.communicate()
        assert wait_until_gone(marker, GONE) == []
    # a run SIGKILLed while a test holds the server: no teardown, the leash still holds
    (site / "test_hold.py").write_text(HOLD)
    with start_parent(PYTEST_PARENT, marker, site, ARGS=["test_hold.py"]) as parent:
        url = Lines(parent).expect(r"serving (\S+)")[1]
        assert get(url) == b"hello" and helpers(marker)
        assert parent.killed_survivors(GONE) == []
        assert refused(url)


# -- 7. shell scripts ----------------------------------------------------------------------

SCRIPT_PARENT = """
    os.execvp("bash", ["bash", "services.sh"])
"""


def _script(tmp_path: Path, marker: str, leashed: bool) -> tuple[Parent, str]:
    text = recipe("services.sh")
    if not leashed:
        text = text.replace("leashed run --tree -- ", "").replace("leashed run --pid $$ -- ", "")
        assert "leashed run" not in text
    (tmp_path / "services.sh").write_text(text)
    env = shell_bin(tmp_path / "bin")
    parent = start_parent(SCRIPT_PARENT, marker, tmp_path, env=env)
    # tail -f prints the server's banner on the script's stdout
    port = Lines(parent).expect(r"Serving HTTP on \S+ port (\d+)")[1]
    url = f"http://127.0.0.1:{port}/"
    assert get(url)
    assert named(marked(marker), "tail")
    return parent, url


def test_shell_script_services_die_with_the_sigkilled_script(tmp_path: Path, marker: str) -> None:
    parent, url = _script(tmp_path, marker, leashed=True)
    with parent:
        assert parent.killed_survivors(GONE) == []
        assert refused(url)


def test_control_shell_script_services_outlive_it_without_leashed(
    tmp_path: Path, marker: str
) -> None:
    parent, url = _script(tmp_path, marker, leashed=False)
    with parent:
        survivors = parent.killed_survivors(STAY)
        assert named(survivors, "tail"), survivors
        assert get(url)
