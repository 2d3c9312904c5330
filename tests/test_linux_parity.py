"""The same scenario through subprocess and leashed gives the same result."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wait_for_named, wait_until_gone

import leashed
from leashed import _helper, _inproc_spawn

PY = sys.executable
MODES: dict[str, dict[str, Any]] = {
    "direct": {},  # the in-process spawn where leashed._inproc is built
    "direct-helper": {},  # the helper's direct mode, forced by the LEASHED_HELPER override
    "tree": {"tree": True},
    "guardian": {"mechanism": "guardian"},
}


def both(scenario: Callable[[Any, dict[str, Any]], Any], mode: str) -> None:
    """Run ``scenario(module_api, extra_kwargs)`` through subprocess and leashed; compare."""
    expected = scenario(subprocess, {})
    with direct_path(mode):
        got = scenario(leashed, MODES[mode])
    assert got == expected


@contextlib.contextmanager
def direct_path(mode: str) -> Iterator[None]:
    """The direct mechanism's way for ``mode``, checked before the scenario runs."""
    if mode != "direct-helper":
        if mode == "direct" and _inproc_spawn.built():
            assert _inproc_spawn.direct_path() == _inproc_spawn.IN_PROCESS
        yield
        return
    helper = _helper.helper_path()
    assert helper is not None
    saved = os.environ.get(_helper.HELPER_ENV)
    os.environ[_helper.HELPER_ENV] = helper
    try:
        assert _inproc_spawn.direct_path() == _inproc_spawn.HELPER
        yield
    finally:
        if saved is None:
            del os.environ[_helper.HELPER_ENV]
        else:
            os.environ[_helper.HELPER_ENV] = saved


@pytest.fixture(params=list(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_output_bytes_and_text(mode: str) -> None:
    def scenario(api: Any, kw: dict[str, Any]) -> Any:
        code = (
            "import sys; sys.stdout.write('out\\n'); sys.stderr.write('err\\n');"
            "print(sys.stdin.read().upper())"
        )
        r1 = api.run([PY, "-c", code], input=b"abc", capture_output=True, **kw)
        r2 = api.run([PY, "-c", code], input="xyz", capture_output=True, text=True, **kw)
        r3 = api.run(
            [PY, "-c", code], input="é", stdout=api.PIPE, stderr=api.STDOUT, encoding="utf-8", **kw
        )
        return [(r.returncode, r.stdout, r.stderr) for r in (r1, r2, r3)]

    both(scenario, mode)


@pytest.mark.parametrize("code", [0, 3, 255])
def test_exit_codes(code: int, mode: str) -> None:
    both(lambda api, kw: api.call([PY, "-c", f"raise SystemExit({code})"], **kw), mode)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGSEGV, signal.SIGINT])
def test_killed_by_signal_gives_negative_code(sig: int, mode: str) -> None:
    code = f"import os; os.kill(os.getpid(), {int(sig)})"
    both(lambda api, kw: api.call([PY, "-c", code], **kw), mode)


def test_signals_sent_by_the_parent(mode: str) -> None:
    def scenario(api: Any, kw: dict[str, Any]) -> Any:
        codes = []
        for action in ("terminate", "kill", "send_signal"):
            proc = api.Popen(["sleep", "30"], **kw)
            if action == "send_signal":
                proc.send_signal(signal.SIGUSR1)
            else:
                getattr(proc, action)()
            codes.append(proc.wait(timeout=10))
        return codes

    both(scenario, mode)


def test_timeouts(mode: str) -> None:
    def scenario(api: Any, kw: dict[str, Any]) -> Any:
        seen = []
        with api.Popen(["sleep", "30"], stdout=api.PIPE, **kw) as proc:
            for call in (lambda: proc.wait(timeout=0.1), lambda: proc.communicate(timeout=0.1)):
                try:
                    call()
                except api.TimeoutExpired as exc:
                    seen.append((type(exc).__name__, exc.timeout))
            proc.kill()
        try:
            api.run(["sleep", "30"], timeout=0.2, **kw)
        except subprocess.TimeoutExpired as exc:
            seen.append(("run", exc.cmd, round(exc.timeout, 1)))
        return seen, proc.returncode

    both(scenario, mode)


def test_check_functions(mode: str) -> None:
    def scenario(api: Any, kw: dict[str, Any]) -> Any:
        results: list[Any] = [api.check_output(["echo", "hi"], **kw)]
        results.append(api.check_output("echo $0", shell=True, text=True, **kw))
        results.append(api.check_call(["true"], **kw))
        for fn in (api.check_call, api.check_output):
            try:
                fn([PY, "-c", "import sys; print('x'); sys.exit(4)"], **kw)
            except subprocess.CalledProcessError as exc:
                results.append((exc.returncode, exc.cmd, exc.output))
        try:
            api.run(["false"], check=True, **kw)
        except subprocess.CalledProcessError as exc:
            results.append((exc.returncode, exc.cmd))
        return results

    both(scenario, mode)


