"""capabilities(): an honest report per mode, on this machine and for the other platforms."""

from __future__ import annotations

import sys

import pytest

import leashed
from leashed import _capabilities


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux report")
def test_linux_report_names_every_mode_and_the_helper() -> None:
    caps = leashed.capabilities()
    assert caps["platform"] == sys.platform
    assert caps["helper"]["build"] in ("nolibc", "libc")
    assert caps["helper"]["version"] == leashed.__version__
    for mode in ("direct", "tree", "grace", "guardian"):
        entry = caps["modes"][mode]
        assert entry["available"] is True
        assert set(entry) == {"available", "mechanism", "whole_tree", "race_free", "notes"}
    assert caps["modes"]["tree"]["whole_tree"] is True
    assert caps["modes"]["direct"]["whole_tree"] is False
    assert "PR_SET_PDEATHSIG" in caps["modes"]["direct"]["mechanism"]
    assert "SUBREAPER" in caps["modes"]["tree"]["mechanism"]


@pytest.mark.parametrize("platform", ["darwin", "freebsd14", "netbsd10"])
def test_other_posix_platforms_say_what_escapes(
    platform: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_capabilities, "IS_LINUX", False)
    monkeypatch.setattr(_capabilities, "IS_WINDOWS", False)
    monkeypatch.setattr(sys, "platform", platform)
    caps = _capabilities.capabilities()
    tree = caps["modes"]["tree"]
    assert tree["whole_tree"] is False
    assert any("SIGTTIN" in note for note in tree["notes"])
    if platform == "freebsd14":
        assert "PROC_REAP_KILL" in tree["mechanism"]
    else:
        assert any("setsid()" in note for note in tree["notes"])
    assert "kqueue" in caps["modes"]["direct"]["mechanism"]
    if platform == "netbsd10":
        assert any("grace period always runs in full" in n for n in tree["notes"])
