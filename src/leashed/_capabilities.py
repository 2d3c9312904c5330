"""leashed.capabilities(): what this machine guarantees, per mode, said plainly."""

from __future__ import annotations

import os
import sys
from typing import Any

from . import _helper
from ._options import IS_LINUX, IS_WINDOWS


def _linux_kernel_has_pidfd() -> bool:
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    return True


def capabilities() -> dict[str, Any]:
    """Per mode: mechanism, available, whole_tree, race_free, and notes; plus the helper.

    Never a silent downgrade: a mode that this machine cannot honour says so here.
    """
    if IS_WINDOWS:
        from ._windows import windows_capabilities

        return {"platform": sys.platform, "helper": None, **windows_capabilities()}
    path = _helper.helper_path()
    version = _helper.helper_version() if path else None
    helper = {
        "path": path,
        "version": version[0] if version else None,
        "build": version[1] if version else None,
    }
    modes: dict[str, dict[str, Any]] = {}
    pidfd = IS_LINUX and _linux_kernel_has_pidfd()
    if IS_LINUX:
        if path:
            modes["direct"] = _mode(
                "leashed-helper exec: prctl(PR_SET_PDEATHSIG) + ppid recheck, then execve "
                "(forks from one long-lived thread)",
                whole_tree=False,
                race_free=True,
            )
        else:
            modes["direct"] = _mode(
                "FALLBACK preexec_fn: prctl(PR_SET_PDEATHSIG) + ppid recheck "
                "(leashed-helper missing: fork() instead of vfork(), slower)",
                whole_tree=False,
                race_free=True,
                notes=["leashed-helper was not found; reinstall leashed for the fast path"],
            )
        tree_mechanism = "leashed-helper supervise: PR_SET_CHILD_SUBREAPER + lifeline pipe"
        tree_notes = [
            "descendants are signalled via pidfd after a start-time check"
            if pidfd
            else "no pidfd_open on this kernel: descendants are signalled by pid after a "
            "start-time check (a tiny pid-reuse window)"
        ]
        modes["tree"] = _mode(
            tree_mechanism, whole_tree=True, race_free=True, available=bool(path), notes=tree_notes
        )
        guardian_notes = ["guardian armed before the target runs; watches it with a pidfd"]
    else:
        modes["direct"] = _mode(
            "leashed-helper guard: a detached guardian armed on kqueue (EVFILT_PROC) and the "
            "lifeline before the target runs",
            whole_tree=False,
            race_free=True,
            available=bool(path),
        )
        modes["tree"] = _non_linux_tree_mode(bool(path))
        guardian_notes = ["watches the target with kqueue EVFILT_PROC/NOTE_EXIT"]
    modes["grace"] = _mode(
        "leashed-helper supervise: death signal, grace period, then SIGKILL",
        whole_tree=modes["tree"]["whole_tree"],
        race_free=True,
        available=bool(path),
    )
    modes["guardian"] = _mode(
        "leashed-helper guard: detached guardian on the lifeline pipe",
        whole_tree=False,
        race_free=True,
        available=bool(path) and (pidfd or not IS_LINUX),
        notes=guardian_notes,
    )
    return {"platform": sys.platform, "helper": helper, "modes": modes}


_GROUP_NOTES = [
    "a descendant that leaves the group (setsid(), daemons) escapes",
    "the target is a background job: reading the terminal stops it (SIGTTIN); give it "
    "stdin other than the terminal",
    "if the supervisor itself is SIGKILLed, the group is not ended",
    "not executed by this project's CI: compiled for this platform, logic tested on Linux",
]


def _non_linux_tree_mode(available: bool) -> dict[str, Any]:
    """Tree mode on macOS and the BSDs, where there is no Linux subreaper."""
    if sys.platform.startswith("freebsd"):
        return _mode(
            "leashed-helper supervise: PROC_REAP_ACQUIRE reaper, PROC_REAP_KILL of every "
            "descendant; target in its own process group for signal relays",
            whole_tree=False,
            race_free=True,
            available=available,
            notes=["not yet verified on a FreeBSD machine", _GROUP_NOTES[1]],
        )
    notes = list(_GROUP_NOTES)
    if sys.platform != "darwin":
        notes.append(
            "this kernel counts a zombie group leader as a member: the grace period "
            "always runs in full"
        )
    return _mode(
        "leashed-helper supervise: target in its own process group; terminal signals "
        "relayed to the group; the group ended on parent death",
        whole_tree=False,
        race_free=True,
        available=available,
        notes=notes,
    )


def _mode(
    mechanism: str,
    *,
    whole_tree: bool,
    race_free: bool,
    available: bool = True,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "available": available,
        "mechanism": mechanism,
        "whole_tree": whole_tree,
        "race_free": race_free,
        "notes": notes or [],
    }
