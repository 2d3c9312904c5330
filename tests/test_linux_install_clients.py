"""install() with the real clients whose children users find orphaned (slow).

The MCP SDK's ``stdio_client`` with a server whose tool starts a job in its own session, a
jupyter_client ``KernelManager`` whose cell starts a subprocess, and uvicorn ``--workers
2`` / gunicorn ``-w 2`` started with plain ``subprocess``: none of them is told about
leashed. Each runs in a real parent three ways: ``leashed.install()`` called first,
``LEASHED_INSTALL=1`` in the parent's environment (no code change), and a control with
neither, which must leave survivors. The parent is SIGKILLed; survivors are counted by
the case marker.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from support import CASE_VAR, SUITE_VAR, Parent, marked, wait_until_gone
from test_linux_recipes import SERVERS, Lines, start_parent, wait_log, write_recipes

import leashed._helper
from leashed import _install

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(leashed._helper.helper_path() is None, reason="leashed-helper is not built"),
]

GONE = 10.0
STAY = 1.0
HOWS = ["call", "env", "none"]

PRELUDE = """
    if HOW == "call":
        import leashed
        leashed.install()
"""


def _start(
    code: str, how: str, marker: str, cwd: Path, env: dict[str, str] | None = None, **values: object
) -> Parent:
    env = dict(os.environ if env is None else env)
    env.pop(_install.INSTALL_ENV, None)
    if how == "env":
        env[_install.INSTALL_ENV] = "1"
    return start_parent(PRELUDE + code, marker, cwd, env=env, HOW=how, **values)


def _end(parent: Parent, marker: str, how: str, expected: set[int]) -> None:
    """SIGKILL the parent; nothing survives with install(), ``expected`` without."""
    assert expected <= set(marked(marker)), "the scenario's processes are not running"
    parent.kill()
    if how == "none":
        wait_until_gone(marker, STAY)
        assert expected & set(marked(marker)), "the control left no survivor"
    else:
        assert wait_until_gone(marker, GONE) == []


MCP_PARENT = """
    import anyio
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    async def main():
        env = {var: os.environ[var] for var in MARKERS}  # stdio_client passes little else
        params = StdioServerParameters(command=sys.executable, args=["mcp_server.py"], env=env)
        with open("server.log", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    job = await session.call_tool("start_job", {"seconds": 300})
                    print("ready", job.content[0].text, flush=True)
                    await anyio.sleep(600)

    anyio.run(main)
"""


@pytest.mark.parametrize("how", HOWS)
def test_mcp_stdio_server_and_its_job(tmp_path: Path, case_marker: str, how: str) -> None:
    pytest.importorskip("mcp")
    write_recipes(tmp_path, "mcp_server.py")
    with _start(MCP_PARENT, how, case_marker, tmp_path, MARKERS=[CASE_VAR, SUITE_VAR]) as parent:
        job = int(Lines(parent).expect(r"^ready (\d+)$")[1])
        _end(parent, case_marker, how, {job})


KERNEL_PARENT = """
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    out = []
    code = "import subprocess; job = subprocess.Popen(['sleep', '300']); print(job.pid)"

    def keep(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])

    kc.execute_interactive(code, output_hook=keep, timeout=60)
    print("ready", km.provisioner.process.pid, "".join(out).strip(), flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("how", HOWS)
def test_jupyter_kernel_and_its_cells_subprocess(
    tmp_path: Path, case_marker: str, how: str
) -> None:
    pytest.importorskip("jupyter_client")
    pytest.importorskip("ipykernel")
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "run"))
    env["IPYTHONDIR"] = str(tmp_path / "ipython")
    with _start(KERNEL_PARENT, how, case_marker, tmp_path, env=env) as parent:
        ready = Lines(parent).expect(r"^ready (\d+) (\d+)$")
        _end(parent, case_marker, how, {int(ready[2])})


SERVER_PARENT = """
    import subprocess

    log = open("server.log", "ab")
    server = subprocess.Popen(ARGV, stdout=log, stderr=log)
    print("ready", server.pid, flush=True)
    time.sleep(600)
"""

ARGVS = {
    "uvicorn": ["-m", "uvicorn", "asgi_app:app", "--host", "127.0.0.1", "--port", "0",
                "--workers", "2"],
    "gunicorn": ["-m", "gunicorn", "wsgi_app:app", "--bind", "127.0.0.1:0", "--workers", "2"],
}  # fmt: skip


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("server", sorted(ARGVS))
def test_server_workers_started_by_plain_subprocess(
    tmp_path: Path, case_marker: str, server: str, how: str
) -> None:
    pytest.importorskip(server)
    spec = SERVERS[server]
    write_recipes(tmp_path, spec.app)
    env = dict(os.environ, HOME=str(tmp_path))  # gunicorn keeps a control socket in ~
    argv = [sys.executable, *ARGVS[server]]
    with _start(SERVER_PARENT, how, case_marker, tmp_path, env=env, ARGV=argv) as parent:
        Lines(parent).expect(r"^ready \d+$")
        wait_log(tmp_path / "server.log", spec.started, count=2)
        workers = set(marked(case_marker)) - {parent.proc.pid}
        assert len(workers) >= 3, workers  # the master and two workers (and helpers)
        _end(parent, case_marker, how, workers)
