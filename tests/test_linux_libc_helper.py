"""The portable helper build (system C library) keeps the same promises as the default."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Parent, new_marker, wait_until_gone

from leashed._helper import HELPER_ENV

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def libc_helper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    build = tmp_path_factory.mktemp("libc-build")
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    for cmd in (
        [sys.executable, "-m", "mesonbuild.mesonmain", "setup", str(build), str(ROOT),
         "-Dhelper_libc=system", "-Dbuildtype=release"],
        ["ninja", "-C", str(build), "leashed-helper"],
    ):  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    yield str(build / "leashed-helper")


def test_it_says_which_build_it_is(libc_helper: str) -> None:
    out = subprocess.run([libc_helper, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "libc"


@pytest.mark.parametrize("mechanism", ["direct", "tree", "guardian"])
def test_children_die_with_the_parent(libc_helper: str, mechanism: str) -> None:
    env = {**os.environ, HELPER_ENV: libc_helper}
    parent = Parent(
        f"import parents; parents.from_exited_thread({mechanism!r})", new_marker(), env=env
    )
    try:
        _pid, state = parent.read_line().split()
        assert state == "alive"
        parent.kill()
        assert wait_until_gone(parent.marker, 1.0) == []
    finally:
        parent.finish()


def test_exec_errors_match_subprocess(libc_helper: str, tmp_path: Path) -> None:
    code = (
        "import leashed, subprocess, sys\n"
        "for args in (['leashed-no-such-program'], [sys.argv[1]]):\n"
        "    for api in (subprocess, leashed):\n"
        "        try:\n"
        "            api.Popen(args)\n"
        "        except OSError as e:\n"
        "            print(type(e).__name__, e.errno, e.filename)\n"
    )
    env = {**os.environ, HELPER_ENV: libc_helper}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True
    ).stdout.splitlines()
    assert len(out) == 4 and out[0] == out[1] and out[2] == out[3], out
