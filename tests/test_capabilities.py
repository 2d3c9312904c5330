"""capabilities(): an honest report per mechanism, here and for the other platforms."""

from __future__ import annotations

import sys

import pytest

import leashed
from leashed import _capabilities

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
            assert entry["available"] is (caps["tree_default"] == "cgroup")
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
    monkeypatch.setattr(_capabilities, "IS_WINDOWS", False)
    monkeypatch.setattr(sys, "platform", platform)
    caps = _capabilities.capabilities()
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


def test_windows_report_is_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_capabilities, "IS_WINDOWS", True)
    caps = _capabilities.capabilities()
    assert caps["helper"] is None
    assert caps["default"] == "job"
    assert caps["mechanisms"]["job"]["whole_tree"] is True