@pytest.mark.parametrize("mode", ["direct", "guardian"])  # in tree mode pid is the front's
def test_process_attributes(mode: str, tmp_path: Path) -> None:
    code = (
        "import os,sys; print(os.getcwd(), oct(os.umask(0)), os.environ.get('LEASHED_X'),"
        " os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid(), sys.argv[0])"
    )

    def scenario(api: Any, kw: dict[str, Any]) -> Any:
        out = []
        for extra in (
            {"cwd": str(tmp_path)},
            {"umask": 0o077},
            {"env": {**os.environ, "LEASHED_X": "y"}},
            {"start_new_session": True},
            *([{"process_group": 0}] if sys.version_info >= (3, 11) else []),
        ):
            out.append(api.check_output([PY, "-c", code], text=True, **extra, **kw))
        return out

    if mode == "tree":
        pytest.skip("tree mode: the supervisor, not the target, is the direct child")
    both(scenario, mode)


def test_executable_and_shell_executable(mode: str) -> None:
    def scenario(api: Any, kw: dict[str, Any]) -> Any:
        return [
            api.check_output(["argv0-name", "-c", "echo $0"], executable="/bin/sh", **kw),
            api.check_output("echo $0", shell=True, executable="/bin/bash", **kw),
            api.check_output([Path("/bin/echo"), Path("x")], **kw),
            api.check_output(b"echo bytes", shell=True, **kw),
        ]

    both(scenario, mode)


def test_pass_fds_and_close_fds(mode: str) -> None:
    def scenario(api: Any, kw: dict[str, Any]) -> Any:
        results = []
        r, w = os.pipe()
        try:
            write = f"import os; os.write({w}, b'%s')"
            api.check_call([PY, "-c", write % "passed"], pass_fds=(w,), **kw)
            results.append(os.read(r, 100))
            os.set_inheritable(w, True)
            api.check_call([PY, "-c", write % "inherited"], close_fds=False, **kw)
            results.append(os.read(r, 100))
            results.append(api.call([PY, "-c", write % "closed"], stderr=api.DEVNULL, **kw))
        finally:
            os.close(r)
            os.close(w)
        return results

    both(scenario, mode)


def test_target_sees_no_fd_and_same_signal_state(mode: str) -> None:
    code = (
        "import os; s=open('/proc/self/status').read().splitlines();"
        "print(sorted(os.listdir('/proc/self/fd')));"
        "print([l for l in s if l.startswith(('SigBlk','SigIgn'))])"
    )

    def scenario(api: Any, kw: dict[str, Any]) -> Any:
        # cwd= keeps subprocess off posix_spawn (3.13 uses it even with close_fds=True),
        # whose glibc child shows glibc's internal signals 32 and 33 as ignored
        return [
            api.check_output([PY, "-c", code], cwd="/", **kw),
            api.check_output([PY, "-c", code], restore_signals=False, cwd="/", **kw),
            api.check_output([PY, "-c", code], close_fds=False, cwd="/", **kw),
        ]

    both(scenario, mode)


def test_user_group_and_preexec_fn(mode: str, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to change user")
    code = ["sh", "-c", "id -u; id -g; id -G; echo $PRE"]

    def scenario(api: Any, kw: dict[str, Any]) -> Any:
        return [
            api.check_output(code, user="nobody", group="nogroup", extra_groups=[], cwd="/", **kw),
            api.check_output(code, preexec_fn=lambda: os.environ.__setitem__("PRE", "ran"), **kw),
        ]

    both(scenario, mode)


def test_context_manager_and_streams(mode: str) -> None:
    def scenario(api: Any, kw: dict[str, Any]) -> Any:
        with api.Popen(["cat"], stdin=api.PIPE, stdout=api.PIPE, bufsize=0, **kw) as proc:
            proc.stdin.write(b"line\n")
            proc.stdin.close()
            data = proc.stdout.read()
        big = os.urandom(1 << 20)
        out = api.run(["cat"], input=big, capture_output=True, **kw).stdout
        return data, proc.returncode, out == big, proc.args

    both(scenario, mode)


@pytest.mark.parametrize(
    "cmd",
    [
        "echo hi",
        "printf 'a\\nb\\n\\n'",
        "echo out; echo err >&2; exit 3",
        "exit 130",
        "kill -TERM $$",
        "no-such-command-here",
        b"echo bytes",
    ],
)
def test_getoutput_and_getstatusoutput(cmd: str | bytes) -> None:
    assert leashed.getstatusoutput(cmd) == subprocess.getstatusoutput(cmd)
    assert leashed.getoutput(cmd) == subprocess.getoutput(cmd)


def test_getoutput_child_dies_with_its_parent(case_marker: str) -> None:
    parent = subprocess.Popen(
        [PY, "-c", "import leashed; leashed.getoutput('exec sleep 300')"],
    )
    try:
        assert wait_for_named(case_marker, "sleep", 1), "the shell's sleep never started"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert wait_until_gone(case_marker, 5) == []
    finally:
        parent.kill()
        parent.wait()
