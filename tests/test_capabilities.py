"""capabilities(): an honest report per mechanism, here and for the other platforms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import leashed
from leashed import _capabilities, _windows
from leashed._system import cgroup_available

ENTRY_KEYS = {"available", "how", "whole_tree", "race_free", "notes"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux report")
def test_linux_report_names_every_mechanism_and_the_helper() -> None:
    caps = leashed.capabilities()
    assert caps["platform"] == sys.platform
    assert caps["helper"]["build"] in ("nolibc", "libc")
    assert caps["helper"]["version"] == leashed.__version__
    assert caps["default"] == "direct"
    mechanisms = caps["mechanisms"]
    assert set(mechanisms) == {"direct", "supervisor", "guardian", "cgroup"}
    assert caps["tree_default"] in ("cgroup", "supervisor")
    assert mechanisms["cgroup"]["whole_tree"] is True
    for name, entry in mechanisms.items():
        if name == "cgroup":  # where its cgroups go (None where it is not available)
            assert set(entry) == ENTRY_KEYS | {"cgroup"}
            assert entry["available"] is cgroup_available()
            continue
        assert entry["available"] is True
        assert set(entry) == ENTRY_KEYS
    assert mechanisms["supervisor"]["whole_tree"] is True
    assert mechanisms["direct"]["whole_tree"] is False
    assert "PR_SET_PDEATHSIG" in mechanisms["direct"]["how"]
    assert "SUBREAPER" in mechanisms["supervisor"]["how"]


@pytest.mark.parametrize("platform", ["darwin", "freebsd14", "netbsd10"])
def test_other_posix_platforms_say_what_escapes(
    platform: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_capabilities, "IS_LINUX", False)
    monkeypatch.setattr(_capabilities, "IS_FREEBSD", platform.startswith("freebsd"))
    monkeypatch.setattr(_capabilities, "IS_DARWIN", platform == "darwin")
    monkeypatch.setattr(sys, "platform", platform)
    caps = _capabilities.posix_capabilities()
    supervisor = caps["mechanisms"]["supervisor"]
    assert supervisor["whole_tree"] is False
    assert any("SIGTTIN" in note for note in supervisor["notes"])
    if platform == "freebsd14":
        assert "PROC_REAP_KILL" in supervisor["how"]
    else:
        assert any("setsid()" in note for note in supervisor["notes"])
    assert "kqueue" in caps["mechanisms"]["guardian"]["how"]
    assert "direct" not in caps["mechanisms"]
    if platform == "netbsd10":
        assert any("grace period always runs in full" in n for n in supervisor["notes"])


def test_windows_report_is_the_job() -> None:
    caps = _windows.capabilities()  # the Windows backend's report, run over no API
    assert caps["helper"] is None
    assert caps["default"] == "job"
    assert caps["mechanisms"]["job"]["whole_tree"] is True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux report")
def test_linux_report_says_which_path_the_direct_mechanism_takes() -> None:
    """in-process where the extension is built; the helper under the development override
    (which the doctor prints too)."""
    import os
    import subprocess

    from leashed import _helper, _inproc_spawn

    code = "import leashed; print(leashed.capabilities()['direct_path'])"
    env = {k: v for k, v in os.environ.items() if k != _helper.HELPER_ENV}
    plain = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert plain.stdout.strip() == ("in-process" if _inproc_spawn.built() else "helper")
    helper = _helper.helper_path()
    assert helper is not None
    forced = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, _helper.HELPER_ENV: helper},
        capture_output=True,
        text=True,
    )
    assert forced.stdout.strip() == "helper"
    if _inproc_spawn.direct_path() == _inproc_spawn.IN_PROCESS:
        assert leashed.capabilities()["mechanisms"]["direct"]["how"].startswith("in-process")


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(sys.platform == "win32", reason="the POSIX helper")
@pytest.mark.parametrize("printed", ["hello", "leashed-helper 1.0", ""])
def test_an_unusable_helper_is_reported_clearly(tmp_path: Path, printed: str) -> None:
    fake = tmp_path / "fake-helper"
    fake.write_text(f"#!/bin/sh\necho '{printed}'\n")
    fake.chmod(0o755)
    report = _python(
        "import json, leashed; print(json.dumps(leashed.capabilities()))",
        LEASHED_HELPER=str(fake),
    )
    assert report.returncode == 0, report.stderr
    helper = json.loads(report.stdout)["helper"]
    assert helper["path"] == str(fake)
    assert helper["version"] is None
    assert "is not a usable leashed-helper" in helper["error"]
    assert repr((printed + "\n").encode()) in helper["error"]  # what it printed, said
    mechanisms = json.loads(report.stdout)["mechanisms"]
    assert not any(entry["available"] for entry in mechanisms.values())
    doctor = subprocess.run(
        [sys.executable, "-m", "leashed", "doctor"],
        env={**os.environ, "LEASHED_HELPER": str(fake)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert doctor.returncode == 1
    assert "Traceback" not in doctor.stderr
    assert "is not a usable leashed-helper" in doctor.stderr + doctor.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux backend")
def test_linux_imports_no_windows_module() -> None:
    code = (
        "import sys, leashed, leashed.asyncio\n"
        "leashed.capabilities()\n"
        "print(sorted(m for m in sys.modules if 'windows' in m.lower()))"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
