"""The POSIX backend's part of leashed.capabilities(): what this machine guarantees,
per mechanism, said plainly (the Windows backend's report is in ``_windows``)."""

from __future__ import annotations

import sys
from typing import Any

from . import _helper, _inproc_spawn, _spawner
from ._linux import has_pidfd
from ._system import IS_DARWIN, IS_FREEBSD, IS_LINUX, default_mechanism, tree_mechanism

#: The note every supervisor with a subreaper gives.
_KEEPS_LEFTOVERS = (
    "keep_leftovers=True: a tree's leftovers outlive the target until the parent dies"
)

# Each statement below is checked against the running code by tests/test_linux_adversity3.py.
#: The in-process path without the helper: a call with a preexec_fn has no fast way.
HELPER_MISSING_PREEXEC = "leashed-helper missing: a preexec_fn call falls back to fork() + prctl"
#: Direct children of other threads (their fork runs on a spawner thread) at the parent's exec.
EXEC_ENDS_SPAWNER_CHILDREN = (
    "the parent's execve() ends the direct children forked by spawner threads (their "
    "PR_SET_PDEATHSIG follows the forking thread, and exec ends every other thread); those "
    "of the main thread are kept"
)
#: Supervisor and guardian with a pidfd on the parent: the lifeline is not the only watch.
PIDFD_KEEPS = (
    "the parent is watched through a pidfd: closing every fd (os.closerange) or execve() "
    "in a live parent ends nothing"
)
LIFELINE_ONLY = (
    "no pidfd_open on this kernel: the lifeline is the only watch, so closing every fd or "
    "execve() in the parent ends these children"
)
#: What an unprivileged caller can do to a target that switched its real uid.
OUT_OF_REACH = (
    "a target that switches its real uid (su, sudo) cannot be signalled by an unprivileged "
    "caller: kill() raises PermissionError at once, wait() waits for its real exit, and it "
    "outlives the parent"
)


def posix_capabilities() -> dict[str, Any]:
    """The POSIX backend's report: the helper, and its mechanisms on this system."""
    path = _helper.helper_path()
    helper = _helper.helper_report(path)
    direct_path = _inproc_spawn.direct_path() if IS_LINUX else _inproc_spawn.HELPER
    if IS_LINUX:
        mechanisms = _linux_mechanisms(bool(path), has_pidfd(), direct_path)
    else:
        mechanisms = _kqueue_mechanisms(bool(path))
    in_process = direct_path == _inproc_spawn.IN_PROCESS
    if helper["error"] is not None:  # there, but not leashed-helper: only in-process works
        for name, entry in mechanisms.items():
            if not (in_process and name == "direct"):
                entry["available"] = False
            entry["notes"].append(helper["error"])
    default = default_mechanism() if path or in_process or not IS_LINUX else "preexec_fn"
    return {
        "platform": sys.platform,
        "helper": helper,
        "direct_path": direct_path if path or in_process else None,
        "default": default,
        "tree_default": tree_mechanism(),
        "mechanisms": mechanisms,
    }


def _linux_mechanisms(helper: bool, pidfd: bool, direct_path: str) -> dict[str, dict[str, Any]]:
    if direct_path == _inproc_spawn.IN_PROCESS:
        direct = _entry(
            "in-process: vfork, prctl(PR_SET_PDEATHSIG) + ppid recheck in the child, then "
            "execve in place (forks of other threads run on long-lived native spawner "
            "threads, more of them while one waits for a child slow to exec; a preexec_fn "
            "call goes through leashed-helper direct)",
            whole_tree=False,
            notes=[EXEC_ENDS_SPAWNER_CHILDREN] + ([] if helper else [HELPER_MISSING_PREEXEC]),
        )
    elif helper:
        direct = _entry(
            "leashed-helper direct: prctl(PR_SET_PDEATHSIG) + ppid recheck, then execve in "
            f"place (forks of other threads run on {_spawner.SPAWNER_THREADS} long-lived "
            "threads)",
            whole_tree=False,
            notes=[EXEC_ENDS_SPAWNER_CHILDREN],
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
            _KEEPS_LEFTOVERS,
            "descendants are signalled via pidfd after a start-time check"
            if pidfd
            else "no pidfd_open on this kernel: descendants are signalled by pid after a "
            "start-time check (a tiny pid-reuse window)",
            PIDFD_KEEPS if pidfd else LIFELINE_ONLY,
            OUT_OF_REACH,
        ],
    )
    guardian = _entry(
        "leashed-helper guardian: a detached guardian on the lifeline pipe, armed before "
        "the target runs; watches the target with a pidfd",
        whole_tree=False,
        available=helper and pidfd,
        notes=[PIDFD_KEEPS],
    )
    mechanisms = {"direct": direct, "supervisor": supervisor, "guardian": guardian}
    if sys.platform == "linux":
        mechanisms["cgroup"] = _cgroup_entry(helper and pidfd)
    return mechanisms


if sys.platform == "linux":
    from . import _cgroup

    def _cgroup_entry(helper: bool) -> dict[str, Any]:
        """The cgroup mechanism: where its cgroups would go, or why it is not available."""
        where = _cgroup.site()
        entry = _entry(
            "the target joins a cgroup v2 of its own before it runs (leashed-helper direct -J); "
            "one detached watcher per process: death signal, grace, then cgroup.kill",
            whole_tree=True,
            available=helper and isinstance(where, _cgroup.Site),
            notes=[
                "whole tree with tree=True: membership is inherited and cannot be left without "
                "write access to another cgroup (a privileged descendant can leave)",
                "proc.pid is the target's own pid; kill() is cgroup.kill of its cgroup",
                "a SIGKILLed watcher is replaced at once by a thread of this process (and checked "
                "before every spawn); a parent death in that gap of milliseconds leaves the "
                "tree running",
            ],
        )
        if isinstance(where, _cgroup.Site):
            entry["cgroup"] = where.path
        else:
            entry["cgroup"] = None
            entry["notes"].insert(0, f"not available: {where}")
        if not helper:
            entry["notes"].insert(0, "not available: leashed-helper (with pidfd_open) is needed")
        return entry


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
    if IS_FREEBSD:
        supervisor = _entry(
            "leashed-helper supervisor: PROC_REAP_ACQUIRE reaper, PROC_REAP_KILL of every "
            "descendant; target in its own process group for signal relays",
            whole_tree=False,
            available=helper,
            notes=[
                "not yet verified on a FreeBSD machine",
                _GROUP_NOTES[1],
                _KEEPS_LEFTOVERS,
            ],
        )
    else:
        notes = [*_GROUP_NOTES, "keep_leftovers is not available: no subreaper"]
        if not IS_DARWIN:
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
