"""send_signal on a supervised child answers as os.kill on a plain child, and a liveness
probe never ends anything."""

from __future__ import annotations

import signal
import subprocess
from typing import Any

import pytest
from support import wait_for_named

import leashed

BAD_SIGNALS = [-1, 65, 1000, 2**31, -(2**31) - 1, 2**63]


def _outcome(proc: subprocess.Popen[Any], sig: int) -> Any:
    try:
        proc.send_signal(sig)
    except BaseException as exc:
        return type(exc), getattr(exc, "errno", None)
    return "sent"


@pytest.mark.parametrize("options", [{"tree": True}, {"grace": 5.0}], ids=["tree", "grace"])
def test_probe_and_bad_signals_as_os_kill(options: dict[str, Any], case_marker: str) -> None:
    plain = subprocess.Popen(["sleep", "300"])
    tree = leashed.Popen(["sh", "-c", "sleep 300 & exec sleep 300"], **options)
    try:
        assert len(wait_for_named(case_marker, "sleep", 3)) == 3
        for sig in [0, *BAD_SIGNALS]:
            assert _outcome(tree, sig) == _outcome(plain, sig), sig
        # the probe ended nothing: both sleeps of the tree and the plain one still run
        assert tree.poll() is None
        assert len(wait_for_named(case_marker, "sleep", 3, timeout=0.5)) == 3
    finally:
        plain.kill()
        plain.wait()
        tree.kill()
        tree.wait()


def test_signals_after_exit_are_ignored_as_subprocess_does() -> None:
    proc = leashed.Popen(["true"], tree=True)
    proc.wait()
    for sig in (0, signal.SIGTERM, signal.SIGKILL):
        proc.send_signal(sig)  # no error, as subprocess.Popen after wait()
