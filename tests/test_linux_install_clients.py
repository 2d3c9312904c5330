"""install() with the real clients whose children users find orphaned (slow).

The MCP SDK's ``stdio_client`` with a server whose tool starts a job in its own session, a
jupyter_client ``KernelManager`` whose cell starts a subprocess, uvicorn ``--workers 2`` /
gunicorn ``-w 2`` started with plain ``subprocess``, selenium's ``webdriver.Chrome``
(chromedriver and the browser's processes), pytest ``-n 2`` (pytest-xdist's workers) and a
small node server run by ``npm exec``: none of them is told about leashed. Each runs in a
real parent three ways: ``leashed.install()`` called first, ``LEASHED_INSTALL=1`` in the
parent's environment (no code change), and a control with neither, which must leave
survivors. The parent is SIGKILLed; survivors are counted by the case marker (the
browser's processes by pid, see its test).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from support import (
    CASE_VAR,
    SUITE_VAR,
    Parent,
    descendants,
    kill_snapshot,
    marked,
    still_running,
    wait_snapshot_gone,
    wait_until_gone,
)
from test_linux_recipes import (
    SERVERS,
    START,
    Lines,
    get,
    recipe,
    refused,
    start_parent,
    wait_log,
    write_recipes,
)

import leashed._helper
from leashed import _install
from leashed._procfs import poll_until

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


#: A parent that starts ARGV with plain subprocess, its output in server.log.
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


SELENIUM_PARENT = """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for arg in ARGS:
        options.add_argument(arg)
    service = Service(DRIVER, log_output="chromedriver.log")
    driver = webdriver.Chrome(service=service, options=options)
    driver.get("about:blank")
    print("ready", service.process.pid, flush=True)
    time.sleep(600)
"""

#: Headless, and no sandbox: the suite runs as root, where chromium refuses its sandbox.
CHROME_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _descendants_of(pids: list[int]) -> dict[int, int]:
    """A snapshot of every descendant of ``pids``."""
    snapshot: dict[int, int] = {}
    for pid in pids:
        snapshot.update(descendants(pid))
    return snapshot


@pytest.mark.parametrize("how", HOWS)
def test_selenium_chromedriver_and_its_browser(tmp_path: Path, case_marker: str, how: str) -> None:
    """The browser's processes are counted by pid, not by marker: chromium writes the
    titles of its zygotes and of the processes it starts (renderers, utilities, the GPU
    process) over the memory that /proc/PID/environ shows, so most show no environment at
    all. A snapshot of chromedriver's descendants taken before the kill finds them (the
    start time tells a reused pid apart). Chromedriver, the browser's first process and
    its crash handlers (daemons: they leave the tree) keep the marker."""
    pytest.importorskip("selenium")
    driver = shutil.which("chromedriver")
    browser = next(filter(None, map(shutil.which, BROWSERS)), None)
    if driver is None or browser is None:
        pytest.skip("chromedriver or chromium is not installed")
    env = dict(os.environ, HOME=str(tmp_path))  # the browser's crash reports and caches
    args = [*CHROME_ARGS, f"--user-data-dir={tmp_path / 'profile'}"]
    values = {"DRIVER": driver, "BROWSER": browser, "ARGS": args}
    browsers: dict[int, int] = {}
    with _start(SELENIUM_PARENT, how, case_marker, tmp_path, env=env, **values) as parent:
        try:
            chromedriver = int(Lines(parent).expect(r"^ready (\d+)$")[1])
            browsers = descendants(chromedriver)
            assert len(browsers) >= 3, browsers  # the browser, a zygote, a renderer at least
            with_marker = set(marked(case_marker))
            assert chromedriver in with_marker and with_marker & set(browsers)
            parent.kill()
            if how == "none":
                wait_until_gone(case_marker, STAY)
                assert chromedriver in marked(case_marker), "the control left no chromedriver"
                assert still_running(browsers), "the control left no browser process"
            else:
                assert wait_until_gone(case_marker, GONE) == []
                assert wait_snapshot_gone(browsers, GONE) == []
        finally:  # what shows no marker is ended by pid, with what it started since
            kill_snapshot(browsers | _descendants_of(marked(case_marker)))


SLEEPY_TESTS = """
import os
import time

import pytest


@pytest.mark.parametrize("name", ["one", "two"])
def test_sleepy(name):
    with open(f"started-{name}.tmp", "w") as out:
        out.write(str(os.getpid()))
    os.replace(f"started-{name}.tmp", f"started-{name}")
    time.sleep(300)
"""


@pytest.mark.parametrize("how", HOWS)
def test_pytest_xdist_workers_started_by_a_parent(
    tmp_path: Path, case_marker: str, how: str
) -> None:
    pytest.importorskip("xdist")
    (tmp_path / "test_sleepy.py").write_text(SLEEPY_TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # keeps this project's configuration out
    argv = [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider"]
    argv += ["-c", "pytest.ini", "--rootdir", str(tmp_path), "test_sleepy.py"]
    env = dict(os.environ)
    for var in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        env.pop(var, None)
    with _start(SERVER_PARENT, how, case_marker, tmp_path, env=env, ARGV=argv) as parent:
        inner = int(Lines(parent).expect(r"^ready (\d+)$")[1])
        started = [tmp_path / f"started-{name}" for name in ("one", "two")]
        if not poll_until(lambda: all(path.exists() for path in started), START):
            log = (tmp_path / "server.log").read_text(errors="replace")
            raise AssertionError(f"the two tests did not start:\n{log}")
        workers = {int(path.read_text()) for path in started}
        assert len(workers) == 2, workers  # one test on each worker
        assert {inner, *workers} <= set(marked(case_marker))
        _end(parent, case_marker, how, workers)


NPM_PARENT = """
    import subprocess

    log = open("npm.log", "ab")
    npm = subprocess.Popen(ARGV, stdout=log, stderr=log)
    print("ready", npm.pid, flush=True)
    time.sleep(600)
"""

#: A local package whose bin is the recipes' node server: ``npm exec`` installs it into
#: its cache from the directory (a link), with no network.
DEMO_PACKAGE = '{"name": "demo-site", "version": "1.0.0", "bin": {"demo-site": "server.js"}}\n'


@pytest.mark.parametrize("how", HOWS)
def test_npm_exec_server_started_by_plain_subprocess(
    tmp_path: Path, case_marker: str, how: str
) -> None:
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    package = tmp_path / "demo-site"
    package.mkdir()
    (package / "package.json").write_text(DEMO_PACKAGE)
    (package / "server.js").write_text("#!/usr/bin/env node\n" + recipe("server.js"))
    argv = ["npm", "exec", "--offline", "--yes", "--package", "./demo-site", "--", "demo-site"]
    env = dict(os.environ, PORT="0", npm_config_update_notifier="false")
    env.update(npm_config_fund="false", npm_config_cache=str(tmp_path / "npm-cache"))
    with _start(NPM_PARENT, how, case_marker, tmp_path, env=env, ARGV=argv) as parent:
        npm = int(Lines(parent).expect(r"^ready (\d+)$")[1])
        found = wait_log(tmp_path / "npm.log", r"listening on (\S+) \(pid (\d+)\)")[0]
        url, server = found[0], int(found[1])
        assert get(url) == b"hello from node\n"
        assert {npm, server} <= set(marked(case_marker))
        _end(parent, case_marker, how, {server})
        if how == "none":
            assert get(url), "the control's server does not serve any more"
        else:
            assert refused(url)
