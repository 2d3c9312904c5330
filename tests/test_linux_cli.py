"""The ``leashed`` command, driven as a user would: ``python -m leashed ...`` from a shell."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support import (
    marked_env,
    poll_until,
    wait_for_count,
    wait_until_gone,
)

import leashed
import leashed._helper
from leashed import _procfs
from leashed._cli import helper_command_line

pytestmark = pytest.mark.skipif(
    leashed._helper.helper_path() is None, reason="leashed-helper is not built"
)

LEASHED = [sys.executable, "-m", "leashed"]


def _env(marker: str) -> dict[str, str]:
    return marked_env(marker, Path(leashed.__file__).resolve().parent.parent)


def cli(marker: str, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LEASHED, *args],
        env=_env(marker),
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,  # type: ignore[call-overload]
    )


def _describe(pid: int) -> str:
    stat = _procfs.read_stat(pid)
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        cmd = "?"
    return f"{pid} {stat} {cmd}"


def _wait_comm(pid: int, name: str, timeout: float = 10.0) -> bool:
    return bool(poll_until(lambda: _procfs.command_name(pid) == name, timeout))


class Script:
    """A bash script run as the parent; prints a line when its children run."""

    def __init__(self, body: str, marker: str) -> None:
        env = _env(marker)
        env["PY"] = sys.executable
        self.proc = subprocess.Popen(
            ["bash", "-c", textwrap.dedent(body)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def read_line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"the script ended early: {self.proc.wait()} {self.proc.stderr.read()}"  # type: ignore[union-attr]
        return line.strip()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        self.kill()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


# -- leashed run: the leash holds ------------------------------------------------------------


def test_a_sigkilled_script_leaves_nothing_it_started(marker: str) -> None:
    script = Script(
        """
        "$PY" -m leashed run -- sleep 300 &
        direct=$!
        "$PY" -m leashed run --tree -- sh -c 'sleep 300 & (setsid sleep 301 &); sleep 302; wait' &
        tree=$!
        echo "$direct $tree"
        wait
        """,
        marker,
    )
    try:
        direct, tree = (int(p) for p in script.read_line().split())
        # leashed became the command itself (same pid), watched by a guardian
        assert _wait_comm(direct, "sleep")
        assert _wait_comm(tree, "leashed-helper")
        # the script, sleep and its guardian, and front + supervisor + sh + three sleeps
        found = wait_for_count(marker, 9)
        assert len(found) == 9, found
        script.kill()
        assert wait_until_gone(marker, 2.0) == []
    finally:
        script.close()


@pytest.mark.slow
@pytest.mark.parametrize("flags", [[], ["--tree"]], ids=["guardian", "tree"])
def test_script_killed_during_the_clis_start_up_leaves_nothing(
    marker: str, flags: list[str]
) -> None:
    """The CLI is Python and takes tens of ms to reach its leash: a script SIGKILLed
    0-200 ms after `leashed run ... &` must not leave COMMAND running (100 trials)."""
    rng = random.Random(1234)
    body = f'"$PY" -m leashed run {" ".join(flags)} -- sleep 300 & wait'
    for batch in range(10):
        scripts = [Script(body, marker) for _ in range(10)]
        try:
            delays = sorted((rng.uniform(0.0, 0.2), s) for s in scripts)
            started = time.monotonic()
            for delay, script in delays:
                time.sleep(max(0.0, started + delay - time.monotonic()))
                script.kill()
        finally:
            for script in scripts:
                script.close()
        # The CLI needs its start-up to notice; a tied command then goes within the reap time.
        left = wait_until_gone(marker, 20.0)
        assert left == [], (batch, [_describe(pid) for pid in left])


def test_the_death_signal_can_be_chosen(marker: str, tmp_path: Path) -> None:
    out = tmp_path / "got"
    script = Script(
        f"""
        "$PY" -m leashed run --signal term -- sh -c \\
            'trap "echo TERM > {out}; exit 0" TERM; echo ready; while :; do sleep 0.05; done' &
        wait
        """,
        marker,
    )
    try:
        assert script.read_line() == "ready"
        script.kill()
        assert wait_until_gone(marker, 2.0) == []
        assert out.read_text() == "TERM\n"
    finally:
        script.close()


@pytest.mark.parametrize("options", [[], ["--tree"]], ids=["guardian", "tree"])
def test_pid_ties_the_command_to_any_process(marker: str, options: list[str]) -> None:
    anchor = subprocess.Popen(["sleep", "300"], env=_env(marker))
    command = subprocess.Popen(
        [*LEASHED, "run", "--pid", str(anchor.pid), *options, "--", "sleep", "300"],
        env=_env(marker),
    )
    try:
        # anchor, command, and its guardian, or its supervisor and supervised sleep
        expected = 4 if options else 3
        assert len(wait_for_count(marker, expected)) == expected
        time.sleep(0.2)
        assert command.poll() is None
        anchor.kill()
        anchor.wait()
        returncode = command.wait(timeout=5)
        assert returncode == (-signal.SIGKILL if not options else 1)
        assert wait_until_gone(marker, 2.0) == []
    finally:
        for proc in (anchor, command):
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def test_pid_that_does_not_exist(marker: str) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    result = cli(marker, "run", "--pid", str(gone.pid), "--", "sleep", "300")
    assert result.returncode == 1
    assert f"--pid {gone.pid}: no such process" in result.stderr


# -- leashed run: passing through ------------------------------------------------------------

MODES = [[], ["--tree"], ["--grace", "1"]]
MODE_IDS = ["direct", "tree", "grace"]


@pytest.mark.parametrize("options", MODES, ids=MODE_IDS)
def test_exit_status_and_stdio_pass_through(marker: str, options: list[str]) -> None:
    result = cli(
        marker,
        "run",
        *options,
        "--",
        "sh",
        "-c",
        'read x; echo "got $x"; echo oops >&2; exit 3',
        input="hello\n",
    )
    assert (result.returncode, result.stdout, result.stderr) == (3, "got hello\n", "oops\n")


@pytest.mark.parametrize("options", MODES, ids=MODE_IDS)
def test_killed_by_a_signal_passes_through(marker: str, options: list[str]) -> None:
    result = cli(marker, "run", *options, "--", "sh", "-c", "kill -TERM $$")
    assert result.returncode == -signal.SIGTERM
    shell = subprocess.run(
        [
            "bash",
            "-c",
            f'"$PY" -m leashed run {" ".join(options)} -- sh -c "kill -TERM \\$\\$"; '
            'echo "status $?"',
        ],
        env={**_env(marker), "PY": sys.executable},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.stdout.splitlines()[-1] == "status 143"


def test_direct_mode_becomes_the_command(marker: str) -> None:
    proc = subprocess.Popen(
        [*LEASHED, "run", "--", "sh", "-c", "echo $$"], env=_env(marker), stdout=subprocess.PIPE
    )
    out, _ = proc.communicate(timeout=60)
    assert int(out) == proc.pid


@pytest.mark.parametrize("options", MODES, ids=MODE_IDS)
def test_signals_sent_to_leashed_reach_the_command(marker: str, options: list[str]) -> None:
    proc = subprocess.Popen(
        [
            *LEASHED,
            "run",
            *options,
            "--",
            "sh",
            "-c",
            'trap "exit 7" TERM; echo ready; while :; do sleep 0.05; done',
        ],
        env=_env(marker),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 7
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# -- leashed run: like a shell when COMMAND cannot run ----------------------------------------


def test_command_not_found(marker: str) -> None:
    result = cli(marker, "run", "--", "leashed-no-such-command-xyz", "arg")
    assert result.returncode == 127
    assert result.stderr == "leashed: leashed-no-such-command-xyz: command not found\n"


def test_missing_path(marker: str, tmp_path: Path) -> None:
    result = cli(marker, "run", "--tree", "--", str(tmp_path / "nope"))
    assert result.returncode == 127
    assert result.stderr == f"leashed: {tmp_path / 'nope'}: No such file or directory\n"


def test_not_executable(marker: str, tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    if os.access(script, os.X_OK):
        pytest.skip("running as a user who may execute anything")
    result = cli(marker, "run", "--", str(script))
    assert result.returncode == 126
    assert result.stderr == f"leashed: {script}: Permission denied\n"
    assert cli(marker, "run", "--", str(tmp_path)).returncode == 126


def test_not_executable_in_path(marker: str, tmp_path: Path) -> None:
    (tmp_path / "tool").write_text("#!/bin/sh\n")
    (tmp_path / "tool").chmod(0o644)
    env = {**_env(marker), "PATH": f"{tmp_path}:/usr/bin:/bin"}
    result = subprocess.run(
        [*LEASHED, "run", "--", "tool"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 126
    assert result.stderr == "leashed: tool: Permission denied\n"


def test_path_search_uses_path(marker: str, tmp_path: Path) -> None:
    tool = tmp_path / "leashed-test-tool"
    tool.write_text('#!/bin/sh\necho "tool $0 $*"\n')
    tool.chmod(0o755)
    env = {**_env(marker), "PATH": f"{tmp_path}:/usr/bin:/bin"}
    for options in MODES:
        result = subprocess.run(
            [*LEASHED, "run", *options, "--", "leashed-test-tool", "a b"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (result.returncode, result.stdout) == (0, f"tool {tool} a b\n")


# -- leashed run: usage ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["run", "--bogus", "--", "true"], "--bogus"),
        (["run"], "COMMAND"),
        (["run", "--tree", "--"], "COMMAND"),
        (["run", "--signal", "NOPE", "--", "true"], "--signal"),
        (["run", "--signal", "STOP", "--", "true"], "--signal"),
        (["run", "--signal", "0", "--", "true"], "--signal"),
        (["run", "--signal", "99", "--", "true"], "--signal"),
        (["run", "--grace", "-1", "--", "true"], "--grace"),
        (["run", "--grace", "nan", "--", "true"], "--grace"),
        (["run", "--grace", "inf", "--", "true"], "--grace"),
        (["run", "--grace", "soon", "--", "true"], "--grace"),
        (["run", "--pid", "0", "--", "true"], "--pid"),
        (["run", "--pid", "me", "--", "true"], "--pid"),
        (["frobnicate"], "frobnicate"),
        ([], "required"),
    ],
)
def test_bad_usage_exits_2_with_usage(marker: str, args: list[str], names: str) -> None:
    result = cli(marker, *args)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: leashed")
    assert names in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("text", ["TERM", "SIGTERM", "term", "sigterm", "15"])
def test_signal_names_and_numbers(text: str) -> None:
    cmd = helper_command_line(["x"], "/bin/x", death_signal=_parse_signal(text), parent=1)
    assert cmd[cmd.index("-s") + 1] == "15"


def _parse_signal(text: str) -> int:
    from leashed._cli import signal_arg

    return signal_arg(text)


def test_helper_command_lines() -> None:
    """Which helper mode and options each combination of flags gives (the parent is 4242)."""

    def line(**options: object) -> list[str]:
        cmd = helper_command_line(["cmd", "arg"], "/bin/cmd", parent=4242, **options)  # type: ignore[arg-type]
        assert cmd[0] == leashed._helper.helper_path()
        assert cmd[cmd.index("--") :] == ["--", "/bin/cmd", "cmd", "arg"]
        return cmd[1 : cmd.index("--")]

    assert line() == ["guardian", "-p", "4242", "-s", "9", "-w", "4242"]
    assert line(death_signal=15) == ["guardian", "-p", "4242", "-s", "15", "-w", "4242"]
    assert line(tree=True) == ["supervisor", "-p", "4242", "-s", "9", "-w", "4242", "-t"]
    assert line(grace=2.5) == ["supervisor", "-p", "4242", "-s", "15", "-g", "2500", "-w", "4242"]
    assert line(pid=77) == ["guardian", "-s", "9", "-w", "77"]
    assert line(pid=77, tree=True) == ["supervisor", "-s", "9", "-w", "77", "-t"]
    assert line(pid=77, grace=0) == ["supervisor", "-s", "9", "-g", "0", "-w", "77"]


# -- version, help, doctor -------------------------------------------------------------------


def test_version(marker: str) -> None:
    result = cli(marker, "--version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"leashed {leashed.__version__}, leashed-helper ")


def test_help_has_examples(marker: str) -> None:
    for args in (["--help"], ["run", "--help"]):
        result = cli(marker, *args)
        assert result.returncode == 0
        assert "examples:" in result.stdout and "leashed run --tree" in result.stdout


def test_doctor_proves_every_scenario(marker: str) -> None:
    started = time.monotonic()
    result = cli(marker, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 20
    lines = result.stdout.splitlines()
    for name in ("direct", "tree", "grace", "guardian"):
        assert any(line.startswith(name + " ") for line in lines), (name, result.stdout)
    assert lines[-1].startswith("OK: nothing survived")
    assert wait_until_gone(marker, 1.0) == []


def test_doctor_json(marker: str) -> None:
    result = cli(marker, "doctor", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    modes = {m["name"]: m for m in report["scenarios"]}
    assert set(modes) == {"direct", "tree", "grace", "guardian"}
    assert {m["mechanism"] for m in modes.values()} == set(leashed.capabilities()["mechanisms"])
    for name, mode in modes.items():
        if not mode["available"]:
            continue
        assert mode["survivors"] == 0 and mode["error"] is None, mode
        assert mode["processes_started"] == mode["processes_expected"] >= 3, mode
        assert mode["time_to_reap_ms"] is not None
        if name == "grace":  # the TERM-ignoring sleep needed the SIGKILL after the grace
            assert mode["time_to_reap_ms"] >= report["grace_s"] * 1000 * 0.9
