"""Session-wide guard: the run fails if any process the suite started is still alive."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import CASE_VAR, SUITE_VAR, kill_marked, new_marker, pids_with

if not sys.platform.startswith("linux"):
    collect_ignore_glob = ["test_linux_*.py"]

os.environ.setdefault(SUITE_VAR, new_marker())

# A runner started in the background of a shell without job control has SIGINT ignored
# (POSIX), and every process of the suite would inherit that; the tests send SIGINT (and
# type Ctrl+C) on purpose. A handler, unlike SIG_IGN, is not inherited across exec.
if sys.platform != "win32" and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture()
def case_marker(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A marker every process this test starts inherits; what still carries it at the end
    is killed by pid (after the marker is re-read)."""
    value = new_marker()
    monkeypatch.setenv(CASE_VAR, value)
    yield value
    kill_marked(CASE_VAR, value)


@pytest.fixture()
def marker(case_marker: str) -> str:
    """``case_marker`` by its short name (one fixture, two names)."""
    return case_marker


@pytest.fixture(scope="session", autouse=True)
def no_survivors_at_end() -> Iterator[None]:
    yield
    if not sys.platform.startswith("linux"):
        # Markers are read from /proc/PID/environ. On Windows the real-process tests count
        # their survivors themselves (tests/test_windows_real.py), and the Wine CI looks
        # for leftovers of the whole run from the Linux side (.ci/wine).
        return
    marker = os.environ[SUITE_VAR]
    left = pids_with(SUITE_VAR, marker)
    if left:
        descriptions = []
        for pid in left:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                cmd = b"?"
            descriptions.append(f"{pid}: {cmd.decode(errors='replace')[:120]}")
        kill_marked(SUITE_VAR, marker)
        pytest.fail("processes started by the suite are still alive:\n" + "\n".join(descriptions))
