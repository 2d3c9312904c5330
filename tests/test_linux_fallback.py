"""Without the helper, leashed falls back to preexec_fn + prctl and says so, loudly."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Iterator

import pytest
from support import Parent, alive, new_marker, wait_until_gone

import leashed
from leashed import _helper, _inproc_spawn


@pytest.fixture()
def no_helper(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Neither the helper nor the in-process extension: the preexec_fn fallback."""
    monkeypatch.delenv(_helper.HELPER_ENV, raising=False)
    monkeypatch.setattr(_helper, "_packaged_path", lambda: None)
    monkeypatch.setattr(_inproc_spawn, "_inproc", None)
    _helper.helper_path.cache_clear()
    _helper.helper_version.cache_clear()
    yield
    monkeypatch.undo()
    _helper.helper_path.cache_clear()
    _helper.helper_version.cache_clear()


def test_fallback_warns_and_reports(no_helper: None) -> None:
    with pytest.warns(_helper.HelperMissingWarning, match="preexec_fn"):
        proc = leashed.Popen(["true"])
    assert proc.wait() == 0
    assert proc.mechanism == "preexec_fn"
    caps = leashed.capabilities()
    assert caps["helper"]["path"] is None
    assert caps["default"] == "preexec_fn"
    assert caps["mechanisms"]["direct"]["how"].startswith("FALLBACK")
    assert not caps["mechanisms"]["supervisor"]["available"]


def test_fallback_refuses_modes_it_cannot_do(no_helper: None) -> None:
    for options in ({"tree": True}, {"grace": 1.0}, {"mechanism": "guardian"}):
        with pytest.raises(RuntimeError, match="leashed-helper"):
            leashed.Popen(["true"], **options)  # type: ignore[arg-type]


def test_fallback_still_leashes_and_runs_user_preexec_fn(no_helper: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _helper.HelperMissingWarning)
        out = leashed.check_output(
            ["sh", "-c", "echo $LEASHED_PRE"],
            preexec_fn=lambda: __import__("os").environ.__setitem__("LEASHED_PRE", "ran"),
        )
    assert out == b"ran\n"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", _helper.HelperMissingWarning)
        with pytest.raises(FileNotFoundError):
            leashed.Popen(["leashed-no-such-program"])


def test_fallback_child_dies_with_parent() -> None:
    marker = new_marker()
    import os

    env = {k: v for k, v in os.environ.items() if k != _helper.HELPER_ENV}
    parent = Parent(
        "import warnings; warnings.simplefilter('ignore');"
        "import leashed._helper as h; h._packaged_path = lambda: None;"
        "import parents; parents.from_exited_thread('direct')",
        marker,
        env=env,
    )
    try:
        pid, state = parent.read_line().split()
        assert state == "alive" and alive(int(pid))
        parent.kill()
        assert wait_until_gone(marker, 1.0) == []
    finally:
        parent.finish()


def test_no_helper_with_the_extension_spawns_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The helper missing but the extension built: the direct mechanism needs no fallback."""
    if not _inproc_spawn.built():
        pytest.skip("leashed._inproc is not built here")
    monkeypatch.delenv(_helper.HELPER_ENV, raising=False)
    monkeypatch.setattr(_helper, "_packaged_path", lambda: None)
    _helper.helper_path.cache_clear()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", _helper.HelperMissingWarning)
            proc = leashed.Popen(["true"])
        assert proc.wait() == 0
        assert proc.mechanism == "direct"
        assert leashed.capabilities()["direct_path"] == "in-process"
    finally:
        monkeypatch.undo()
        _helper.helper_path.cache_clear()


def test_fallback_with_subprocess_patched_to_leashed(no_helper: None) -> None:
    """``subprocess.Popen = leashed.Popen`` (the drop-in use) with the helper missing: the
    fallback's first spawn must not spawn again to find libc (it once recursed forever)."""
    code = (
        "import subprocess, warnings, leashed\n"
        "from leashed import _helper\n"
        "_helper._packaged_path = lambda: None\n"
        "leashed._inproc_spawn._inproc = None  # no extension either\n"
        "subprocess.Popen = leashed.Popen\n"
        "warnings.simplefilter('ignore', _helper.HelperMissingWarning)\n"
        "print(leashed.Popen(['true']).wait(), leashed.Popen(['true']).mechanism)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != _helper.HELPER_ENV}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["0", "preexec_fn"]
