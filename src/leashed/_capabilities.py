"""leashed.capabilities(): what this machine guarantees, per mechanism, said plainly."""

from __future__ import annotations

import sys
from typing import Any

from . import _helper, _inproc_spawn, _windows
from ._linux import has_pidfd
from ._platform import IS_LINUX, IS_WINDOWS, default_mechanism


def capabilities() -> dict[str, Any]:
    """Per mechanism: available, how, whole_tree, race_free and notes; plus the helper.

    ``default`` names what a plain ``leashed.Popen(...)`` uses; ``tree=True`` and
    ``grace`` use the supervisor. Never a silent downgrade: a mechanism this machine
    cannot honour says so here.
    """
    if IS_WINDOWS:
        job = _windows.windows_capabilities()
        return {
            "platform": sys.platform,
            "helper": None,
            "default": "job",
            "mechanisms": {"job": job},
        }
    path = _helper.helper_path()
    version = _helper.helper_version() if path else None
    helper = {
        "path": path,
        "version": version[0] if version else None,
        "build": version[1] if version else None,
    }
    direct_path = _inproc_spawn.direct_path() if IS_LINUX else _inproc_spawn.HELPER
    if IS_LINUX:
        mechanisms = _linux_mechanisms(bool(path), has_pidfd(), direct_path)
    else:
        mechanisms = _kqueue_mechanisms(bool(path))
    in_process = direct_path == _inproc_spawn.IN_PROCESS
    default = default_mechanism() if path or in_process or not IS_LINUX else "preexec_fn"
    return {
        "platform": sys.platform,
        "helper": helper,
        "direct_path": direct_path if path or in_process else None,
        "default": default,
        "mechanisms": mechanisms,
    }


def _linux_mechanisms(helper: bool, pidfd: bool, direct_path: str) -> dict[str, dict[str, Any]]:
    if direct_path == _inproc_spawn.IN_PROCESS:
        direct = _entry(
            "in-process: vfork, prctl(PR_SET_PDEATHSIG) + ppid recheck in the child, then "
            "execve in place (forks of other threads run on long-lived spawner threads; "
            "a preexec_fn call goes through leashed-helper direct)",
            whole_tree=False,
            notes=[]
            if helper
            else ["leashed-helper missing: a preexec_fn call falls back to fork() + prctl"],
        )
    elif helper:
        direct = _entry(
            "leashed-helper direct: prctl(PR_SET_PDEATHSIG) + ppid recheck, then execve in "
            "place (forks of other threads run on one long-lived thread)",
            whole_tree=False,
        )
    else:
        direct = _entry(
            "FALLBACK preexec_fn: prctl(PR_SET_PDEATHSIG) + ppid recheck "
            "(leashed-helper missing: fork() instead of vfork(), slower)",
            whole_tree=False,
            notes=["leashed-helper was not found; reinstall leashed for the fast path"],
        )
    supervisor = _entry(
        "leashed-helper supervisor: PR_SET_CHILD_SUBREAPER + lifeline pipe, behind a front "
        "process (proc.pid); death signal, grace, then SIGKILL",
        whole_tree=True,
        available=helper,
        notes=[
            "whole tree with tree=True (setsid'd and double-forked descendants included); "
            "without tree only the target is ended",
            "a SIGKILL of proc.pid (the front) or of its process group ends the tree as the "
            "parent's death does",
            "keep_leftovers=True: a tree's leftovers outlive the target until the parent dies",
            "descendants are signalled via pidfd after a start-time check"
            if pidfd
            else "no pidfd_open on this kernel: descendants are signalled by pid after a "
            "start-time check (a tiny pid-reuse window)",
        ],
    )
    guardian = _entry(
        "leashed-helper guardian: a detached guardian on the lifeline pipe, armed before "
        "the target runs; watches the target with a pidfd",
        whole_tree=False,
        available=helper and pidfd,
    )
    return {"direct": direct, "supervisor": supervisor, "guardian": guardian}


_GROUP_NOTES = [
    "a descendant that leaves the group (setsid(), daemons) escapes",
    "the target is a background job: reading the terminal stops it (SIGTTIN); give it "
    "stdin other than the terminal",
    "a SIGKILL of proc.pid (the front) ends the group; one of the supervisor behind it "
    "(whose pid nobody is given) does not",
    "not executed by this project's CI: compiled for this platform, logic tested on Linux",
]


def _kqueue_mechanisms(helper: bool) -> dict[str, dict[str, Any]]:
    """macOS and the BSDs: no parent-death signal, no Linux subreaper."""
    guardian = _entry(
        "leashed-helper guardian: a detached guardian armed on kqueue (EVFILT_PROC) and the "
        "lifeline before the target runs",
        whole_tree=False,
        available=helper,
    )
    if sys.platform.startswith("freebsd"):
        supervisor = _entry(
            "leashed-helper supervisor: PROC_REAP_ACQUIRE reaper, PROC_REAP_KILL of every "
            "descendant; target in its own process group for signal relays",
            whole_tree=False,
            available=helper,
            notes=[
                "not yet verified on a FreeBSD machine",
                _GROUP_NOTES[1],
                "keep_leftovers=True: a tree's leftovers outlive the target until the parent dies",
            ],
        )
    else:
        notes = [*_GROUP_NOTES, "keep_leftovers is not available: no subreaper"]
        if sys.platform != "darwin":
            notes.append(
                "this kernel counts a zombie group leader as a member: the grace period "
                "always runs in full"
            )
        supervisor = _entry(
            "leashed-helper supervisor: target in its own process group; terminal signals "
            "relayed to the group; the group ended on parent death",
            whole_tree=False,
            available=helper,
            notes=notes,
        )
    return {"supervisor": supervisor, "guardian": guardian}


def _entry(
    how: str,
    *,
    whole_tree: bool,
    race_free: bool = True,
    available: bool = True,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "available": available,
        "how": how,
        "whole_tree": whole_tree,
        "race_free": race_free,
        "notes": notes or [],
    }
