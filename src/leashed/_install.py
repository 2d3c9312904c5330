"""leashed.install(): every child this process starts, by any Python API, leashed to it.

The mechanism is chosen here, once, in order (one function each):

1. ``_cgroup_mechanism``: this process moves into a leash cgroup that a watcher kills
   when the process dies; nothing is patched (every descendant is born in the cgroup).
2. ``_job_mechanism`` (Windows): this process joins a kill-on-close job object; every
   descendant is in it, nothing is patched.
3. ``_patch_mechanism`` (POSIX elsewhere): the spawn points go through leashed's
   per-child mechanisms: ``subprocess.Popen._execute_child`` (on the class itself),
   ``os.posix_spawn``/``posix_spawnp``, ``os.system``, ``os.spawn*`` (``os._spawnvef``),
   ``multiprocessing.util.spawnv_passfds`` (spawn and forkserver start methods), and an
   at-fork hook that leashes forked Python children (``os.fork``, multiprocessing's fork
   method, ``pty.fork``) to their parent.

Nothing is patched at import time. ``uninstall()`` restores every attribute it replaced
(the very objects, by identity).
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ._plan import LeashOptions
from ._platform import IS_WINDOWS
from ._platform import capabilities as _backend_capabilities

#: The job mechanism's module (Windows only: never imported elsewhere).
_windows: Any = None
if sys.platform == "win32":
    from . import _windows as _windows_module

    _windows = _windows_module
#: The patch mechanism's module (POSIX only; Windows needs no patch).
_install_posix: Any = None
if sys.platform != "win32":
    from . import _install_posix as _posix_patches

    _install_posix = _posix_patches

__all__ = ["capabilities", "install", "installed", "uninstall"]

#: The environment variable read at interpreter start-up (see ``_autoinstall``).
INSTALL_ENV = "LEASHED_INSTALL"


#: install()'s options are the one leash options type; only the default of ``tree`` differs.
INSTALL_DEFAULTS = LeashOptions(tree=True)


def differences(mine: LeashOptions, active: LeashOptions) -> list[str]:
    """``name=mine (active: theirs)`` for every option that differs."""
    return [
        f"{f.name}={getattr(mine, f.name)!r} (active: {getattr(active, f.name)!r})"
        for f in dataclasses.fields(mine)
        if getattr(mine, f.name) != getattr(active, f.name)
    ]


def validated_options(**given: object) -> LeashOptions:
    """The options, or the TypeError/ValueError leashed.Popen raises for the same values."""
    options = LeashOptions.validated(**given)
    if IS_WINDOWS:
        _windows.check_leash_options(options.tree, options.grace, options.death_signal)
        if options.keep_leftovers:
            raise ValueError(
                "keep_leftovers is not available on Windows: closing the job object ends "
                "every process in it"
            )
    return options


class _Active:
    """What install() did: its options, the mechanism, and how to undo it. (A plain
    class: a dataclass compiles its methods at import, in every LEASHED_INSTALL start.)"""

    __slots__ = ("mechanism", "options", "undo")

    def __init__(self, options: LeashOptions, mechanism: str, undo: Callable[[], None]):
        self.options = options
        self.mechanism = mechanism
        self.undo = undo


_lock = threading.Lock()
_active: _Active | None = None


def install(
    *,
    tree: bool = True,
    grace: float | None = None,
    death_signal: int | None = None,
    keep_leftovers: bool = False,
) -> str:
    """Leash every child process this process starts from now on, by any API, any thread.

    ``tree`` (default True): every descendant of those children ends too, not only the
    child. ``grace``, ``death_signal`` and ``keep_leftovers`` mean what they mean for
    ``leashed.Popen``. Returns the mechanism in use: ``"cgroup"``, ``"job"`` (Windows) or
    ``"patch"`` (the spawn points go through leashed's per-child mechanisms).

    Idempotent: calling it again with the same options does nothing. Calling it with
    other options raises ValueError naming the difference (``uninstall()`` first to
    change them). Safe with threads running: each spawn point is replaced by one
    attribute assignment, and a spawn already under way finishes the way it started.
    """
    options = validated_options(
        tree=tree, grace=grace, death_signal=death_signal, keep_leftovers=keep_leftovers
    )
    global _active
    with _lock:
        if _active is not None:
            if _active.options == options:
                return _active.mechanism
            raise ValueError(
                "leashed.install() is already active with other options: "
                + ", ".join(differences(options, _active.options))
                + "; call leashed.uninstall() first to change them"
            )
        for mechanism in (_cgroup_mechanism, _job_mechanism, _patch_mechanism):
            active = mechanism(options)
            if active is not None:
                _active = active
                return active.mechanism
    raise RuntimeError(f"leashed.install() has no mechanism on {sys.platform}")


def uninstall() -> None:
    """Undo install(): every replaced attribute is restored (the same objects). Children
    already started keep their leash. A no-op when install() is not active."""
    global _active
    with _lock:
        active, _active = _active, None
        if active is not None:
            active.undo()


def installed() -> LeashOptions | None:
    """The options of the active install(), or None."""
    active = _active
    return None if active is None else active.options


def active_mechanism() -> str | None:
    """The mechanism of the active install(), or None."""
    active = _active
    return None if active is None else active.mechanism


# -- 1. the cgroup mechanism (Linux, a writable cgroup v2 hierarchy) ------------------------


def _cgroup_mechanism(options: LeashOptions) -> _Active | None:
    """This process in a leash cgroup that a watcher kills when it dies: not built yet.

    Returns None (not available) until the cgroup tree mechanism lands; then it is the
    first choice wherever it says it is available.
    """
    return None


# -- 2. the job mechanism (Windows) ---------------------------------------------------------


def _job_mechanism(options: LeashOptions) -> _Active | None:
    """This process joins a kill-on-close job: every descendant is in it, for free.

    A process may already be in a job (a CI runner's, a terminal's): jobs nest from
    Windows 8 on. The job is the same process-wide job leashed.Popen's children go into.
    uninstall() cannot take the process out of a job: it clears the kill-on-close limit
    instead, so nothing started before or after ends with this process any more.
    """
    if not IS_WINDOWS:
        return None
    job = _windows._get_backend().job.job_for_child()
    api = _windows.get_api()
    if not job.shared:
        job.close()  # empty: closing it ends nothing
        raise OSError("leashed.install(): the process-wide job object could not be created")
    if not api.AssignProcessToJobObject(job.handle, api.GetCurrentProcess()):
        code = api.GetLastError()
        raise _windows._win_error(code, "AssignProcessToJobObject(this process) failed")

    def undo() -> None:
        info = _windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION()  # every limit cleared
        api.SetInformationJobObject(
            job.handle, _windows.JobObjectExtendedLimitInformation, bytes(info)
        )
        process_job = _windows._get_backend().job
        with process_job._lock:  # later leashed.Popen children: a new kill-on-close job
            process_job._shared = None
            process_job.status = "not created yet"
        api.CloseHandle(job.handle)  # no limit left: closing it ends nothing

    return _Active(options, "job", undo)


# -- 3. the patch mechanism (POSIX) ---------------------------------------------------------


class _Patches:
    """Attribute replacements, each remembered with the exact object it replaced."""

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []

    def replace(self, owner: Any, name: str, value: Any) -> None:
        self._saved.append((owner, name, vars(owner)[name]))
        setattr(owner, name, value)

    def restore(self) -> None:
        while self._saved:
            owner, name, original = self._saved.pop()
            setattr(owner, name, original)


def _patch_mechanism(options: LeashOptions) -> _Active | None:
    """Every spawn point through leashed's per-child mechanisms (see the module's doc)."""
    if _install_posix is None:
        return None
    spawn_plan, popen_plan = _install_posix.plans(options)
    patches = _Patches()
    try:
        _install_posix.apply(patches, popen_plan, spawn_plan)
    except BaseException:
        patches.restore()
        raise
    _install_posix.arm_fork_hook()

    def undo() -> None:
        _install_posix.disarm_fork_hook()
        patches.restore()

    return _Active(options, "patch", undo)


# -- what capabilities() says ---------------------------------------------------------------


def capabilities() -> dict[str, Any]:
    """leashed.capabilities(): the backend's report, per mechanism (available, how,
    whole_tree, race_free, notes; the helper; ``default``: what a plain
    ``leashed.Popen(...)`` uses), and ``install``: what install() covers here, API by API.
    Never a silent downgrade: what this machine cannot honour says so."""
    report = dict(_backend_capabilities())
    report["install"] = install_capabilities()
    return report


def install_capabilities() -> dict[str, Any]:
    """What install() covers on this machine, API by API, and what is active."""
    if _install_posix is None:
        every = {
            "covered": True,
            "how": "this process is in a kill-on-close job: every descendant is in it",
            "whole_tree": True,
        }
        apis = {name: dict(every) for name in _API_NAMES}
        return {"mechanism": "job", "active": active_mechanism(), "apis": apis, "env": INSTALL_ENV}
    options = installed() or INSTALL_DEFAULTS
    return {
        "mechanism": "patch",
        "active": active_mechanism(),
        "apis": _install_posix.api_coverage(options.tree),
        "env": INSTALL_ENV,
    }


_API_NAMES: Sequence[str] = (
    "subprocess",
    "os.posix_spawn",
    "os.system",
    "os.spawn",
    "os.fork",
    "multiprocessing.fork",
    "multiprocessing.spawn",
    "multiprocessing.forkserver",
    "concurrent.futures.ProcessPoolExecutor",
)
