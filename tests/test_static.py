"""The code type-checks for every platform it targets, and lints clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "src" / "leashed"


@pytest.mark.parametrize("platform", ["linux", "darwin", "win32"])
def test_mypy_strict(platform: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--platform", platform,
         "--python-version", "3.10", "--no-incremental", str(SOURCES)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    for args in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [ruff, *args, "src", "tests", "benchmarks", "stress"],
            capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
