"""The kill storm at CI size: a parent SIGKILLed at random instants leaves no survivor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

STORM = Path(__file__).resolve().parent.parent / "stress" / "kill_storm.py"


def test_kill_storm_leaves_no_survivor() -> None:
    result = subprocess.run(
        [sys.executable, str(STORM), "--trials", "50", "--mode", "all"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "survivors" in result.stdout


def test_group_kill_storm_leaves_no_survivor() -> None:
    """kill -9 of the parent's whole process group at a random instant of a tree storm."""
    result = subprocess.run(
        [sys.executable, str(STORM), "--trials", "50", "--mode", "tree", "--kill-group"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "whole process group" in result.stdout and "TOTAL SURVIVORS: 0" in result.stdout


def test_harness_sees_survivors_of_unleashed_children() -> None:
    """The harness itself can fail: plain subprocess children do survive their parent."""
    result = subprocess.run(
        [sys.executable, str(STORM), "--trials", "2", "--mode", "unleashed"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
