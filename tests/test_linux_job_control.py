"""`leashed run` in an interactive shell on a real terminal: Ctrl+Z shows the job stopped,
`fg` resumes it, Ctrl+C ends it, in every mode, as with the bare command."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import CASE_VAR, kill_marked, marked_env, new_marker, wait_until_gone

import leashed

MODES = [[], ["--tree"], ["--grace", "2"], ["--tree", "--grace", "2"]]


class Terminal:
    """An interactive bash on a pty, as a person at a terminal would have it."""

    def __init__(self, marker: str) -> None:
        src = Path(leashed.__file__).resolve().parent.parent
        env = marked_env(marker, src, PS1="PROMPT> ", TERM="dumb")
        self.master, slave = os.openpty()
        self.shell = subprocess.Popen(
            ["bash", "--norc", "--noprofile", "-i"],
            stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
            preexec_fn=lambda: __import__("fcntl").ioctl(0, __import__("termios").TIOCSCTTY, 0),
        )  # fmt: skip
        os.close(slave)
        self.seen = ""
        self.expect("PROMPT> ")

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, pattern: str, timeout: float = 15.0) -> str:
        """Read until ``pattern`` (a regex) appears after what was matched before."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.seen)
            if found:
                self.seen = self.seen[found.end() :]
                return found.group(0)
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} on the terminal; it shows: {self.seen[-400:]!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.master, 4096).decode(errors="replace")
                except OSError:
                    pass

    def close(self) -> None:
        if self.shell.poll() is None:
            self.shell.kill()
        self.shell.wait()
        os.close(self.master)


@pytest.fixture()
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[Terminal]:
    marker = new_marker()
    term = Terminal(marker)
    try:
        yield term
    finally:
        term.close()
        kill_marked(CASE_VAR, marker)
        assert wait_until_gone(marker, 2.0) == []


@pytest.mark.parametrize("flags", MODES, ids=lambda f: " ".join(f) or "default")
def test_ctrl_z_fg_and_ctrl_c_behave_as_with_the_bare_command(
    terminal: Terminal, flags: list[str]
) -> None:
    target = f"{sys.executable} -c \"import time; print('up', flush=True); time.sleep(300)\""
    terminal.type(f"{sys.executable} -m leashed run {' '.join(flags)} -- {target}\n")
    terminal.expect(r"\nup\r?\n")  # the target's own line, not the echoed command
    terminal.type("\x1a")  # Ctrl+Z
    terminal.expect(r"Stopped")
    terminal.expect("PROMPT> ")
    terminal.type("fg\n")
    terminal.expect(r"leashed run")  # bash echoes the job it resumes
    time.sleep(0.3)
    terminal.type("\x03")  # Ctrl+C
    terminal.expect("PROMPT> ")
    terminal.type("echo status=$?\n")
    assert terminal.expect(r"status=\d+") == "status=130"
    terminal.type("jobs; echo jobs-done\n")
    terminal.expect("jobs-done")
    assert "Stopped" not in terminal.seen and "Running" not in terminal.seen
